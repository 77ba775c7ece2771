#!/bin/sh
# Run the test binary against a real PostgreSQL (see withpg.sh).
# TEST_PREFIX (e.g. "valgrind --error-exitcode=99") wraps each test run.
here=$(dirname "$0")
bin=$1; shift
exec sh "$here/withpg.sh" $TEST_PREFIX "$bin" "$@"

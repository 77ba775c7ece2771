#!/bin/sh
# `make bench`: run every benchmark against the PostgreSQL that withpg.sh
# provides; write build/bench/report.md and build/bench/results.tsv.
set -eu
b=$1
out="$b/bench"
mkdir -p "$out"
: > "$out/results.tsv"
export SETCACHE_BENCH_TSV="$out/results.tsv"
{
    echo "# setcache benchmarks"
    echo
    echo "run: $(date -u +%Y-%m-%dT%H:%M:%SZ), command: make bench"
    echo
    for p in "$b"/bench/*; do
        [ -f "$p" ] && [ -x "$p" ] || continue
        case "$(basename "$p")" in demo|*.*) continue ;; esac
        "$p"
        echo
    done
} | tee "$out/report.md"
echo "report: $out/report.md, data: $out/results.tsv"

# setcache - GNU Makefile. Honours CC CFLAGS CPPFLAGS LDFLAGS PREFIX DESTDIR.
#   make            build libsetcache.a, libsetcache.so, setcache.pc, the tool
#   make check      run the test suite against a real PostgreSQL
#   make check SANITIZE=address,undefined | SANITIZE=thread
#   make demo       the side-by-side demo on a private PostgreSQL
#                   (DEMO_ARGS=--tables: served from the platform's own tables)
#   make demo-fleet a primary and two logical-replication subscribers, processes on each
#   make bench      benchmarks (never part of check)
#   make bench-series  the benchmarks BENCH_RUNS times (default 5): median, range
#   make install / uninstall, format, lint, clean

PREFIX ?= /usr/local
DESTDIR ?=
CC ?= cc
CFLAGS ?= -O2 -g
SANITIZE ?=
TEST_PREFIX ?=
WERROR ?=

VERSION := $(shell sed -n 's/^\#define SETCACHE_VERSION_STRING "\(.*\)"/\1/p' include/setcache.h)
MAJOR := $(firstword $(subst ., ,$(VERSION)))

PQ_CFLAGS := $(shell pkg-config --cflags libpq 2>/dev/null || echo -I$$(pg_config --includedir 2>/dev/null))
PQ_LIBS := $(shell pkg-config --libs libpq 2>/dev/null || echo -lpq)

WARN := -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 $(if $(WERROR),-Werror)
REQUIRED := -std=c11 -pthread -fPIC -fvisibility=hidden -D_POSIX_C_SOURCE=200809L
SAN :=
ifneq ($(SANITIZE),)
SAN := -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
endif
ALL_CFLAGS = $(REQUIRED) $(WARN) $(SAN) -Iinclude $(PQ_CFLAGS) $(CPPFLAGS) $(CFLAGS)
ALL_LDFLAGS = -pthread $(SAN) $(LDFLAGS)

comma := ,
B := build
ifneq ($(SANITIZE),)
B := build/san-$(subst $(comma),-,$(SANITIZE))
endif

LIB_SRCS := src/util.c src/error.c src/hash.c src/stats.c src/brlock.c src/value.c src/ident.c src/schema.c src/pool.c src/defs.c src/fence.c \
            src/etable.c src/cache.c src/load.c src/write.c src/listen.c src/refresh.c src/dispatch.c \
            src/tables.c src/replica.c src/read.c src/handle.c src/cell.c src/ref.c src/snap.c
LIB_OBJS := $(patsubst src/%.c,$(B)/obj/%.o,$(LIB_SRCS))
HDRS := include/setcache.h src/internal.h src/hash.h src/tool.h

STATIC := $(B)/libsetcache.a
# the test suite links a build with the fault-injection hooks compiled in
TEST_OBJS := $(patsubst src/%.c,$(B)/testobj/%.o,$(LIB_SRCS))
TEST_STATIC := $(B)/libsetcache-test.a
SHARED := $(B)/libsetcache.so.$(VERSION)
SONAME := libsetcache.so.$(MAJOR)
TOOL := $(B)/setcache
PC := $(B)/setcache.pc

TEST_SRCS := $(wildcard tests/test_*.c)
TEST_BIN := $(B)/tests/setcache-tests
UNIT_SRCS := $(wildcard tests/unit/unit_*.c)
UNIT_BIN := $(B)/tests/setcache-unit

.PHONY: all unit check soak demo demo-fleet bench bench-series install uninstall format lint clean deps fuzz
all: $(STATIC) $(B)/libsetcache.so $(TOOL) $(PC) $(B)/example $(B)/example_subscribe

# plain `make` on a machine without the headers: the exact apt-get line
$(B)/.build-deps:
	@BUILD_ONLY=1 sh tests/deps.sh
	@mkdir -p $(B) && touch $@

$(B)/obj/%.o: src/%.c $(HDRS) Makefile | $(B)/.build-deps
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(STATIC): $(LIB_OBJS)
	rm -f $@
	$(AR) rcs $@ $^

$(B)/testobj/%.o: src/%.c $(HDRS) Makefile | $(B)/.build-deps
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -DSETCACHE_TEST_HOOKS -c $< -o $@

$(TEST_STATIC): $(TEST_OBJS)
	rm -f $@
	$(AR) rcs $@ $^

$(SHARED): $(LIB_OBJS) src/setcache.map
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=src/setcache.map -o $@ $(LIB_OBJS) $(ALL_LDFLAGS) $(PQ_LIBS)

$(B)/libsetcache.so: $(SHARED)
	ln -sf libsetcache.so.$(VERSION) $(B)/$(SONAME)
	ln -sf $(SONAME) $@

$(B)/cli.o: src/cli.c $(HDRS) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Isrc -c src/cli.c -o $@

$(B)/cli_admin.o: src/cli_admin.c src/cli.h $(HDRS) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Isrc -c $< -o $@

$(TOOL): $(B)/cli.o $(B)/cli_admin.o $(STATIC)
	$(CC) -o $@ $(B)/cli.o $(B)/cli_admin.o $(STATIC) $(ALL_LDFLAGS) $(PQ_LIBS)

# The README's example, compiled to prove it builds.
$(B)/example: tests/example.c $(STATIC) include/setcache.h
	$(CC) $(ALL_CFLAGS) -o $@ tests/example.c $(STATIC) $(ALL_LDFLAGS) $(PQ_LIBS)

$(B)/example_subscribe: tests/example_subscribe.c $(STATIC) include/setcache.h
	$(CC) $(ALL_CFLAGS) -o $@ tests/example_subscribe.c $(STATIC) $(ALL_LDFLAGS) $(PQ_LIBS)

$(PC): setcache.pc.in include/setcache.h
	@mkdir -p $(B)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' $< > $@

$(TEST_BIN): $(TEST_SRCS) tests/harness.c tests/harness.h $(HDRS) $(TEST_STATIC) $(B)/libsetcache.so $(TOOL)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Isrc -D_GNU_SOURCE -DSETCACHE_TEST_HOOKS -o $@ tests/harness.c $(TEST_SRCS) $(TEST_STATIC) $(ALL_LDFLAGS) $(PQ_LIBS)

# the fast tier: no database, no server (hash and entry tables, values,
# identities, payloads, definitions, the API's argument checks)
$(UNIT_BIN): $(UNIT_SRCS) tests/harness.c tests/harness.h $(HDRS) $(TEST_STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests -Isrc -D_GNU_SOURCE -DSETCACHE_TEST_HOOKS -o $@ tests/harness.c $(UNIT_SRCS) $(TEST_STATIC) $(ALL_LDFLAGS) $(PQ_LIBS)

deps:
	@sh tests/deps.sh

unit: $(UNIT_BIN)
	@env -u SETCACHE_TEST_CONNINFO $(TEST_PREFIX) $(UNIT_BIN) $(T)

check: deps
	@$(MAKE) --no-print-directory all $(TEST_BIN) $(UNIT_BIN)
	@env -u SETCACHE_TEST_CONNINFO $(TEST_PREFIX) $(UNIT_BIN) $(T)
	@SETCACHE_BUILD=$(B) TEST_PREFIX="$(TEST_PREFIX)" sh tests/run.sh $(TEST_BIN) $(T)

# everything at once for SOAK_SECONDS (default 600) on a private PostgreSQL
SOAK_SECONDS ?= 600
$(B)/tests/soak: tests/soak.c $(STATIC) include/setcache.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ tests/soak.c $(STATIC) $(ALL_LDFLAGS) $(PQ_LIBS)

soak: deps
	@$(MAKE) --no-print-directory all $(B)/tests/soak
	@# under ASan a small quarantine, so that memory can level off within a short run
	@ASAN_OPTIONS="$${ASAN_OPTIONS:-quarantine_size_mb=16}" SOAK_SECONDS=$(SOAK_SECONDS) \
	  sh tests/withpg.sh $(B)/tests/soak

demo: deps
	@$(MAKE) --no-print-directory all $(B)/bench/demo
	@SETCACHE_BUILD=$(B) sh tests/withpg.sh $(B)/bench/demo $(DEMO_ARGS)

# past one primary: a primary, 2 subscribers (logical replication), 4
# processes on each; a plain-SQL change seen by all; the primary's
# connections beside the direct topology's
demo-fleet: deps
	@$(MAKE) --no-print-directory all $(B)/bench/fleet
	@sh bench/fleet-topology.sh $(B) 2 $(B)/bench/fleet --demo

$(B)/bench/%: bench/%.c bench/workload.h bench/common.h $(STATIC) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Isrc -D_GNU_SOURCE -o $@ $< $(STATIC) $(ALL_LDFLAGS) $(PQ_LIBS) -lm

BENCH_PROGS := $(patsubst bench/%.c,$(B)/bench/%,$(filter-out bench/demo.c,$(wildcard bench/*.c)))
bench: deps
	@$(MAKE) --no-print-directory all $(BENCH_PROGS)
	@SETCACHE_BUILD=$(B) sh tests/withpg.sh sh bench/run.sh $(B)
	@# 128 processes direct vs over 4 subscribers, on clusters of its own
	@sh bench/fleet-topology.sh $(B) 4 $(B)/bench/fleet | tee -a $(B)/bench/report.md

# the whole suite BENCH_RUNS times, summarised as median and range
BENCH_RUNS ?= 5
bench-series: deps
	@$(MAKE) --no-print-directory all $(BENCH_PROGS)
	@SETCACHE_BUILD=$(B) sh tests/withpg.sh sh bench/series.sh $(B) $(BENCH_RUNS)

# libFuzzer on the payload parser (clang; FUZZ_SECONDS bounds the run)
FUZZ_SECONDS ?= 60
build/fuzz/fuzz_payload: tests/fuzz/fuzz_payload.c $(LIB_SRCS) $(HDRS)
	@mkdir -p $(dir $@)
	clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	  -D_POSIX_C_SOURCE=200809L -Iinclude -Isrc $(PQ_CFLAGS) -pthread -o $@ \
	  tests/fuzz/fuzz_payload.c $(LIB_SRCS) $(PQ_LIBS)

fuzz:
	@FUZZ=1 sh tests/deps.sh
	@$(MAKE) --no-print-directory build/fuzz/fuzz_payload
	@mkdir -p build/fuzz/corpus
	@printf '1\037U\0375\037expert\0373\037atr_period' > build/fuzz/corpus/seed-update
	@printf '1\037T\0370' > build/fuzz/corpus/seed-truncate
	@printf '1\037H\03742' > build/fuzz/corpus/seed-heartbeat
	build/fuzz/fuzz_payload -max_total_time=$(FUZZ_SECONDS) -max_len=9000 build/fuzz/corpus

install: all
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/bin
	install -m 644 include/setcache.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(STATIC) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(SHARED) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libsetcache.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/libsetcache.so
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' setcache.pc.in \
	  > $(DESTDIR)$(PREFIX)/lib/pkgconfig/setcache.pc
	install -m 755 $(TOOL) $(DESTDIR)$(PREFIX)/bin/
	install -d $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 644 man/setcache.1 $(DESTDIR)$(PREFIX)/share/man/man1/

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/include/setcache.h $(DESTDIR)$(PREFIX)/lib/libsetcache.a \
	      $(DESTDIR)$(PREFIX)/lib/libsetcache.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/$(SONAME) \
	      $(DESTDIR)$(PREFIX)/lib/libsetcache.so $(DESTDIR)$(PREFIX)/lib/pkgconfig/setcache.pc \
	      $(DESTDIR)$(PREFIX)/bin/setcache $(DESTDIR)$(PREFIX)/share/man/man1/setcache.1

format:
	clang-format -i src/*.c src/*.h include/*.h tests/*.c tests/*.h bench/*.c

lint: $(LIB_OBJS) $(B)/cli.o $(B)/cli_admin.o
	@LINT=1 sh tests/deps.sh
	@# layering: every file calls only files in lower layers (table in src/README.md)
	sh tools/layers.sh $(B)/obj
	sh tools/layers-selftest.sh
	@# the tool: the public API plus the entry points declared in src/tool.h
	@bad=$$(nm -u $(B)/cli.o $(B)/cli_admin.o | awk '$$2 ~ /^setcache__/ {print $$2}' | grep -vxF "$$(grep -o 'setcache__tool_[a-z_]*' src/tool.h)"); \
	  if [ -n "$$bad" ]; then echo "lint: the tool uses hidden $$bad (declare its entry points in src/tool.h)"; exit 1; fi
	@# uthash's iteration macros read as uninitialised variables to cppcheck
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
	  --inline-suppr --suppress=missingIncludeSystem --suppress=uninitvar --suppress=ctuuninitvar -Iinclude -Isrc src
	clang-tidy --quiet src/*.c -- $(REQUIRED) -Iinclude -Isrc $(PQ_CFLAGS)

clean:
	rm -rf build

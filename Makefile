# incsearchd: `make run` starts the demo, `make check` runs every test. Both install missing
# Debian packages first (as root), then build into build/.

# clang and libclang-rt-14-dev build the libFuzzer targets; python3-websockets is the
# independent client of the interoperability test. libhiredis-dev talks to Redis for the shared
# rate limit and cache; redis-server, nginx and openssl are run by the tests for several hosts
# and TLS.
PACKAGES = gcc make libc6-dev pkg-config libevent-dev libcurl4-openssl-dev libjson-c-dev \
	   libssl-dev check iso-codes clang libclang-rt-14-dev python3-websockets chromium faketime \
	   libsystemd-dev systemd mandoc libhiredis-dev redis-server nginx openssl

# The browser test drives this Chromium with playwright-core from tests/browser/node_modules.
CHROMIUM = /usr/bin/chromium

CC ?= cc
CFLAGS ?= -O2 -g
# SANITIZE=1 builds everything with AddressSanitizer and UndefinedBehaviorSanitizer, into
# build-sanitize/ so that it never mixes with the plain build.
ifeq ($(SANITIZE),1)
CFLAGS += -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
LDFLAGS += -fsanitize=address,undefined
B = build-sanitize
else
B = build
endif
CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
	  -Icommon -Idaemon -Iworker -Idemo-api -MMD -MP
PKG_LIBS = libevent libevent_openssl json-c libcrypto libssl libcurl libsystemd hiredis
PKG_CFLAGS = $(shell pkg-config --cflags $(PKG_LIBS) check 2>/dev/null)
CFLAGS += $(PKG_CFLAGS)

LIBEVENT = $(shell pkg-config --libs libevent)
JSONC = $(shell pkg-config --libs json-c)
CRYPTO = $(shell pkg-config --libs libcrypto)
CURL = $(shell pkg-config --libs libcurl)
CHECK = $(shell pkg-config --libs check)
SYSTEMD = $(shell pkg-config --libs libsystemd)
HIREDIS = $(shell pkg-config --libs hiredis)
TLS = $(shell pkg-config --libs libevent_openssl libssl)

PREFIX ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
SYSCONFDIR ?= /etc

COMMON = $(B)/common/log.o $(B)/common/conf.o $(B)/common/shm.o $(B)/common/slot.o \
	 $(B)/common/bucket.o $(B)/common/ipc.o $(B)/common/reply.o $(B)/common/histogram.o \
	 $(B)/common/utf8.o
DAEMON = $(B)/daemon/incsearchd.o $(B)/daemon/server.o $(B)/daemon/client.o \
	 $(B)/daemon/supervisor.o $(B)/daemon/ws.o $(B)/daemon/http.o $(B)/daemon/limit.o \
	 $(B)/daemon/shutdown.o $(B)/daemon/cache.o $(B)/daemon/query.o $(B)/daemon/page.o \
	 $(B)/daemon/stats.o $(B)/daemon/metrics.o $(B)/daemon/control.o $(B)/daemon/reload.o \
	 $(B)/daemon/notify.o $(B)/daemon/rcache.o $(B)/daemon/tls.o
CTL = $(B)/ctl/incsearchctl.o
WORKER = $(B)/worker/worker.o $(B)/worker/api.o $(B)/worker/rlimit.o
DEMOAPI = $(B)/demo-api/demoapi.o $(B)/demo-api/places.o
LOADGEN = $(B)/loadgen/main.o $(B)/loadgen/pool.o $(B)/loadgen/util.o $(B)/loadgen/responder.o \
	  $(B)/loadgen/startup.o $(B)/loadgen/hold.o $(B)/loadgen/ingest.o $(B)/loadgen/latency.o \
	  $(B)/loadgen/typing.o
TESTS = $(B)/tests/check_main.o $(B)/tests/check_conf.o $(B)/tests/check_bucket.o \
	$(B)/tests/check_slot.o $(B)/tests/check_ws.o $(B)/tests/check_api.o \
	$(B)/tests/check_places.o $(B)/tests/check_e2e.o $(B)/tests/check_sched.o \
	$(B)/tests/wsclient.o $(B)/tests/harness.o $(B)/tests/check_http.o \
	$(B)/tests/check_limit.o $(B)/tests/check_ws_protocol.o $(B)/tests/check_defence.o \
	$(B)/tests/check_query.o $(B)/tests/check_ops.o $(B)/tests/check_nginx.o \
	$(B)/tests/check_redis.o $(B)/tests/check_rcache.o $(B)/tests/check_tls.o

PROGRAMS = $(B)/incsearchd $(B)/incsearchd-worker $(B)/incsearchctl $(B)/incsearch-demo-api

.PHONY: all deps run check test browser-test fuzz fuzz-build bench bench-cache install \
	uninstall lint-man install-test clean format

all: $(PROGRAMS)

# Installs the packages that are missing; it does nothing when all are present. nginx and
# redis-server would start their system services on install, on ports 80 and 6379; the tests
# run their own on free loopback ports, so a policy-rc.d, where there is none, refuses every
# service start while apt-get runs.
POLICY_RC = /usr/sbin/policy-rc.d

deps:
	@missing=""; \
	for p in $(PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then \
			echo "missing Debian packages:$$missing; install them or run make as root" >&2; exit 1; \
		fi; \
		echo "installing:$$missing"; \
		policy=""; \
		if [ ! -e $(POLICY_RC) ]; then \
			printf '#!/bin/sh\nexit 101\n' > $(POLICY_RC) && chmod 755 $(POLICY_RC) && policy=1; \
		fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
		status=$$?; \
		if [ -n "$$policy" ]; then rm -f $(POLICY_RC); fi; \
		exit $$status; \
	fi

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(B)/daemon/page.o: daemon/page.S daemon/page/index.html daemon/page/incsearch.js
	@mkdir -p $(dir $@)
	$(CC) -c -o $@ daemon/page.S

$(B)/incsearchd: $(DAEMON) $(COMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBEVENT) $(TLS) $(JSONC) $(CRYPTO) $(SYSTEMD) $(HIREDIS)

$(B)/incsearchctl: $(CTL)
	$(CC) $(LDFLAGS) -o $@ $^ $(JSONC)

$(B)/incsearchd-worker: $(WORKER) $(COMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(CURL) $(JSONC) $(HIREDIS)

$(B)/incsearch-demo-api: $(DEMOAPI)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBEVENT) $(JSONC)

$(B)/check_incsearchd: $(TESTS) $(COMMON) $(B)/daemon/ws.o $(B)/daemon/http.o \
		$(B)/daemon/limit.o $(B)/daemon/query.o $(B)/worker/api.o $(B)/worker/rlimit.o \
		$(B)/demo-api/places.o
	$(CC) $(LDFLAGS) -o $@ $^ $(CHECK) $(CURL) $(JSONC) $(CRYPTO) $(TLS) $(HIREDIS)

# libFuzzer targets, always built with clang and both sanitizers into build/fuzz/. Each runs
# for FUZZ_SECONDS on a copy of its seed corpus in fuzz/corpus/, so the repo's seeds stay as
# committed; a crash leaves its input in build/fuzz/ and fails the run.
FUZZ_SECONDS ?= 30
FUZZ_CC = clang
FUZZ_CFLAGS = -g -O1 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Idaemon -Icommon \
	      -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZERS = build/fuzz/fuzz_http build/fuzz/fuzz_frame

build/fuzz/fuzz_http: fuzz/fuzz_http.c daemon/http.c daemon/ws.c common/utf8.c daemon/http.h \
		daemon/ws.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ fuzz/fuzz_http.c daemon/http.c daemon/ws.c common/utf8.c \
		$(CRYPTO)

build/fuzz/fuzz_frame: fuzz/fuzz_frame.c daemon/ws.c common/utf8.c daemon/ws.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ fuzz/fuzz_frame.c daemon/ws.c common/utf8.c $(CRYPTO)

fuzz-build: $(FUZZERS)

fuzz: $(FUZZERS)
	@set -e; for f in http frame; do \
		rm -rf build/fuzz/corpus-$$f; cp -r fuzz/corpus/$$f build/fuzz/corpus-$$f; \
		echo "fuzzing $$f for $(FUZZ_SECONDS) s"; \
		build/fuzz/fuzz_$$f -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=10 \
			-rss_limit_mb=1024 -print_final_stats=1 -artifact_prefix=build/fuzz/crash-$$f- \
			build/fuzz/corpus-$$f 2>build/fuzz/$$f.log || { tail -50 build/fuzz/$$f.log; exit 1; }; \
		grep -E '^(stat::number_of_executed_units|#[0-9]+.*DONE)' build/fuzz/$$f.log || true; \
	done

$(B)/incsearch-loadgen: $(LOADGEN)
	$(CC) $(LDFLAGS) -o $@ $^

# The demo: the bundled search API on 127.0.0.1:8081 and incsearchd in front of it.
run: deps
	@$(MAKE) --no-print-directory all
	@set -e; \
	$(B)/incsearch-demo-api -l 127.0.0.1:8081 -r 10 -b 10 & api=$$!; \
	trap 'kill $$api 2>/dev/null; wait $$api 2>/dev/null' EXIT INT TERM; \
	echo; echo "incsearchd demo: open http://127.0.0.1:8080/ (Ctrl-C stops it)"; echo; \
	$(B)/incsearchd -c etc/incsearchd.conf

# The whole check: the tests, mandoc's lint of the man pages, the install test (which also runs
# systemd-analyze verify), the fuzzers, the browser test, then the tests again under ASan and
# UBSan.
# With SANITIZE=1 it runs only the sanitized tests.
check: deps
ifeq ($(SANITIZE),1)
	@$(MAKE) --no-print-directory SANITIZE=1 test
else
	@$(MAKE) --no-print-directory test
	@$(MAKE) --no-print-directory lint-man
	@$(MAKE) --no-print-directory install-test
	@$(MAKE) --no-print-directory fuzz
	@$(MAKE) --no-print-directory browser-test
	@$(MAKE) --no-print-directory SANITIZE=1 test
endif

# The load generator is built here too, so that it keeps compiling; the benchmark is not run.
test: $(PROGRAMS) $(B)/check_incsearchd $(B)/incsearch-loadgen
	INCSEARCHD_BUILD=$(abspath $(B)) INCSEARCHD_TESTS=$(abspath tests) \
		ASAN_OPTIONS=detect_leaks=0 $(B)/check_incsearchd

# The demo page in headless Chromium; screenshots go to build/browser-test/. npm ci installs
# playwright-core at the version in package-lock.json and never downloads a browser.
browser-test: $(PROGRAMS)
	@if [ ! -x $(CHROMIUM) ]; then \
		echo "skipping the browser test: $(CHROMIUM) is not installed (Debian package chromium)"; \
	elif ! command -v npm >/dev/null; then \
		echo "npm not found: install Node.js 20 or later with npm to run the browser test" >&2; exit 1; \
	else \
		cd tests/browser && npm ci --no-audit --no-fund --loglevel=error && \
		INCSEARCHD_BUILD=$(abspath $(B)) CHROMIUM=$(CHROMIUM) node --test page.test.js; \
	fi

# Runs every scenario against instances it starts on loopback and writes BENCHMARKS.md, then
# the cache trace.
bench: deps
	@$(MAKE) --no-print-directory all $(B)/incsearch-loadgen $(B)/check_incsearchd
	loadgen/bench.sh $(B)
	@$(MAKE) --no-print-directory bench-cache

# Plays a recorded typing trace of 20 clients with and without the cache, then over two
# instances with and without the shared cache, and prints the API calls per reply; it takes
# about 20 seconds.
bench-cache: $(PROGRAMS) $(B)/check_incsearchd
	INCSEARCHD_BUILD=$(abspath $(B)) CK_RUN_SUITE=sched CK_RUN_CASE=trace $(B)/check_incsearchd
	INCSEARCHD_BUILD=$(abspath $(B)) CK_RUN_SUITE=rcache CK_RUN_CASE=trace $(B)/check_incsearchd

# PREFIX and DESTDIR as usual; the unit and the sysusers.d file go where systemd reads them
# whatever PREFIX is. The config is installed only when none is there, mode 0600 and, outside
# DESTDIR as root, owned by the incsearchd user that systemd-sysusers creates.
UNITDIR ?= /lib/systemd/system
SYSUSERSDIR ?= /usr/lib/sysusers.d
MANDIR ?= $(PREFIX)/share/man
DATADIR ?= $(PREFIX)/share/incsearchd
INSTALLED = $(SBINDIR)/incsearchd $(SBINDIR)/incsearchd-worker $(SBINDIR)/incsearchctl \
	    $(UNITDIR)/incsearchd.service $(SYSUSERSDIR)/incsearchd.conf \
	    $(MANDIR)/man8/incsearchd.8 $(MANDIR)/man8/incsearchctl.8 \
	    $(MANDIR)/man5/incsearchd.conf.5 $(DATADIR)/index.html $(DATADIR)/incsearch.js

install: all
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(SYSCONFDIR) $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(DATADIR)
	install -m 755 $(B)/incsearchd $(B)/incsearchd-worker $(B)/incsearchctl $(DESTDIR)$(SBINDIR)
	sed 's|@SBINDIR@|$(SBINDIR)|g; s|@SYSCONFDIR@|$(SYSCONFDIR)|g' systemd/incsearchd.service > \
		$(DESTDIR)$(UNITDIR)/incsearchd.service
	install -m 644 systemd/incsearchd.sysusers $(DESTDIR)$(SYSUSERSDIR)/incsearchd.conf
	install -m 644 man/incsearchd.8 man/incsearchctl.8 $(DESTDIR)$(MANDIR)/man8
	install -m 644 man/incsearchd.conf.5 $(DESTDIR)$(MANDIR)/man5
	install -m 644 daemon/page/index.html daemon/page/incsearch.js $(DESTDIR)$(DATADIR)
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v systemd-sysusers >/dev/null; then \
		systemd-sysusers $(SYSUSERSDIR)/incsearchd.conf; \
	fi
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/incsearchd.conf ]; then \
		echo "keeping the existing $(DESTDIR)$(SYSCONFDIR)/incsearchd.conf"; \
	else \
		install -m 600 etc/incsearchd.conf $(DESTDIR)$(SYSCONFDIR)/incsearchd.conf; \
		if [ -z "$(DESTDIR)" ] && id incsearchd >/dev/null 2>&1; then \
			chown incsearchd:incsearchd $(SYSCONFDIR)/incsearchd.conf; \
		fi; \
	fi

# Removes what install put there, and the config only while it is unchanged. The incsearchd
# user stays, as Debian packages leave theirs, since files may still belong to it.
uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))
	-rmdir $(DESTDIR)$(DATADIR) 2>/dev/null
	@if cmp -s etc/incsearchd.conf $(DESTDIR)$(SYSCONFDIR)/incsearchd.conf; then \
		rm -f $(DESTDIR)$(SYSCONFDIR)/incsearchd.conf; \
	elif [ -e $(DESTDIR)$(SYSCONFDIR)/incsearchd.conf ]; then \
		echo "keeping $(DESTDIR)$(SYSCONFDIR)/incsearchd.conf: it differs from the one installed"; \
	fi

# mandoc's lint of the three man pages; style messages count as failures too. It runs in man/
# so that mandoc finds the pages they refer to each other.
lint-man:
	cd man && mandoc -Tlint incsearchd.8 incsearchctl.8 incsearchd.conf.5

# Installs into a temporary DESTDIR, runs the installed daemon against the demo API, drives it
# with incsearchctl, and checks the installed unit with systemd-analyze verify. It runs Debian's
# /usr/bin/python3, since python3-websockets installs there. About 2 seconds.
install-test: all
	/usr/bin/python3 tests/install_test.py $(abspath $(B))

format:
	clang-format -i common/*.[ch] daemon/*.[ch] ctl/*.[ch] worker/*.[ch] demo-api/*.[ch] \
		tests/*.[ch] fuzz/*.c loadgen/*.[ch]

clean:
	rm -rf build build-sanitize

-include $(shell find $(B) -name '*.d' 2>/dev/null)

# incsearchd: `make run` starts the demo, `make check` runs every test. Both install missing
# Debian packages first (as root), then build into build/.

PACKAGES = gcc make libc6-dev pkg-config libevent-dev libcurl4-openssl-dev libjson-c-dev \
	   libssl-dev check iso-codes faketime

CC ?= cc
CFLAGS ?= -O2 -g
CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
	  -Icommon -Idaemon -Iworker -Idemo-api -MMD -MP
PKG_LIBS = libevent json-c libcrypto libcurl
PKG_CFLAGS = $(shell pkg-config --cflags $(PKG_LIBS) check 2>/dev/null)
CFLAGS += $(PKG_CFLAGS)

LIBEVENT = $(shell pkg-config --libs libevent)
JSONC = $(shell pkg-config --libs json-c)
CRYPTO = $(shell pkg-config --libs libcrypto)
CURL = $(shell pkg-config --libs libcurl)
CHECK = $(shell pkg-config --libs check)

B = build
PREFIX ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
SYSCONFDIR ?= /etc

COMMON = $(B)/common/log.o $(B)/common/conf.o $(B)/common/shm.o $(B)/common/slot.o \
	 $(B)/common/bucket.o $(B)/common/ipc.o $(B)/common/reply.o
DAEMON = $(B)/daemon/incsearchd.o $(B)/daemon/server.o $(B)/daemon/client.o \
	 $(B)/daemon/supervisor.o $(B)/daemon/ws.o $(B)/daemon/cache.o $(B)/daemon/page.o
WORKER = $(B)/worker/worker.o $(B)/worker/api.o
DEMOAPI = $(B)/demo-api/demoapi.o $(B)/demo-api/places.o
TESTS = $(B)/tests/check_main.o $(B)/tests/check_conf.o $(B)/tests/check_bucket.o \
	$(B)/tests/check_slot.o $(B)/tests/check_ws.o $(B)/tests/check_api.o \
	$(B)/tests/check_places.o $(B)/tests/check_e2e.o $(B)/tests/check_sched.o \
	$(B)/tests/wsclient.o \
	$(B)/tests/harness.o

PROGRAMS = $(B)/incsearchd $(B)/incsearchd-worker $(B)/incsearch-demo-api

.PHONY: all deps run check test bench install clean format

all: $(PROGRAMS)

# Installs the packages that are missing; it does nothing when all are present.
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
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(B)/daemon/page.o: daemon/page.S daemon/page/index.html daemon/page/incsearch.js
	@mkdir -p $(dir $@)
	$(CC) -c -o $@ daemon/page.S

$(B)/incsearchd: $(DAEMON) $(COMMON)
	$(CC) -o $@ $^ $(LIBEVENT) $(JSONC) $(CRYPTO)

$(B)/incsearchd-worker: $(WORKER) $(COMMON)
	$(CC) -o $@ $^ $(CURL) $(JSONC)

$(B)/incsearch-demo-api: $(DEMOAPI)
	$(CC) -o $@ $^ $(LIBEVENT) $(JSONC)

$(B)/check_incsearchd: $(TESTS) $(COMMON) $(B)/daemon/ws.o $(B)/worker/api.o \
		$(B)/demo-api/places.o
	$(CC) -o $@ $^ $(CHECK) $(CURL) $(JSONC) $(CRYPTO)

# The demo: the bundled search API on 127.0.0.1:8081 and incsearchd in front of it.
run: deps
	@$(MAKE) --no-print-directory all
	@set -e; \
	$(B)/incsearch-demo-api -l 127.0.0.1:8081 -r 10 -b 10 & api=$$!; \
	trap 'kill $$api 2>/dev/null; wait $$api 2>/dev/null' EXIT INT TERM; \
	echo; echo "incsearchd demo: open http://127.0.0.1:8080/ (Ctrl-C stops it)"; echo; \
	$(B)/incsearchd -c etc/incsearchd.conf

check: deps
	@$(MAKE) --no-print-directory test

test: $(PROGRAMS) $(B)/check_incsearchd
	INCSEARCHD_BUILD=$(abspath $(B)) $(B)/check_incsearchd

# Plays a recorded typing trace of 20 clients with and without the cache and prints the API
# calls per reply; it takes about 10 seconds.
bench: $(PROGRAMS) $(B)/check_incsearchd
	INCSEARCHD_BUILD=$(abspath $(B)) CK_RUN_SUITE=sched CK_RUN_CASE=trace $(B)/check_incsearchd

install: all
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(SYSCONFDIR) $(DESTDIR)/lib/systemd/system
	install -m 755 $(B)/incsearchd $(B)/incsearchd-worker $(DESTDIR)$(SBINDIR)
	test -e $(DESTDIR)$(SYSCONFDIR)/incsearchd.conf || \
		install -m 640 etc/incsearchd.conf $(DESTDIR)$(SYSCONFDIR)/incsearchd.conf
	sed 's|@SBINDIR@|$(SBINDIR)|g' systemd/incsearchd.service > \
		$(DESTDIR)/lib/systemd/system/incsearchd.service

format:
	clang-format -i common/*.[ch] daemon/*.[ch] worker/*.[ch] demo-api/*.[ch] tests/*.[ch]

clean:
	rm -rf $(B)

-include $(shell find $(B) -name '*.d' 2>/dev/null)

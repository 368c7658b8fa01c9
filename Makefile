# ploop-graphdriver — GPL-2.0-or-later
# `make run` serves the plugin, `make test` runs every test; both install what they need.

PKGS      := libmicrohttpd jansson ploop libarchive fuse3
CC        ?= gcc
CFLAGS    ?= -O2 -g
override CFLAGS += -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 \
             -DFUSE_USE_VERSION=35 -Idriver -Iplugin -fno-strict-aliasing \
             -MMD -MP -Wno-format-truncation
# Expanded when a recipe runs (after `make deps` in `make test`); pkgcheck stops the
# build first, naming what pkg-config cannot find.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS))
BUILD     ?= build
SOCKET    ?= /run/docker/plugins/ploop.sock

# The core, one folder per part (README "Architecture"):
# driver/ shared helpers, driver/store/, driver/engine/, driver/diff/.
DRIVER_SRC := $(wildcard driver/*.c driver/store/*.c driver/engine/*.c driver/diff/*.c)
PLUGIN_SRC := $(wildcard plugin/*.c)
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
PROTO_SRC  := $(wildcard tests/protocol/test_*.c)
TLIB_SRC   := $(wildcard tests/lib/*.c)
DRIVER_OBJ := $(DRIVER_SRC:%.c=$(BUILD)/%.o)
PLUGIN_OBJ := $(PLUGIN_SRC:%.c=$(BUILD)/%.o)
TLIB_OBJ   := $(TLIB_SRC:%.c=$(BUILD)/%.o)
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%) $(PROTO_SRC:tests/protocol/%.c=$(BUILD)/tests/%)
BIN        := $(BUILD)/ploop-graphdriver
# the image server alone: only what serving a chain needs, linked without libploop
SERVE_BIN  := $(BUILD)/ploop-graphdriver-serve-image
SERVE_OBJ  := $(BUILD)/plugin/serve/main.o \
              $(addprefix $(BUILD)/driver/engine/,imgsrv.o chain.o chain_io.o delta.o) \
              $(addprefix $(BUILD)/driver/,util.o err.o log.o)
# Docker's JSON codec belongs to the plugin face; its unit tests and fuzzer link it too.
PROTO_OBJ  := $(BUILD)/plugin/proto.o

DEB_PKGS := build-essential pkg-config libmicrohttpd-dev libjansson-dev libploop-dev ploop \
            libarchive-dev libfuse3-dev fuse3 libcriterion-dev e2fsprogs util-linux \
            qemu-utils qemu-system-common curl docker.io containerd runc busybox-static psmisc gnuplot-nox strace \
            clang libclang-rt-14-dev clang-format

.PHONY: all deps run test unit protocol e2e asan bench plugin clean install fuzz format format-check
all: $(BIN) $(SERVE_BIN) $(UNIT_BIN)

deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get -o DPkg::Lock::Timeout=600 update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q $$missing; \
	fi

.PHONY: pkgcheck
pkgcheck:
	@for p in $(PKGS); do pkg-config --exists $$p || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "pkg-config cannot find:$$missing (run 'make deps' as root)" >&2; exit 1; fi

$(BUILD)/%.o: %.c | pkgcheck
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -c $< -o $@

$(BUILD)/libpgd.a: $(DRIVER_OBJ)
	ar rcs $@ $^

$(BIN): $(PLUGIN_OBJ) $(BUILD)/libpgd.a
	$(CC) $(CFLAGS) -o $@ $(PLUGIN_OBJ) $(BUILD)/libpgd.a $(PKG_LIBS) -lpthread

$(SERVE_BIN): $(SERVE_OBJ)
	$(CC) $(CFLAGS) -o $@ $(SERVE_OBJ) $(shell pkg-config --libs fuse3) -lpthread

TEST_LINK = $(CC) $(CFLAGS) $(PKG_CFLAGS) -Itests/lib $< $(TLIB_OBJ) $(PROTO_OBJ) $(BUILD)/libpgd.a -o $@ $(PKG_LIBS) -lcriterion -lpthread
$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libpgd.a $(TLIB_OBJ) $(PROTO_OBJ)
	@mkdir -p $(dir $@)
	$(TEST_LINK)
$(BUILD)/tests/%: tests/protocol/%.c $(BUILD)/libpgd.a $(TLIB_OBJ) $(PROTO_OBJ)
	@mkdir -p $(dir $@)
	$(TEST_LINK)

run: deps $(BIN)
	$(BIN) --socket $(SOCKET)

# Every test: unit (Criterion), protocol (real binary over the socket),
# end-to-end (real dockerd), then the unit+protocol suites again under ASan/UBSan.
test: deps all
	tests/run-all.sh $(BUILD)

unit: all
	tests/run-unit.sh $(BUILD)

asan:
	$(MAKE) BUILD=build-asan CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" all

e2e: all
	tests/e2e/run.sh $(BUILD)

bench: deps all
	bench/run.sh $(BUILD)

# The user engine alone (no dockerd): ext4 on it vs a plain loop file and
# qemu-storage-daemon, mount latency, a 125-delta chain.
.PHONY: bench-engine
bench-engine: deps all
	bench/engine.sh $(BUILD)

plugin: all
	tools/make-plugin.sh $(BUILD)

# make install [PREFIX=/usr/local] [DESTDIR=] [SYSTEMDUNITDIR=/etc/systemd/system]:
# the binary, the systemd socket + service (legacy plugin on
# /run/docker/plugins/ploop.sock), /etc/default/ploop-graphdriver (kept if present)
# and the managed plugin's config.json. Then: systemctl daemon-reload &&
# systemctl enable --now ploop-graphdriver.socket
install: $(BIN) $(SERVE_BIN)
	install -D -m 0755 $(BIN) $(DESTDIR)$(or $(PREFIX),/usr/local)/bin/ploop-graphdriver
	install -m 0755 $(SERVE_BIN) $(DESTDIR)$(or $(PREFIX),/usr/local)/bin/ploop-graphdriver-serve-image
	install -d $(DESTDIR)$(or $(SYSTEMDUNITDIR),/etc/systemd/system)
	sed 's|@BINDIR@|$(or $(PREFIX),/usr/local)/bin|g' systemd/ploop-graphdriver.service \
	  >$(DESTDIR)$(or $(SYSTEMDUNITDIR),/etc/systemd/system)/ploop-graphdriver.service
	chmod 0644 $(DESTDIR)$(or $(SYSTEMDUNITDIR),/etc/systemd/system)/ploop-graphdriver.service
	install -m 0644 systemd/ploop-graphdriver.socket $(DESTDIR)$(or $(SYSTEMDUNITDIR),/etc/systemd/system)/
	test -e $(DESTDIR)/etc/default/ploop-graphdriver || \
	  install -D -m 0644 systemd/ploop-graphdriver.default $(DESTDIR)/etc/default/ploop-graphdriver
	install -D -m 0644 config.json $(DESTDIR)$(or $(PREFIX),/usr/local)/share/ploop-graphdriver/config.json

# make fuzz [FUZZ_SECONDS=60]: libFuzzer harnesses (tests/fuzz/) built with clang and
# ASan/UBSan into build-fuzz/, each run for FUZZ_SECONDS on its seed corpus.
FUZZ_SECONDS ?= 60
FUZZ_BUILD   := build-fuzz
FUZZ_CC      := clang
FUZZ_CFLAGS  := -O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer \
                -fno-sanitize-recover=undefined -Wno-unknown-warning-option
# after the project's -Wall: clang (not gcc) flags PGD_SCOPED_LOCK's cleanup variable
FUZZ_NOWARN  := -Wno-unused-variable
fuzz: deps
	$(MAKE) BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) CFLAGS="$(FUZZ_CFLAGS)" \
	  PKG_CFLAGS="$(PKG_CFLAGS) $(FUZZ_NOWARN)" $(FUZZ_BUILD)/libpgd.a $(FUZZ_BUILD)/plugin/proto.o
	for h in tests/fuzz/fuzz_*.c; do \
	  $(FUZZ_CC) $(CFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer \
	    $(PKG_CFLAGS) $$h $(FUZZ_BUILD)/plugin/proto.o $(FUZZ_BUILD)/libpgd.a $(PKG_LIBS) -lpthread \
	    -o $(FUZZ_BUILD)/$$(basename $$h .c) || exit 1; \
	done
	tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

# The committed .clang-format applied to every C file (make test runs format-check).
FORMAT_SRC = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
format:
	clang-format -i --style=file $(FORMAT_SRC)
format-check:
	@bad=""; for f in $(FORMAT_SRC); do \
	  clang-format --style=file "$$f" | cmp -s - "$$f" || bad="$$bad $$f"; done; \
	if [ -n "$$bad" ]; then echo "not formatted (make format):$$bad"; exit 1; fi

clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

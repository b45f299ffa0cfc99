# Installs sockserv: the shared and static library, the C and C++ headers,
# a pkg-config file and a CMake package.
#
#   make install                        cargo build --release, then install into /usr/local
#   make install PREFIX=$HOME/.local    another prefix
#   make install DESTDIR=/tmp/stage     stage for a package (the files still name PREFIX)
#   make install-strip                  the same without debug information (.so 7 MB -> 0.7 MB)
#   make uninstall                      remove what install put there (same variables)
#   make docs                           the API reference (Doxygen), see docs/Makefile
#
# BUILT=DIR installs the libsockserv.so and libsockserv.a found in DIR and
# does not run cargo (the tests install the library they just built).
# libdir and includedir default to PREFIX/lib and PREFIX/include.
#
# Why not cargo-c: see "Install" in README.md.

PREFIX ?= /usr/local
libdir ?= $(PREFIX)/lib
includedir ?= $(PREFIX)/include
CARGO ?= cargo
LDCONFIG ?= ldconfig

ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
# The package version from Cargo.toml (its first `version =` line); the
# soname's MAJOR comes from the same number (see build.rs).
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' $(ROOT)/Cargo.toml | head -n 1)
MAJOR := $(firstword $(subst ., ,$(VERSION)))

ifeq ($(BUILT),)
BUILT := $(abspath $(or $(CARGO_TARGET_DIR),$(ROOT)/target))/release
BUILD_FIRST := build
endif

# What libsockserv.a needs from the system: `rustc --print native-static-libs`.
STATIC_LIBS := -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
empty :=
space := $(empty) $(empty)
SUBST := sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(libdir)|g' \
	-e 's|@INCLUDEDIR@|$(includedir)|g' -e 's|@VERSION@|$(VERSION)|g' \
	-e 's|@MAJOR@|$(MAJOR)|g' -e 's|@STATIC_LIBS@|$(STATIC_LIBS)|g' \
	-e 's|@STATIC_LIBS_CMAKE@|$(subst $(space),;,$(patsubst -l%,%,$(STATIC_LIBS)))|g'

LIB := $(DESTDIR)$(libdir)
INC := $(DESTDIR)$(includedir)
CMAKE_DIR := $(LIB)/cmake/sockserv

.PHONY: build install install-strip uninstall docs

build:
	cd $(ROOT) && $(CARGO) build --release --lib

install: $(BUILD_FIRST)
	install -d $(LIB) $(INC) $(LIB)/pkgconfig $(CMAKE_DIR)
	install -m 755 $(BUILT)/libsockserv.so $(LIB)/libsockserv.so.$(VERSION)
	ln -sf libsockserv.so.$(VERSION) $(LIB)/libsockserv.so.$(MAJOR)
	ln -sf libsockserv.so.$(MAJOR) $(LIB)/libsockserv.so
	install -m 644 $(BUILT)/libsockserv.a $(LIB)/libsockserv.a
	install -m 644 $(ROOT)/include/sockserv.h $(ROOT)/include/sockserv.hpp $(INC)/
	$(SUBST) $(ROOT)/packaging/sockserv.pc.in > $(LIB)/pkgconfig/sockserv.pc
	$(SUBST) $(ROOT)/packaging/sockserv-config.cmake.in > $(CMAKE_DIR)/sockserv-config.cmake
	$(SUBST) $(ROOT)/packaging/sockserv-config-version.cmake.in \
		> $(CMAKE_DIR)/sockserv-config-version.cmake
	@# Refresh the loader's cache when installing for real as root.
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then $(LDCONFIG) || true; fi

# The release profile keeps line tables (debug = 1) for backtraces and
# valgrind; packagers usually strip, or split them into a -dbg package.
install-strip: install
	strip --strip-unneeded $(LIB)/libsockserv.so.$(VERSION)
	strip --strip-debug $(LIB)/libsockserv.a

uninstall:
	rm -f $(LIB)/libsockserv.so $(LIB)/libsockserv.so.$(MAJOR) \
		$(LIB)/libsockserv.so.$(VERSION) $(LIB)/libsockserv.a \
		$(INC)/sockserv.h $(INC)/sockserv.hpp $(LIB)/pkgconfig/sockserv.pc \
		$(CMAKE_DIR)/sockserv-config.cmake $(CMAKE_DIR)/sockserv-config-version.cmake
	-rmdir $(CMAKE_DIR) 2>/dev/null

docs:
	$(MAKE) -C $(ROOT)/docs

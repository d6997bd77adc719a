# Development Makefile.  `make demo` and `make test` are the README's two
# set-up commands: each installs missing Debian packages first (tools/deps.sh).
LUA      ?= lua5.4
LUA_INC  ?= $(shell pkg-config --cflags lua5.4 2>/dev/null || echo -I/usr/include/lua5.4)
CC       ?= cc
CFLAGS   ?= -O2 -g
WARN     := -std=c11 -Wall -Wextra -Wshadow -Wstrict-prototypes
ALLCFLAGS = $(WARN) $(CFLAGS) -fPIC $(LUA_INC)
LIBS     := -lcrypto -lpthread $(shell [ "$$(uname)" = Linux ] && echo -lrt)
ASAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
SRC      := $(filter-out src/lua/redis.c,$(sort $(wildcard src/core/*.c src/lua/*.c)))
HDR      := $(wildcard src/core/*.h src/lua/*.h)
PKGS_RUN  := lua5.4 liblua5.4-dev gcc make libc6-dev libssl-dev
PKGS_TEST := $(PKGS_RUN) lua-busted lua-check luarocks procps lua-luv tmux \
             libhiredis-dev redis-server
# mproc.redis (the cluster pool's Redis client) is built when hiredis is
# installed; without it only mp.cluster is unavailable.
HAVE_HIREDIS := $(shell [ -f /usr/include/hiredis/hiredis.h ] && echo yes)
REDIS_SO := $(if $(HAVE_HIREDIS),build/mproc/redis.so)
ENV      := LUA_PATH="./lua/?.lua;./lua/?/init.lua;;" LUA_CPATH="./build/?.so;;"

.PHONY: all build build-5.1 build-jit build-5.3 build-vms smoke-vms test-all test-vms bench-vms hosts demo test test-asan test-core test-methods specs lint docscov bench soak fuzz rock deps-run deps-test clean ci

all: build
build: build/mproc/core.so $(REDIS_SO)
hosts: build/thread_host

build/mproc/core.so: $(SRC) $(HDR) Makefile
	@mkdir -p $(@D)
	$(CC) $(ALLCFLAGS) -shared -o $@ $(SRC) $(LIBS)

build/mproc/redis.so: src/lua/redis.c src/lua/compat.c $(HDR) Makefile
	@mkdir -p $(@D)
	$(CC) $(ALLCFLAGS) -shared -o $@ src/lua/redis.c src/lua/compat.c -lhiredis

build-asan/mproc/redis.so: src/lua/redis.c src/lua/compat.c $(HDR) Makefile
	@mkdir -p $(@D)
	$(CC) $(WARN) -O1 -g $(ASAN_FLAGS) -fPIC $(LUA_INC) -shared -o $@ src/lua/redis.c src/lua/compat.c -lhiredis

build-asan/mproc/core.so: $(SRC) $(HDR) Makefile
	@mkdir -p $(@D)
	$(CC) $(WARN) -O1 -g $(ASAN_FLAGS) -fPIC $(LUA_INC) -shared -o $@ $(SRC) $(LIBS)

# The same source for the other VMs (issue 18): `make build-5.1`,
# `make build-jit` (LuaJIT 2.1), `make build-5.3`, or `make build-vms` for
# the three, each into build-<vm>/mproc/core.so after installing the VM's
# Debian packages.  5.1 and LuaJIT take most of the 5.3 API from
# lua-compat53-dev's header (src/lua/compat.h says what).
VM_INC_5.1  := $(shell pkg-config --cflags lua5.1 2>/dev/null || echo -I/usr/include/lua5.1)
VM_INC_jit  := $(shell pkg-config --cflags luajit 2>/dev/null || echo -I/usr/include/luajit-2.1)
VM_INC_5.3  := $(shell pkg-config --cflags lua5.3 2>/dev/null || echo -I/usr/include/lua5.3)
VM_PKGS_5.1 := lua5.1 liblua5.1-0-dev lua-compat53-dev
VM_PKGS_jit := luajit libluajit-5.1-dev lua-compat53-dev
VM_PKGS_5.3 := lua5.3 liblua5.3-dev

build-vms: build-5.1 build-jit build-5.3
build-5.1 build-jit build-5.3: build-%:
	@sh tools/deps.sh gcc make libc6-dev libssl-dev $(VM_PKGS_$*)
	@$(MAKE) --no-print-directory build-$*/mproc/core.so $(REDIS_SO:build/%=build-$*/%)

# The spec suite on every VM (issue 18): 5.4 as `make test`, then 5.3, 5.1
# and LuaJIT (files *_54_spec.lua hold 5.4-only syntax and run on 5.4 only).
test-all: test test-vms

# The three others alone (.ci/run, after make test).
test-vms: deps-test build-vms
	@$(MAKE) --no-print-directory smoke-vms
	@$(MAKE) --no-print-directory hosts   # now that the VMs' headers are there
	@MPROC_LUA=lua5.3 sh tools/run-specs.sh build-5.3
	@MPROC_LUA=lua5.1 sh tools/run-specs.sh build-5.1
	@MPROC_LUA=luajit sh tools/run-specs.sh build-jit

# mproc.core alone on each VM (tools/vm-smoke.lua): handovers that yield,
# argument errors, codec round trips; the Lua library is not loaded.  The
# 5.1 build also runs on LuaJIT: `luarocks --lua-version=5.1 make` builds
# with 5.1's headers, and LuaJIT users load that.
smoke-vms: build build-vms
	@for vm in 5.4:lua5.4:build 5.3:lua5.3:build-5.3 5.1:lua5.1:build-5.1 jit:luajit:build-jit \
	  jit51:luajit:build-5.1; do \
	  set -- $$(echo $$vm | tr : ' '); \
	  LUA_PATH="./lua/?.lua;;" LUA_CPATH="./$$3/?.so;;" $$2 tools/vm-smoke.lua || exit 1; \
	done

build-%/mproc/core.so: $(SRC) $(HDR) Makefile
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CFLAGS) -fPIC $(VM_INC_$*) -shared -o $@ $(SRC) $(LIBS)

build-%/mproc/redis.so: src/lua/redis.c src/lua/compat.c $(HDR) Makefile
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CFLAGS) -fPIC $(VM_INC_$*) -shared -o $@ src/lua/redis.c src/lua/compat.c -lhiredis

# spec/start_method_spec.lua: a program that embeds Lua and runs a thread.
build/thread_host: spec/host/thread_host.c Makefile
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CFLAGS) $(LUA_INC) -o $@ spec/host/thread_host.c \
	  $(shell pkg-config --libs lua5.4 2>/dev/null || echo -llua5.4) -lpthread -lm

# the same host embedding the other VMs (the spec takes the one of its build
# directory: build-5.3/thread_host under MPROC_LUA=lua5.3...)
VM_LIB_5.1 := $(shell pkg-config --libs lua5.1 2>/dev/null || echo -llua5.1)
VM_LIB_jit := $(shell pkg-config --libs luajit 2>/dev/null || echo -lluajit-5.1)
VM_LIB_5.3 := $(shell pkg-config --libs lua5.3 2>/dev/null || echo -llua5.3)
VM_H_5.1 := $(patsubst -I%,%,$(firstword $(VM_INC_5.1)))/lua.h
VM_H_jit := $(patsubst -I%,%,$(firstword $(VM_INC_jit)))/lua.h
VM_H_5.3 := $(patsubst -I%,%,$(firstword $(VM_INC_5.3)))/lua.h
# `make hosts` builds it for each VM whose headers are installed
hosts: $(foreach vm,5.1 jit 5.3,$(if $(wildcard $(VM_H_$(vm))),build-$(vm)/thread_host))
build-%/thread_host: spec/host/thread_host.c Makefile
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CFLAGS) $(VM_INC_$*) -o $@ spec/host/thread_host.c $(VM_LIB_$*) -lpthread -lm

deps-run:
	@sh tools/deps.sh $(PKGS_RUN)
deps-test:
	@sh tools/deps.sh $(PKGS_TEST)

demo: deps-run
	@$(MAKE) --no-print-directory build
	@$(ENV) $(LUA) examples/demo.lua

test: deps-test
	@$(MAKE) --no-print-directory build hosts test-core
	@sh tools/run-specs.sh build
	@$(MAKE) --no-print-directory lint docscov

# The core's C tests (spec/c/*_test.c): the core files linked into plain C
# programs, no Lua; death tests included.
test-core:
	@sh tools/run-core-tests.sh build/test

specs: build hosts
	@sh tools/run-specs.sh build $(SPEC)

# The whole spec suite again under the other start methods (issue 16);
# specs about fork itself use mp.get_context("fork") explicitly.
test-methods: deps-test
	@$(MAKE) --no-print-directory build hosts
	@MPROC_START_METHOD=spawn sh tools/run-specs.sh build
	@MPROC_START_METHOD=forkserver sh tools/run-specs.sh build

# All specs against an AddressSanitizer + UBSan build of the C module.
test-asan: deps-test build-asan/mproc/core.so $(REDIS_SO:build/%=build-asan/%)
	@sh tools/run-core-tests.sh build-asan/test $(ASAN_FLAGS)
	@MPROC_ASAN=1 sh tools/run-specs.sh build-asan

lint:
	@luacheck -q lua spec examples bench tools

docscov:
	@$(ENV) $(LUA) tools/docscov.lua

bench: build
	@sh tools/deps.sh python3 gcc parallel
	@sh bench/run.sh

# The same cases on Lua 5.4 and LuaJIT against Python (issue 18);
# BENCH_RUNS=3 prints the median of three runs taken in turns.
bench-vms: build build-jit
	@sh tools/deps.sh python3 gcc parallel
	@sh bench/vms.sh

# The queue soak (issue 12): 4 producers x 4 consumers, one of each SIGKILLed
# every 20 s; fails on any lost, duplicated or corrupted message, hang, RSS
# growth or /dev/shm leftover.  SOAK_SECONDS to change (spec/soak_spec.lua
# runs an 18 s version).
SOAK_SECONDS ?= 180
soak: build
	@$(ENV) $(LUA) bench/soak.lua $(SOAK_SECONDS)

# libFuzzer, two targets, FUZZ_SECONDS split between them:
# fuzz_loads: the decoder with functions refused (mp.loads(s));
# fuzz_loads_fn: with functions allowed, bytecode swapped for genuine
# chunks before lua_load (see fuzz/fuzz_loads_fn.c for why).
FUZZ_SECONDS ?= 600
FUZZ_CC = clang -g -O1 -fsanitize=fuzzer,address,undefined -DMPROC_FUZZ $(LUA_INC) -iquote src/lua
fuzz: build
	@sh tools/deps.sh clang libclang-rt-14-dev
	@mkdir -p build/fuzz/corpus build/fuzz/corpus-fn fuzz/corpus fuzz/corpus-fn
	@$(ENV) $(LUA) fuzz/seed.lua
	$(FUZZ_CC) -o build/fuzz/fuzz_loads fuzz/fuzz_loads.c $(SRC) -llua5.4 $(LIBS)
	$(FUZZ_CC) -o build/fuzz/fuzz_loads_fn fuzz/fuzz_loads_fn.c $(SRC) -llua5.4 $(LIBS)
	./build/fuzz/fuzz_loads -max_total_time=$$(( $(FUZZ_SECONDS) / 2 )) -print_final_stats=1 \
	  build/fuzz/corpus fuzz/corpus
	./build/fuzz/fuzz_loads_fn -max_total_time=$$(( ($(FUZZ_SECONDS) + 1) / 2 )) \
	  -print_final_stats=1 build/fuzz/corpus-fn fuzz/corpus-fn

# Builds and installs the rock into a throw-away tree and requires it there.
rock:
	@sh tools/rock-check.sh

clean:
	rm -rf build build-asan build-5.1 build-jit build-5.3

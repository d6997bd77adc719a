# Development Makefile.  `make demo` and `make test` are the README's two
# set-up commands: each installs missing Debian packages first (tools/deps.sh).
LUA      ?= lua5.4
LUA_INC  ?= $(shell pkg-config --cflags lua5.4 2>/dev/null || echo -I/usr/include/lua5.4)
CC       ?= cc
CFLAGS   ?= -O2 -g
WARN     := -std=c11 -Wall -Wextra -Wshadow -Wstrict-prototypes
ALLCFLAGS = $(WARN) $(CFLAGS) -fPIC $(LUA_INC)
LIBS     := -lcrypto -lpthread $(shell [ "$$(uname)" = Linux ] && echo -lrt)
SRC      := $(sort $(wildcard src/*.c))
HDR      := $(wildcard src/*.h)
PKGS_RUN  := lua5.4 liblua5.4-dev gcc make libc6-dev libssl-dev
PKGS_TEST := $(PKGS_RUN) lua-busted lua-check luarocks procps lua-luv tmux \
             libhiredis-dev redis-server
# mproc.redis (the cluster pool's Redis client) is built when hiredis is
# installed; without it only mp.cluster is unavailable.
HAVE_HIREDIS := $(shell [ -f /usr/include/hiredis/hiredis.h ] && echo yes)
REDIS_SO := $(if $(HAVE_HIREDIS),build/mproc/redis.so)
ENV      := LUA_PATH="./lua/?.lua;./lua/?/init.lua;;" LUA_CPATH="./build/?.so;;"

.PHONY: all build demo test test-asan specs lint docscov bench fuzz rock deps-run deps-test clean ci

all: build
build: build/mproc/core.so $(REDIS_SO)

build/mproc/core.so: $(SRC) $(HDR) Makefile
	@mkdir -p $(@D)
	$(CC) $(ALLCFLAGS) -shared -o $@ $(SRC) $(LIBS)

build/mproc/redis.so: src/redis/lredis.c Makefile
	@mkdir -p $(@D)
	$(CC) $(ALLCFLAGS) -shared -o $@ src/redis/lredis.c -lhiredis

build-asan/mproc/redis.so: src/redis/lredis.c Makefile
	@mkdir -p $(@D)
	$(CC) $(WARN) -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
	  -fno-sanitize-recover=undefined -fPIC $(LUA_INC) -shared -o $@ src/redis/lredis.c -lhiredis

build-asan/mproc/core.so: $(SRC) $(HDR) Makefile
	@mkdir -p $(@D)
	$(CC) $(WARN) -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
	  -fno-sanitize-recover=undefined -fPIC $(LUA_INC) -shared -o $@ $(SRC) $(LIBS)

deps-run:
	@sh tools/deps.sh $(PKGS_RUN)
deps-test:
	@sh tools/deps.sh $(PKGS_TEST)

demo: deps-run
	@$(MAKE) --no-print-directory build
	@$(ENV) $(LUA) examples/demo.lua

test: deps-test
	@$(MAKE) --no-print-directory build
	@sh tools/run-specs.sh build
	@$(MAKE) --no-print-directory lint docscov

specs: build
	@sh tools/run-specs.sh build $(SPEC)

# All specs against an AddressSanitizer + UBSan build of the C module.
test-asan: deps-test build-asan/mproc/core.so $(REDIS_SO:build/%=build-asan/%)
	@MPROC_ASAN=1 sh tools/run-specs.sh build-asan

lint:
	@luacheck -q lua spec examples bench tools

docscov:
	@$(ENV) $(LUA) tools/docscov.lua

bench: build
	@sh tools/deps.sh python3 gcc
	@sh bench/run.sh

# libFuzzer over mp.loads(s, {functions = false}); FUZZ_SECONDS to change.
FUZZ_SECONDS ?= 600
fuzz: build
	@sh tools/deps.sh clang libclang-rt-14-dev
	@mkdir -p build/fuzz/corpus fuzz/corpus
	@$(ENV) $(LUA) fuzz/seed.lua
	clang -g -O1 -fsanitize=fuzzer,address,undefined $(LUA_INC) -iquote src \
	  -o build/fuzz/fuzz_loads fuzz/fuzz_loads.c $(SRC) -llua5.4 $(LIBS)
	./build/fuzz/fuzz_loads -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	  build/fuzz/corpus fuzz/corpus

# Builds and installs the rock into a throw-away tree and requires it there.
rock:
	@sh tools/rock-check.sh

clean:
	rm -rf build build-asan

rockspec_format = "3.0"
package = "mproc"
version = "scm-1"
source = {
  url = "git+file:///dev/null",
}
description = {
  summary = "Processes, pools, queues, pipes, locks and shared memory for Lua 5.1-5.4 and LuaJIT",
  detailed = [[
mproc gives Lua what Python's multiprocessing gives Python: processes,
process pools with async results, queues, pipes, locks and other
synchronisation, shared memory, managers and subprocesses.]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.1, < 5.5",
}
external_dependencies = {
  CRYPTO = { library = "crypto" },
  -- mproc.redis (mp.cluster): Debian libhiredis-dev
  HIREDIS = { header = "hiredis/hiredis.h", library = "hiredis" },
}
build = {
  type = "builtin",
  modules = {
    ["mproc.core"] = {
      sources = {
        "src/lua/mproc.c", "src/lua/codec.c", "src/lua/codec_api.c",
        "src/core/poll.c", "src/lua/poll.c",
        "src/core/process.c", "src/lua/process.c",
        "src/core/pipe.c", "src/lua/pipe.c",
        "src/core/shared.c", "src/lua/shared.c",
        "src/core/sync.c", "src/lua/sync.c",
        "src/lua/lock.c",
        "src/lua/cond.c",
        "src/core/queue.c", "src/lua/queue.c",
        "src/core/subprocess.c", "src/lua/subprocess.c",
        "src/core/net.c", "src/lua/net.c",
        "src/core/pool.c", "src/lua/pool.c",
        "src/core/tracker.c",
        "src/lua/compat.c",
      },
      libraries = { "crypto" },
    },
    ["mproc.redis"] = {
      sources = { "src/lua/redis.c", "src/lua/compat.c" },
      libraries = { "hiredis" },
      incdirs = { "$(HIREDIS_INCDIR)" },
      libdirs = { "$(HIREDIS_LIBDIR)" },
    },
    ["mproc"] = "lua/mproc.lua",
    ["mproc.errors"] = "lua/mproc/errors.lua",
    ["mproc.util"] = "lua/mproc/util.lua",
    ["mproc.compat"] = "lua/mproc/compat.lua",
    ["mproc.sched"] = "lua/mproc/sched.lua",
    ["mproc.sched_api"] = "lua/mproc/sched_api.lua",
    ["mproc.codec"] = "lua/mproc/codec.lua",
    ["mproc.process"] = "lua/mproc/process.lua",
    ["mproc.context"] = "lua/mproc/context.lua",
    ["mproc.spawn_child"] = "lua/mproc/spawn_child.lua",
    ["mproc.forkserver"] = "lua/mproc/forkserver.lua",
    ["mproc.pipe"] = "lua/mproc/pipe.lua",
    ["mproc.handover"] = "lua/mproc/handover.lua",
    ["mproc.sync"] = "lua/mproc/sync.lua",
    ["mproc.shared"] = "lua/mproc/shared.lua",
    ["mproc.queue"] = "lua/mproc/queue.lua",
    ["mproc.subprocess"] = "lua/mproc/subprocess.lua",
    ["mproc.manager"] = "lua/mproc/manager.lua",
    ["mproc.manager.auth"] = "lua/mproc/manager/auth.lua",
    ["mproc.manager.objects"] = "lua/mproc/manager/objects.lua",
    ["mproc.manager.server"] = "lua/mproc/manager/server.lua",
    ["mproc.manager.client"] = "lua/mproc/manager/client.lua",
    ["mproc.pool"] = "lua/mproc/pool.lua",
    ["mproc.pool.worker"] = "lua/mproc/pool/worker.lua",
    ["mproc.pool.dispatch"] = "lua/mproc/pool/dispatch.lua",
    ["mproc.pool.jobs"] = "lua/mproc/pool/jobs.lua",
    ["mproc.poolargs"] = "lua/mproc/poolargs.lua",
    ["mproc.result"] = "lua/mproc/result.lua",
    ["mproc.progress"] = "lua/mproc/progress.lua",
    ["mproc.cluster"] = "lua/mproc/cluster.lua",
    ["mproc.cluster.worker"] = "lua/mproc/cluster/worker.lua",
    ["mproc.cli"] = "lua/mproc/cli.lua",
    ["mproc.cli.jobs"] = "lua/mproc/cli/jobs.lua",
    ["mproc.cli.status"] = "lua/mproc/cli/status.lua",
  },
  install = {
    bin = { mproc = "bin/mproc" },
  },
  platforms = {
    linux = {
      modules = {
        ["mproc.core"] = {
          libraries = { "crypto", "pthread", "rt" },
        },
      },
    },
  },
}

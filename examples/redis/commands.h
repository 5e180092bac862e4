// -----------------------------------------------------------------------------
// File: examples/redis/commands.h
// -----------------------------------------------------------------------------
//
// The Redis example's commands, answered byte for byte as redis-server 7.0 answers them:
// PING, ECHO, SET (NX, XX, GET, KEEPTTL, EX, PX, EXAT, PXAT), GET, DEL, INCR, EXISTS, DBSIZE,
// FLUSHALL, FLUSHDB, QUIT, what redis-benchmark asks of CONFIG GET, and COMMAND (empty, for
// redis-cli). Anything else gets Redis's "unknown command" error.
//
//   std::string out;
//   if (gev::redis::Execute(store, args, &out) == gev::redis::After::kClose) ...
//
// Thread safety: as the Store; `out` belongs to the caller.

#ifndef GEV_EXAMPLES_REDIS_COMMANDS_H_
#define GEV_EXAMPLES_REDIS_COMMANDS_H_

#include <string>
#include <string_view>
#include <vector>

#include "examples/redis/store.h"

namespace gev::redis {

enum class After { kContinue, kClose };

// Execute() — runs one command (args non-empty) and appends its reply to `*out`. kClose: the
// connection ends once the reply is written (QUIT).
After Execute(Store& store, const std::vector<std::string_view>& args, std::string* out);

}  // namespace gev::redis

#endif  // GEV_EXAMPLES_REDIS_COMMANDS_H_

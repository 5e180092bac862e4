// -----------------------------------------------------------------------------
// File: examples/common/serve.h
// -----------------------------------------------------------------------------
//
// What every example's main() does after building its server: print where it listens (so a
// script or test that asked for port 0 learns the port), serve, and stop cleanly on SIGINT or
// SIGTERM (every connection gets its OnClose; pending output is flushed).
//
//   auto server = gev::NewServer(&handler, gev::Address(...));
//   if (!server.ok()) return gev::examples::Fail(server.status());
//   return gev::examples::ServeUntilSignal(**server);
//
// Thread safety: call from main(), before any other thread exists (it sets the signal mask
// that the server's threads inherit).

#ifndef GEV_EXAMPLES_COMMON_SERVE_H_
#define GEV_EXAMPLES_COMMON_SERVE_H_

#include <string>

#include "absl/status/status.h"
#include "server/server.h"

namespace gev::examples {

// Prints `status` to stderr and returns the exit code 1.
int Fail(const absl::Status& status);

// The address flag value for a port: every interface, as gev's examples listen.
std::string AddressForPort(int port);

// Raises the descriptor limit to its hard limit, blocks SIGINT/SIGTERM, prints "listening on <address>", runs server.Start() until a signal
// arrives or the server stops, and returns the exit code 0.
int ServeUntilSignal(Server& server);

}  // namespace gev::examples

#endif  // GEV_EXAMPLES_COMMON_SERVE_H_

// -----------------------------------------------------------------------------
// File: examples/common/serve.h
// -----------------------------------------------------------------------------
//
// The examples' command-line helpers around gev::ServeUntilSignal (server/serve.h): print an
// error and exit 1, the address flag for a port.
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
#include "server/datagram_server.h"
#include "server/server.h"

namespace gev::examples {

// Prints `status` to stderr and returns the exit code 1.
int Fail(const absl::Status& status);

// The address flag value for a port: every interface, as gev's examples listen.
std::string AddressForPort(int port);

// gev::ServeUntilSignal(server) as an exit code: 0, or 1 with the error printed.
int ServeUntilSignal(Server& server);
int ServeUntilSignal(DatagramServer& server);

}  // namespace gev::examples

#endif  // GEV_EXAMPLES_COMMON_SERVE_H_

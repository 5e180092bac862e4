// -----------------------------------------------------------------------------
// File: server/serve.h
// -----------------------------------------------------------------------------
//
// `gev::ServeUntilSignal()` is what a server's main() does after building its server: raise
// the descriptor limit, print where it listens (so a script or test that asked for port 0
// learns the port), serve, and stop cleanly on SIGINT or SIGTERM (every connection gets its
// OnClose; pending output is flushed for the server's StopTimeout). With ServeOptions it also
// restarts the program in place on SIGHUP, handing the listeners to the new process.
//
//   int main() {
//     MyHandler handler;
//     auto server = gev::NewServer(&handler, gev::Address(":6380"), gev::NumLoops(4));
//     if (!server.ok()) return Report(server.status());
//     absl::Status served = gev::ServeUntilSignal(**server);
//     return served.ok() ? 0 : Report(served);
//   }
//
// Thread safety: call from main(), before any other thread exists: it blocks SIGINT and
// SIGTERM (and SIGHUP and SIGCHLD when it restarts) in the calling thread while it serves, and the server's threads inherit that mask,
// so only its own waiting thread sees them. The calling thread's mask is restored on return.

#ifndef GEV_SERVER_SERVE_H_
#define GEV_SERVER_SERVE_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "server/datagram_server.h"
#include "server/server.h"

namespace gev {

// ServeUntilSignal() — raises the open-file limit to its hard limit (best effort), blocks
// SIGINT/SIGTERM, prints "listening on <address>" to stdout, runs server.Start() until one of
// them arrives or the server stops, and returns what Start() returned.
absl::Status ServeUntilSignal(Server& server);

struct ServeOptions {
  // Non-empty: SIGHUP restarts the program in place. A child runs the program file again (the
  // path this process was started from: a binary replaced there since, an upgrade, is the one
  // that runs) with these arguments (the first is argv[0]), takes the
  // listeners over the server's ServerOptions::handoff_path (required), and this server then
  // drains, so ServeUntilSignal returns once its connections have ended. A child that exits
  // before taking over is reaped and logged, and this server serves on; a SIGHUP while a
  // child is starting, or before the server serves its handoff path, is ignored (logged).
  std::vector<std::string> restart_argv;
  // Non-empty: this process's pid is written there (whole, by a rename) once SIGINT, SIGTERM
  // and SIGHUP are handled, before the server starts.
  std::string pid_file;
};
// The same, with SIGHUP meaning what `options` says. InvalidArgument for restart arguments
// without a handoff path; Unavailable when the pid file cannot be written.
absl::Status ServeUntilSignal(Server& server, const ServeOptions& options);

// TakeRestartMarker() — whether this process is the child of a restart in place (the child's
// environment says so; the variable is removed here, so that its own children do not inherit
// it). Such a child should set ServerOptions::handoff_required: if it cannot take the
// listeners over, its predecessor serves on, and the child should exit rather than serve
// beside it. Call at start-up, before other threads touch the environment.
bool TakeRestartMarker();
// The same for a UDP server ("listening on udp 127.0.0.1:5353").
absl::Status ServeUntilSignal(DatagramServer& server);

// ListeningLine() — the line ServeUntilSignal prints: "listening on " and where `server`
// listens ("127.0.0.1:6380", "[::1]:6380", a Unix socket's path, or "@name" for an abstract
// one).
std::string ListeningLine(const Server& server);

}  // namespace gev

#endif  // GEV_SERVER_SERVE_H_

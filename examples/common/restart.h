// -----------------------------------------------------------------------------
// File: examples/common/restart.h
// -----------------------------------------------------------------------------
//
// Restarts without a refused or reset client, for the examples' main()s: their listeners come
// from systemd when it started them by socket activation, and with --handoff=PATH a SIGHUP
// starts the program again, which takes the listeners over PATH while this process drains
// (or, if it cannot, exits while this one serves on). --pid_file=PATH names the process that
// serves (written as it starts serving, with SIGHUP handled).
//
//   absl::StatusOr<gev::Option> listeners = gev::examples::RestartableListeners();
//   if (!listeners.ok()) return gev::examples::Fail(listeners.status());
//   auto server = gev::NewServer(&handler, gev::Address(...), *listeners);
//   if (!server.ok()) return gev::examples::Fail(server.status());
//   return gev::examples::ServeWithRestarts(**server, argc, argv);
//
// Thread safety: call from main(), before any other thread exists (environment, signal mask).

#ifndef GEV_EXAMPLES_COMMON_RESTART_H_
#define GEV_EXAMPLES_COMMON_RESTART_H_

#include "absl/status/statusor.h"
#include "server/options.h"
#include "server/server.h"

namespace gev::examples {

// RestartableListeners() — an option that serves systemd's sockets when LISTEN_FDS names some
// for this process (taken from the environment, so a restarted child does not look for them),
// and sets the handoff path from --handoff, required in a restart's child. Errors: a malformed LISTEN_* variable, a passed
// descriptor that is not a socket.
absl::StatusOr<Option> RestartableListeners();

// ServeWithRestarts() — writes --pid_file, then gev::ServeUntilSignal, restarting in place on
// SIGHUP when --handoff is set (the same arguments: `argc`/`argv` as main() got them). Returns
// main()'s exit code.
int ServeWithRestarts(Server& server, int argc, char** argv);

}  // namespace gev::examples

#endif  // GEV_EXAMPLES_COMMON_RESTART_H_

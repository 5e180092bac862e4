#include "examples/common/restart.h"

#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "examples/common/serve.h"
#include "net/inherited_sockets.h"
#include "server/serve.h"

ABSL_FLAG(std::string, handoff, "",
          "a Unix socket path: take the listeners over it from the running server, and on "
          "SIGHUP restart in place, handing them to the new process (empty: neither)");
ABSL_FLAG(std::string, pid_file, "", "write the serving process's pid to this file");

namespace gev::examples {

absl::StatusOr<Option> RestartableListeners() {
  absl::StatusOr<std::vector<InheritedSocket>> sockets = TakeSystemdSockets();
  if (!sockets.ok()) return sockets.status();
  std::vector<int> fds;
  for (const InheritedSocket& socket : *sockets) fds.push_back(socket.fd);
  // A restart's child takes over or gives up: its predecessor serves on meanwhile.
  const bool restarted = TakeRestartMarker();
  return Option([fds, restarted, path = absl::GetFlag(FLAGS_handoff)](ServerOptions& options) {
    options.listeners = fds;
    options.handoff_path = path;
    options.handoff_required = restarted && !path.empty();
  });
}

int ServeWithRestarts(Server& server, int argc, char** argv) {
  ServeOptions options;
  options.pid_file = absl::GetFlag(FLAGS_pid_file);
  if (!absl::GetFlag(FLAGS_handoff).empty()) options.restart_argv.assign(argv, argv + argc);
  absl::Status served = ServeUntilSignal(server, options);
  return served.ok() ? 0 : Fail(served);
}

}  // namespace gev::examples

#include "examples/common/restart.h"

#include <unistd.h>

#include <cstdio>
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
  return Option([fds, path = absl::GetFlag(FLAGS_handoff)](ServerOptions& options) {
    options.listeners = fds;
    options.handoff_path = path;
  });
}

int ServeWithRestarts(Server& server, int argc, char** argv) {
  const std::string pid_file = absl::GetFlag(FLAGS_pid_file);
  if (!pid_file.empty()) {
    // Written whole under another name, then renamed: a reader never sees half a pid.
    std::string partial = pid_file + ".partial";
    std::FILE* file = std::fopen(partial.c_str(), "w");
    bool written = file != nullptr && std::fprintf(file, "%d\n", static_cast<int>(::getpid())) > 0;
    if (file != nullptr) written = std::fclose(file) == 0 && written;
    if (!written || std::rename(partial.c_str(), pid_file.c_str()) != 0) {
      return Fail(absl::UnavailableError("cannot write --pid_file " + pid_file));
    }
  }
  ServeOptions options;
  if (!absl::GetFlag(FLAGS_handoff).empty()) options.restart_argv.assign(argv, argv + argc);
  absl::Status served = ServeUntilSignal(server, options);
  return served.ok() ? 0 : Fail(served);
}

}  // namespace gev::examples

// An echo server, gev's first example: every byte a client sends comes back.
//
//   tools/bazel run //examples/echo:echo_server -- --port=1833 --loops=4 --reuseport
//
// Restarts that lose nothing: with --handoff=/run/echo.handoff a SIGHUP starts the server again
// (the same binary and flags), which takes the listeners over that socket; this process then
// serves its open connections until their clients close them (at most 5 s) and exits. Under
// systemd socket activation (or systemd-socket-activate) it serves the sockets it was passed.

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "examples/common/restart.h"
#include "examples/common/serve.h"
#include "server/server.h"

ABSL_FLAG(int, port, 1833, "TCP port to listen on (0: any free port)");
ABSL_FLAG(int, loops, -1, "worker loops (<= 0: one per CPU)");
ABSL_FLAG(bool, reuseport, false, "one SO_REUSEPORT listener per loop instead of one acceptor");
ABSL_FLAG(bool, gather_writes, true, "write each loop iteration's small replies once per connection");
ABSL_FLAG(int, reads_per_event, 8,
          "most 64 KiB reads one readable event makes (1-64; libuv makes 32, which suits floods)");

namespace {

class EchoHandler : public gev::Handler {
 public:
  // Sends back (and consumes) everything that came in, without copying it.
  gev::Reply OnMessage(gev::Connection&, gev::RingBuffer& buffer) override {
    return gev::Reply::FromBuffer(buffer.Length());
  }
};

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("An echo server. Usage: echo_server --port=1833 --loops=4");
  absl::ParseCommandLine(argc, argv);
  EchoHandler handler;
  absl::StatusOr<gev::Option> listeners = gev::examples::RestartableListeners();
  if (!listeners.ok()) return gev::examples::Fail(listeners.status());
  auto server = gev::NewServer(&handler, *listeners,
                               gev::Address(gev::examples::AddressForPort(absl::GetFlag(FLAGS_port))),
                               gev::NumLoops(absl::GetFlag(FLAGS_loops)),
                               gev::ReusePort(absl::GetFlag(FLAGS_reuseport)),
                               gev::GatherWrites(absl::GetFlag(FLAGS_gather_writes)),
                               gev::ReadsPerEvent(absl::GetFlag(FLAGS_reads_per_event)));
  if (!server.ok()) return gev::examples::Fail(server.status());
  return gev::examples::ServeWithRestarts(**server, argc, argv);
}

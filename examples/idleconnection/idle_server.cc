// An echo server that closes clients quiet for longer than --idle (gev's IdleTime option,
// one timing-wheel timer per connection, re-armed lazily rather than on every read).
//
//   tools/bazel run //examples/idleconnection:idle_server -- --idle=5s

#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/time/time.h"
#include "examples/common/serve.h"
#include "server/server.h"

ABSL_FLAG(int, port, 1833, "TCP port to listen on (0: any free port)");
ABSL_FLAG(int, loops, -1, "worker loops (<= 0: one per CPU)");
ABSL_FLAG(absl::Duration, idle, absl::Seconds(5), "close clients idle for longer than this");

namespace {

class IdleHandler : public gev::Handler {
 public:
  gev::Reply OnMessage(gev::Connection&, gev::RingBuffer& buffer) override {
    return gev::Reply::FromBuffer(buffer.Length());
  }
  void OnClose(gev::Connection& conn, const absl::Status& reason) override {
    if (absl::IsDeadlineExceeded(reason)) {
      std::fprintf(stderr, "closed idle client %s\n", conn.PeerAddr().ToString().c_str());
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("An echo server that closes idle clients. Usage: --idle=5s");
  absl::ParseCommandLine(argc, argv);
  IdleHandler handler;
  auto server = gev::NewServer(&handler,
                               gev::Address(gev::examples::AddressForPort(absl::GetFlag(FLAGS_port))),
                               gev::NumLoops(absl::GetFlag(FLAGS_loops)),
                               gev::IdleTime(absl::GetFlag(FLAGS_idle)));
  if (!server.ok()) return gev::examples::Fail(server.status());
  return gev::examples::ServeUntilSignal(**server);
}

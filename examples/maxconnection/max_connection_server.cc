// An echo server that serves at most --max clients at once: one over the cap is told so and
// closed. The count only covers accepted clients, so a refused one closing does not free a
// slot it never had.
//
//   tools/bazel run //examples/maxconnection:max_connection_server -- --max=1000

#include <atomic>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "examples/common/serve.h"
#include "server/server.h"

ABSL_FLAG(int, port, 1833, "TCP port to listen on (0: any free port)");
ABSL_FLAG(int, loops, -1, "worker loops (<= 0: one per CPU)");
ABSL_FLAG(int, max, 1000, "most clients served at once");

namespace {

class MaxConnectionHandler : public gev::Handler {
 public:
  explicit MaxConnectionHandler(int max) : max_(max) {}

  void OnConnect(gev::Connection& conn) override {
    // Taken and checked in one step: connections arrive on several loops at once.
    if (served_.fetch_add(1) >= max_) {
      served_.fetch_sub(1);
      (void)conn.Send("too many connections\n");
      conn.Close();
      return;
    }
    conn.SetContext(kAdmitted);
  }

  gev::Reply OnMessage(gev::Connection&, gev::RingBuffer& buffer) override {
    return gev::Reply::FromBuffer(buffer.Length());
  }

  void OnClose(gev::Connection& conn, const absl::Status&) override {
    if (conn.Context().has_value()) served_.fetch_sub(1);
  }

 private:
  static constexpr bool kAdmitted = true;
  const int max_;
  std::atomic<int> served_{0};
};

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("An echo server with a connection cap. Usage: --max=1000");
  absl::ParseCommandLine(argc, argv);
  MaxConnectionHandler handler(absl::GetFlag(FLAGS_max));
  auto server = gev::NewServer(&handler,
                               gev::Address(gev::examples::AddressForPort(absl::GetFlag(FLAGS_port))),
                               gev::NumLoops(absl::GetFlag(FLAGS_loops)));
  if (!server.ok()) return gev::examples::Fail(server.status());
  return gev::examples::ServeUntilSignal(**server);
}

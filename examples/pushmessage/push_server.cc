// Pushes "hello\n" to every connected client every --interval, from a server timer
// (RunEvery) on the acceptor thread: Connection::Send works from any thread.
//
//   tools/bazel run //examples/pushmessage:push_server -- --interval=1s

#include <memory>
#include <mutex>

#include "absl/container/flat_hash_set.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/time/time.h"
#include "examples/common/serve.h"
#include "server/server.h"

ABSL_FLAG(int, port, 1833, "TCP port to listen on (0: any free port)");
ABSL_FLAG(int, loops, -1, "worker loops (<= 0: one per CPU)");
ABSL_FLAG(absl::Duration, interval, absl::Seconds(1), "time between pushes");

namespace {

class PushHandler : public gev::Handler {
 public:
  void OnConnect(gev::Connection& conn) override {
    std::lock_guard<std::mutex> lock(mutex_);
    clients_.insert(conn.shared_from_this());
  }

  // Clients' input is read and dropped.
  gev::Reply OnMessage(gev::Connection&, gev::RingBuffer& buffer) override {
    buffer.RetrieveAll();
    return {};
  }

  void OnClose(gev::Connection& conn, const absl::Status&) override {
    std::lock_guard<std::mutex> lock(mutex_);
    clients_.erase(&conn);
  }

  void PushToAll() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const gev::ConnectionPtr& client : clients_) (void)client->Send("hello\n");
  }

 private:
  std::mutex mutex_;
  absl::flat_hash_set<gev::ConnectionPtr> clients_;  // Guarded by mutex_.
};

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Pushes hello to every client. Usage: --interval=1s");
  absl::ParseCommandLine(argc, argv);
  PushHandler handler;
  auto server = gev::NewServer(&handler,
                               gev::Address(gev::examples::AddressForPort(absl::GetFlag(FLAGS_port))),
                               gev::NumLoops(absl::GetFlag(FLAGS_loops)));
  if (!server.ok()) return gev::examples::Fail(server.status());
  (*server)->RunEvery(absl::GetFlag(FLAGS_interval), [&handler] { handler.PushToAll(); });
  return gev::examples::ServeUntilSignal(**server);
}

// An echo client that reconnects: it sends a numbered line every --interval_ms to an echo
// server, prints each echoed line, and when the server goes away it retries with backoff and
// jitter until the server is back.
//
//   tools/bazel run //examples/echo:echo_server -- --port=1833 &
//   tools/bazel run //examples/client:echo_client -- --server=127.0.0.1:1833
//
// Output, one event per line: "connected to ...", "echo: ping N", "closed: <reason>",
// "connect failed: <reason> (retrying)". Exits 0 after --count echoes (0: never) or on
// SIGINT/SIGTERM.

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "server/client.h"

ABSL_FLAG(std::string, server, "127.0.0.1:1833", "echo server: host:port, or a path for unix");
ABSL_FLAG(std::string, network, "tcp", "tcp, tcp4, tcp6 or unix");
ABSL_FLAG(int, interval_ms, 100, "time between pings");
ABSL_FLAG(int, count, 0, "exit after this many echoes (0: run until a signal)");
ABSL_FLAG(int, initial_delay_ms, 100, "first reconnect delay");
ABSL_FLAG(int, max_delay_ms, 5000, "longest reconnect delay");

namespace {

void Print(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

// Pings on a timer while connected; prints what comes back, line by line.
class Pinger : public gev::Handler {
 public:
  Pinger(absl::Duration interval, int count, std::atomic<bool>* done)
      : interval_(interval), count_(count), done_(done) {}

  void OnConnect(gev::Connection& conn) override {
    Print(absl::StrCat("connected to ", conn.PeerAddr().ToString()));
    std::weak_ptr<gev::Connection> weak = conn.shared_from_this();
    // The timer lives on the connection's loop; it ends itself when the connection is gone.
    timer_ = conn.loop()->RunEvery(interval_, [this, weak, loop = conn.loop()] {
      gev::ConnectionPtr connection = weak.lock();
      if (connection == nullptr || !connection->Connected()) return;
      // Refused only once the connection is closing; its OnClose says why.
      (void)connection->Send(absl::StrCat("ping ", ++sequence_, "\n"));
    });
    loop_ = conn.loop();
  }

  gev::Reply OnMessage(gev::Connection&, gev::RingBuffer& buffer) override {
    pending_ += buffer.Bytes();
    buffer.RetrieveAll();
    size_t newline;
    while ((newline = pending_.find('\n')) != std::string::npos) {
      Print(absl::StrCat("echo: ", pending_.substr(0, newline)));
      pending_.erase(0, newline + 1);
      if (count_ > 0 && ++echoes_ >= count_) done_->store(true);
    }
    return {};
  }

  void OnClose(gev::Connection&, const absl::Status& reason) override {
    if (loop_ != nullptr) loop_->Cancel(timer_);
    pending_.clear();
    Print(absl::StrCat("closed: ", reason.ok() ? "OK" : reason.ToString()));
  }

 private:
  const absl::Duration interval_;
  const int count_;
  std::atomic<bool>* const done_;
  // Loop-thread-only state.
  gev::EventLoop* loop_ = nullptr;
  gev::TimerId timer_ = 0;
  uint64_t sequence_ = 0;
  int echoes_ = 0;
  std::string pending_;
};

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("A reconnecting echo client. Usage: echo_client --server=host:port");
  absl::ParseCommandLine(argc, argv);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // Inherited by the client's loop thread.

  std::atomic<bool> done{false};
  Pinger pinger(absl::Milliseconds(absl::GetFlag(FLAGS_interval_ms)), absl::GetFlag(FLAGS_count),
                &done);
  gev::ClientOptions options;
  options.network = absl::GetFlag(FLAGS_network);
  options.connect_timeout = absl::Seconds(3);
  options.reconnect.enabled = true;
  options.reconnect.initial_delay = absl::Milliseconds(absl::GetFlag(FLAGS_initial_delay_ms));
  options.reconnect.max_delay = absl::Milliseconds(absl::GetFlag(FLAGS_max_delay_ms));
  options.on_connect_error = [](const absl::Status& error, bool retrying) {
    Print(absl::StrCat("connect failed: ", error.ToString(), retrying ? " (retrying)" : ""));
  };
  auto client = gev::Dial(&pinger, absl::GetFlag(FLAGS_server), options);
  if (!client.ok()) {
    std::fprintf(stderr, "error: %s\n", client.status().ToString().c_str());
    return 1;
  }
  // Waits for a signal, or for --count echoes (checked every 50 ms).
  timespec poll_interval{0, 50 * 1000 * 1000};
  while (!done.load()) {
    if (sigtimedwait(&signals, nullptr, &poll_interval) > 0) break;
  }
  (*client)->Stop();  // Flushes, closes; OnClose has run when it returns.
  return 0;
}

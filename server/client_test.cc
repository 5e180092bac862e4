#include "server/client.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "net/socket_ops.h"
#include "server/protocol.h"
#include "server/server.h"
#include "server/testing/loopback_client.h"

namespace gev {
namespace {

using ::gev::testing::Pattern;
using ::gev::testing::ServerThread;
using ::gev::testing::WaitFor;
using Clock = std::chrono::steady_clock;

std::string TakeAll(RingBuffer& buffer) {
  std::string bytes = buffer.Bytes();
  buffer.RetrieveAll();
  return bytes;
}

// Records what a client's connection sees; optionally sends `greeting` on connect.
class RecordingHandler : public Handler {
 public:
  std::string greeting;
  std::function<Reply(Connection&, RingBuffer&)> on_message;

  void OnConnect(Connection& conn) override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      events_.push_back("connect");
      loop_threads_.push_back(std::this_thread::get_id());
    }
    if (!greeting.empty()) {
      EXPECT_TRUE(conn.Send(greeting).ok());
    }
  }
  Reply OnMessage(Connection& conn, RingBuffer& buffer) override {
    if (on_message) return on_message(conn, buffer);
    std::lock_guard<std::mutex> lock(mutex_);
    if (events_.empty() || events_.back() != "message") events_.push_back("message");
    received_ += TakeAll(buffer);
    return {};
  }
  void OnClose(Connection&, const absl::Status& reason) override {
    std::lock_guard<std::mutex> lock(mutex_);
    events_.push_back("close:" + std::string(absl::StatusCodeToString(reason.code())));
    reasons_.push_back(reason);
  }

  std::vector<std::string> events() {
    std::lock_guard<std::mutex> lock(mutex_);
    return events_;
  }
  std::string received() {
    std::lock_guard<std::mutex> lock(mutex_);
    return received_;
  }
  size_t closes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return reasons_.size();
  }
  std::vector<absl::Status> reasons() {
    std::lock_guard<std::mutex> lock(mutex_);
    return reasons_;
  }

 private:
  std::mutex mutex_;
  std::vector<std::string> events_;
  std::vector<std::thread::id> loop_threads_;
  std::string received_;
  std::vector<absl::Status> reasons_;
};

class EchoHandler : public Handler {
 public:
  Reply OnMessage(Connection&, RingBuffer& buffer) override {
    return Reply::FromBuffer(buffer.Length());
  }
};

std::unique_ptr<Server> EchoServer(Handler* handler, std::string address = "127.0.0.1:0",
                                   std::string network = "tcp") {
  ServerOptions options;
  options.network = std::move(network);
  options.address = std::move(address);
  options.num_loops = 1;
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Create(handler, options);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(*server) : nullptr;
}

std::string ClosedPort() { return ::gev::testing::UnusedLoopbackAddress().ToString(); }

// Failed attempts as the client reports them, with when.
struct AttemptLog {
  std::mutex mutex;
  std::vector<Clock::time_point> times;
  std::vector<absl::Status> errors;
  std::vector<bool> retrying;

  void Attach(ClientOptions& options) {
    options.on_connect_error = [this](const absl::Status& error, bool again) {
      std::lock_guard<std::mutex> lock(mutex);
      times.push_back(Clock::now());
      errors.push_back(error);
      retrying.push_back(again);
    };
  }
  size_t size() {
    std::lock_guard<std::mutex> lock(mutex);
    return errors.size();
  }
};

TEST(ClientTest, ConnectsEchoesAndClosesOnceOnItsOwnLoop) {
  EchoHandler echo;
  auto server = EchoServer(&echo);
  ASSERT_NE(server, nullptr);
  ServerThread running(server.get());
  RecordingHandler handler;
  handler.greeting = Pattern(200000, 3);
  absl::StatusOr<std::unique_ptr<Client>> client =
      Dial(&handler, server->ListenAddress().ToString());
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE(WaitFor([&] { return handler.received().size() == handler.greeting.size(); }));
  EXPECT_EQ(handler.received(), handler.greeting);
  ClientStats stats = (*client)->Stats();
  EXPECT_TRUE(stats.connected);
  EXPECT_EQ(stats.attempts, 1u);
  EXPECT_EQ(stats.connects, 1u);
  ConnectionPtr connection = (*client)->connection();
  ASSERT_NE(connection, nullptr);
  EXPECT_EQ(connection->PeerAddr().ToString(), server->ListenAddress().ToString());
  EXPECT_EQ(connection->shared_loop(), (*client)->loop());
  (*client)->Stop();  // Off the loop: returns after OnClose.
  EXPECT_EQ(handler.events(), (std::vector<std::string>{"connect", "message", "close:OK"}));
  EXPECT_EQ((*client)->connection(), nullptr);
  EXPECT_FALSE((*client)->Stats().connected);
  client->reset();
  EXPECT_EQ(handler.closes(), 1u);
}

TEST(ClientTest, SendsFromAnyThreadInOrder) {
  EchoHandler echo;
  auto server = EchoServer(&echo);
  ASSERT_NE(server, nullptr);
  ServerThread running(server.get());
  RecordingHandler handler;
  auto client = Dial(&handler, server->ListenAddress().ToString());
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(WaitFor([&] { return (*client)->connection() != nullptr; }));
  ConnectionPtr connection = (*client)->connection();
  std::string expected;
  for (int i = 0; i < 200; ++i) {
    std::string chunk = Pattern(1000, i);
    ASSERT_TRUE(connection->Send(chunk).ok());
    expected += chunk;
  }
  ASSERT_TRUE(WaitFor([&] { return handler.received().size() == expected.size(); }));
  EXPECT_TRUE(handler.received() == expected);
}

TEST(ClientTest, RefusedRetriesWithGrowingDelays) {
  RecordingHandler handler;
  ClientOptions options;
  options.reconnect.enabled = true;
  options.reconnect.initial_delay = absl::Milliseconds(20);
  options.reconnect.multiplier = 2.0;
  options.reconnect.jitter = 0.2;
  options.reconnect.max_delay = absl::Seconds(1);
  options.reconnect.max_attempts = 6;
  AttemptLog log;
  log.Attach(options);
  auto client = Dial(&handler, ClosedPort(), options);
  ASSERT_TRUE(client.ok()) << client.status();
  // Given up is said before the last attempt's callback runs: both are waited for.
  ASSERT_TRUE(WaitFor([&] { return (*client)->Stats().gave_up && log.size() >= 6; }, 10000));
  std::lock_guard<std::mutex> lock(log.mutex);
  ASSERT_EQ(log.errors.size(), 6u);
  for (size_t i = 0; i < log.errors.size(); ++i) {
    EXPECT_TRUE(absl::IsUnavailable(log.errors[i])) << log.errors[i];
    EXPECT_EQ(log.retrying[i], i + 1 < log.errors.size()) << i;
  }
  // The waits between attempts: 20, 40, 80, 160, 320 ms, each cut by up to 20% of jitter, and
  // late by no more than scheduling delays.
  std::vector<double> gaps_ms;
  for (size_t i = 1; i < log.times.size(); ++i) {
    double gap_ms = std::chrono::duration<double, std::milli>(log.times[i] - log.times[i - 1])
                        .count();
    double base_ms = 20.0 * (1 << (i - 1));
    EXPECT_GE(gap_ms, 0.8 * base_ms - 2) << "wait " << i;
    EXPECT_LE(gap_ms, base_ms + 150) << "wait " << i;
    gaps_ms.push_back(gap_ms);
  }
  // Growing: the last wait (at least 254 ms) is well over twice the first (at most 170 ms).
  EXPECT_GT(gaps_ms.back(), 1.5 * gaps_ms.front());
  ClientStats stats = (*client)->Stats();
  EXPECT_EQ(stats.attempts, 6u);
  EXPECT_EQ(stats.failures_in_a_row, 6u);
  EXPECT_EQ(stats.connects, 0u);
  EXPECT_TRUE(absl::IsUnavailable(stats.last_error));
  EXPECT_EQ(handler.closes(), 0u);  // No connection, no OnClose.
}

// Closes every connection as soon as it opens: a server that accepts and drops at once.
class DroppingHandler : public Handler {
 public:
  void OnConnect(Connection& conn) override { conn.Close(); }
  Reply OnMessage(Connection&, RingBuffer& buffer) override {
    buffer.RetrieveAll();
    return {};
  }
};

// When the client's connections open and close.
class TimedHandler : public Handler {
 public:
  void OnConnect(Connection&) override {
    std::lock_guard<std::mutex> lock(mutex_);
    connects_.push_back(Clock::now());
  }
  Reply OnMessage(Connection&, RingBuffer& buffer) override {
    buffer.RetrieveAll();
    return {};
  }
  void OnClose(Connection&, const absl::Status&) override {
    std::lock_guard<std::mutex> lock(mutex_);
    closes_.push_back(Clock::now());
  }
  size_t connects() {
    std::lock_guard<std::mutex> lock(mutex_);
    return connects_.size();
  }
  // Milliseconds from each close to the next connect.
  std::vector<double> WaitsAfterCloses() {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<double> waits;
    for (size_t i = 0; i + 1 < connects_.size() && i < closes_.size(); ++i) {
      waits.push_back(
          std::chrono::duration<double, std::milli>(connects_[i + 1] - closes_[i]).count());
    }
    return waits;
  }

 private:
  std::mutex mutex_;
  std::vector<Clock::time_point> connects_;
  std::vector<Clock::time_point> closes_;
};

// After a connection that was established, the waits start again from initial_delay: a server
// that accepts and drops at once is retried every initial_delay, not ever more slowly. With a
// multiplier of 8, waits that kept growing would be 10, 80, 640 and 5,120 ms.
TEST(ClientTest, WaitsStartOverAfterAnEstablishedConnection) {
  DroppingHandler dropping;
  auto server = EchoServer(&dropping);
  ASSERT_NE(server, nullptr);
  ServerThread running(server.get());
  TimedHandler handler;
  ClientOptions options;
  options.reconnect.enabled = true;
  options.reconnect.initial_delay = absl::Milliseconds(10);
  options.reconnect.multiplier = 8.0;
  options.reconnect.jitter = 0.0;
  options.reconnect.max_delay = absl::Seconds(30);
  auto client = Dial(&handler, server->ListenAddress().ToString(), options);
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_TRUE(WaitFor([&] { return handler.connects() >= 5; }, 4000))
      << handler.connects() << " connections";
  (*client)->Stop();
  std::vector<double> waits = handler.WaitsAfterCloses();
  ASSERT_GE(waits.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    // 10 ms, late by no more than scheduling delays; a grown wait would be at least 640 ms.
    EXPECT_LT(waits[i], 500.0) << "wait " << i;
  }
  ClientStats stats = (*client)->Stats();
  EXPECT_GE(stats.connects, 5u);
  EXPECT_EQ(stats.failures_in_a_row, 0u);
}

TEST(ClientTest, JitterSpreadsClientsThatFailTogether) {
  RecordingHandler handler;
  std::string refused = ClosedPort();
  std::vector<std::unique_ptr<AttemptLog>> logs;
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < 8; ++i) {
    ClientOptions options;
    options.reconnect.enabled = true;
    options.reconnect.initial_delay = absl::Milliseconds(100);
    options.reconnect.jitter = 0.5;
    options.reconnect.max_attempts = 2;
    logs.push_back(std::make_unique<AttemptLog>());
    logs.back()->Attach(options);
    auto client = Dial(&handler, refused, options);
    ASSERT_TRUE(client.ok());
    clients.push_back(std::move(*client));
  }
  for (auto& log : logs) ASSERT_TRUE(WaitFor([&] { return log->size() == 2; }));
  std::vector<double> waits;
  for (auto& log : logs) {
    std::lock_guard<std::mutex> lock(log->mutex);
    waits.push_back(std::chrono::duration<double, std::milli>(log->times[1] - log->times[0])
                        .count());
  }
  double low = *std::min_element(waits.begin(), waits.end());
  double high = *std::max_element(waits.begin(), waits.end());
  // Drawn from [50, 100] ms: eight draws all within 2 ms of each other would be a broken draw.
  EXPECT_GT(high - low, 2.0);
  EXPECT_GE(low, 48.0);
}

TEST(ClientTest, TimesOutAgainstAListenerWhoseBacklogIsFull) {
  ::gev::testing::FullBacklogListener busy;
  InetAddress address = busy.address();
  RecordingHandler handler;
  ClientOptions options;
  options.connect_timeout = absl::Milliseconds(200);
  AttemptLog log;
  log.Attach(options);
  auto client = Dial(&handler, address.ToString(), options);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(WaitFor([&] { return log.size() == 1; }));
  {
    std::lock_guard<std::mutex> lock(log.mutex);
    EXPECT_TRUE(absl::IsDeadlineExceeded(log.errors[0])) << log.errors[0];
    EXPECT_FALSE(log.retrying[0]);
  }
  EXPECT_TRUE((*client)->Stats().gave_up);
}

// A loop on a thread of the test's, to watch what a client leaves on it.
class LoopThread {
 public:
  LoopThread() : loop_(*EventLoop::Create()), thread_([this] { loop_->Run(); }) {}
  ~LoopThread() {
    loop_->Stop();
    thread_.join();
  }
  const std::shared_ptr<EventLoop>& loop() { return loop_; }
  template <typename T>
  T Get(std::function<T()> f) {
    std::promise<T> result;
    loop_->RunInLoop([&] { result.set_value(f()); });
    return result.get_future().get();
  }

 private:
  std::shared_ptr<EventLoop> loop_;
  std::thread thread_;
};

TEST(ClientTest, StoppedMidBackoffLeavesNoTimerAndNoAttempt) {
  LoopThread loop;
  size_t timers_before = loop.Get<size_t>([&] { return loop.loop()->timer_count(); });
  RecordingHandler handler;
  ClientOptions options;
  options.loop = loop.loop();
  options.reconnect.enabled = true;
  options.reconnect.initial_delay = absl::Milliseconds(300);
  AttemptLog log;
  log.Attach(options);
  auto client = Dial(&handler, ClosedPort(), options);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(WaitFor([&] { return log.size() == 1; }));  // Now waiting to retry.
  EXPECT_EQ(loop.Get<size_t>([&] { return loop.loop()->timer_count(); }), timers_before + 1);
  client->reset();  // Stops it mid-backoff.
  EXPECT_EQ(loop.Get<size_t>([&] { return loop.loop()->timer_count(); }), timers_before);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // Past the retry's time.
  EXPECT_EQ(log.size(), 1u);
}

TEST(ClientTest, StoppedWhileConnectingRunsNoCallback) {
  ::gev::testing::FullBacklogListener busy;
  InetAddress address = busy.address();
  RecordingHandler handler;
  ClientOptions options;
  options.connect_timeout = absl::Milliseconds(200);
  AttemptLog log;
  log.Attach(options);
  auto client = Dial(&handler, address.ToString(), options);
  ASSERT_TRUE(client.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  (*client)->Stop();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // Past the timeout.
  EXPECT_EQ(log.size(), 0u);
  EXPECT_TRUE(handler.events().empty());
}

TEST(ClientTest, ReconnectsWhenTheServerComesBack) {
  EchoHandler echo;
  auto first = EchoServer(&echo);
  ASSERT_NE(first, nullptr);
  std::string address = first->ListenAddress().ToString();
  auto running = std::make_unique<ServerThread>(first.get());
  RecordingHandler handler;
  handler.greeting = "hello";
  ClientOptions options;
  options.reconnect.enabled = true;
  options.reconnect.initial_delay = absl::Milliseconds(10);
  options.reconnect.max_delay = absl::Milliseconds(50);
  AttemptLog log;
  log.Attach(options);
  auto client = Dial(&handler, address, options);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(WaitFor([&] { return handler.received() == "hello"; }));
  running.reset();  // The server goes away: the client's connection closes.
  first.reset();
  ASSERT_TRUE(WaitFor([&] { return handler.closes() == 1 && log.size() >= 2; }));
  EXPECT_FALSE((*client)->Stats().gave_up);
  auto second = EchoServer(&echo, address);
  ASSERT_NE(second, nullptr);
  ServerThread running_again(second.get());
  ASSERT_TRUE(WaitFor([&] { return handler.received() == "hellohello"; }));
  ClientStats stats = (*client)->Stats();
  EXPECT_EQ(stats.connects, 2u);
  EXPECT_EQ(stats.failures_in_a_row, 0u);  // Reset by the connection.
  EXPECT_GE(stats.attempts, 3u);
  (*client)->Stop();
  EXPECT_EQ(handler.closes(), 2u);
}

TEST(ClientTest, BadAddressesFailAtCreation) {
  RecordingHandler handler;
  EXPECT_TRUE(absl::IsInvalidArgument(Dial(&handler, "127.0.0.1").status()));  // No port.
  EXPECT_TRUE(absl::IsInvalidArgument(Dial(&handler, "127.0.0.1:99999").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(Dial(&handler, "").status()));
  ClientOptions udp;
  udp.network = "udp";
  EXPECT_TRUE(absl::IsInvalidArgument(Dial(&handler, "127.0.0.1:1", udp).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(Dial(&handler, "example.invalid:1", udp).status()));
  ClientOptions bad_policy;
  bad_policy.reconnect.enabled = true;
  bad_policy.reconnect.jitter = 2;
  EXPECT_TRUE(absl::IsInvalidArgument(Dial(&handler, "127.0.0.1:1", bad_policy).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(Dial(nullptr, "127.0.0.1:1").status()));
}

// What a client shares with a server (ConnectionSettings) is checked by the server's one
// validation: each of these is refused by both, with the same words.
TEST(ClientTest, SharedSettingsAreCheckedAsAServersAre) {
  RecordingHandler handler;
  std::vector<std::pair<std::function<void(ConnectionSettings&)>, std::string>> cases = {
      {[](ConnectionSettings& s) { s.tcp_keep_alive = absl::Seconds(-1); }, "TCPKeepAlive"},
      {[](ConnectionSettings& s) { s.stop_timeout = absl::Seconds(-1); }, "StopTimeout"},
      {[](ConnectionSettings& s) { s.idle_time = absl::Seconds(-1); }, "IdleTime"},
      {[](ConnectionSettings& s) { s.high_water_mark = 0; }, "HighWaterMark is 0"},
      {[](ConnectionSettings& s) { s.max_input_bytes = 0; }, "MaxInputBytes is 0"},
      {[](ConnectionSettings& s) { s.reads_per_event = 0; }, "ReadsPerEvent(0)"},
      {[](ConnectionSettings& s) { s.reads_per_event = 65; }, "ReadsPerEvent(65)"},
      {[](ConnectionSettings& s) {
         s.high_water_mark = 8 << 20;
         s.max_pending_output = 1 << 20;
       },
       "below HighWaterMark"},
  };
  for (const auto& [spoil, words] : cases) {
    ClientOptions client;
    spoil(client);
    absl::Status refused = Dial(&handler, "127.0.0.1:1", client).status();
    EXPECT_TRUE(absl::IsInvalidArgument(refused)) << words << ": " << refused;
    EXPECT_NE(refused.message().find(words), std::string::npos) << refused;
    ServerOptions server;
    server.address = "127.0.0.1:0";
    spoil(server);
    absl::Status server_refused = Server::Create(&handler, server).status();
    EXPECT_TRUE(absl::IsInvalidArgument(server_refused)) << words << ": " << server_refused;
    EXPECT_EQ(server_refused.message(), refused.message());
  }
  ClientOptions negative_connect_timeout;
  negative_connect_timeout.connect_timeout = absl::Seconds(-1);
  EXPECT_TRUE(
      absl::IsInvalidArgument(Dial(&handler, "127.0.0.1:1", negative_connect_timeout).status()));
}

TEST(ClientTest, ResolvesNamesOffTheLoopAndReportsUnknownOnes) {
  EchoHandler echo;
  auto server = EchoServer(&echo);
  ASSERT_NE(server, nullptr);
  ServerThread running(server.get());
  RecordingHandler handler;
  handler.greeting = "named";
  ClientOptions tcp4;
  tcp4.network = "tcp4";
  // The lookup blocks for 200 ms; the client's loop keeps running timers meanwhile.
  std::atomic<bool> looking_up{false};
  std::atomic<bool> loop_ran_during_lookup{false};
  // A name this resolver knows, whatever the machine's hosts file says.
  const std::string port = std::to_string(server->ListenAddress().port());
  tcp4.resolve = [&](const std::string& network, const std::string& address)
      -> absl::StatusOr<SocketAddress> {
    looking_up = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    looking_up = false;
    if (address != "echo.test:" + port) return absl::NotFoundError(address);
    return SocketAddress::Parse(network, "127.0.0.1:" + port);
  };
  auto named = Client::Create(&handler, [&] {
    ClientOptions options = tcp4;
    options.address = "echo.test:" + port;
    return options;
  }());
  ASSERT_TRUE(named.ok()) << named.status();
  (*named)->Connect();
  ASSERT_TRUE(WaitFor([&] { return looking_up.load(); }));
  (*named)->loop()->RunAfter(absl::Milliseconds(10), [&] {
    loop_ran_during_lookup = looking_up.load();
  });
  ASSERT_TRUE(WaitFor([&] { return handler.received() == "named"; }));
  EXPECT_TRUE(loop_ran_during_lookup.load()) << "the lookup blocked the client's loop";

  RecordingHandler unknown_handler;
  ClientOptions unknown;
  AttemptLog log;
  log.Attach(unknown);
  unknown.resolve = [](const std::string&, const std::string& address)
      -> absl::StatusOr<SocketAddress> {
    return absl::NotFoundError("no such host: " + address);
  };
  auto client = Dial(&unknown_handler, "db.example:5432", unknown);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(WaitFor([&] { return log.size() == 1; }));
  std::lock_guard<std::mutex> lock(log.mutex);
  EXPECT_TRUE(absl::IsNotFound(log.errors[0])) << log.errors[0];
}

// Eight clients dialing by name through a name service that answers in 0.5 s (a proxy
// dialing for eight clients at once): the lookups run side by side, so all are connected at
// about 0.5 s, where one resolver thread had them connect at 0.5, 1.0, ... 4.0 s.
TEST(ClientTest, ConcurrentDialsByNameResolveSideBySide) {
  EchoHandler echo;
  auto server = EchoServer(&echo);
  ASSERT_NE(server, nullptr);
  ServerThread running(server.get());
  const std::string port = std::to_string(server->ListenAddress().port());
  RecordingHandler handler;
  ClientOptions options;
  options.resolve = [&](const std::string& network,
                        const std::string&) -> absl::StatusOr<SocketAddress> {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    return SocketAddress::Parse(network, "127.0.0.1:" + port);
  };
  auto started = std::chrono::steady_clock::now();
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < 8; ++i) {
    auto client = Dial(&handler, "slow-dns.test:" + port, options);
    ASSERT_TRUE(client.ok()) << client.status();
    clients.push_back(std::move(*client));
  }
  ASSERT_TRUE(WaitFor([&] {
    auto events = handler.events();
    return std::count(events.begin(), events.end(), "connect") == 8;
  }));
  auto took = std::chrono::steady_clock::now() - started;
  // Not a speed figure: one lookup after another would take 4 s.
  EXPECT_LT(took, std::chrono::milliseconds(2500))
      << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms";
  clients.clear();
}

// A name service that hangs fails the attempt at connect_timeout (DeadlineExceeded), and the
// reconnect policy goes on as after any failed attempt.
TEST(ClientTest, ALookupThatHangsFailsTheAttemptAtTheConnectTimeout) {
  RecordingHandler handler;
  ClientOptions options;
  AttemptLog log;
  log.Attach(options);
  options.connect_timeout = absl::Milliseconds(100);
  options.resolve = [](const std::string&, const std::string&) -> absl::StatusOr<SocketAddress> {
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    return absl::NotFoundError("answered too late");
  };
  auto client = Dial(&handler, "hanging.example:5432", options);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(WaitFor([&] { return log.size() >= 1; }));
  std::lock_guard<std::mutex> lock(log.mutex);
  EXPECT_TRUE(absl::IsDeadlineExceeded(log.errors[0])) << log.errors[0];
}

TEST(ClientTest, ConnectsOverAUnixSocket) {
  EchoHandler echo;
  std::string path = "/tmp/" + ::gev::testing::UniqueName("gev-client") + ".sock";
  ::unlink(path.c_str());
  auto server = EchoServer(&echo, path, "unix");
  ASSERT_NE(server, nullptr);
  ServerThread running(server.get());
  RecordingHandler handler;
  handler.greeting = Pattern(300000, 5);
  ClientOptions options;
  options.network = "unix";
  auto client = Dial(&handler, path, options);
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE(WaitFor([&] { return handler.received().size() == handler.greeting.size(); }));
  EXPECT_TRUE(handler.received() == handler.greeting);
  ConnectionPtr connection = (*client)->connection();
  ASSERT_NE(connection, nullptr);
  EXPECT_EQ(connection->PeerAddr().family(), AF_UNIX);
  std::promise<absl::StatusOr<PeerCredentials>> credentials;
  connection->loop()->RunInLoop([&] { credentials.set_value(connection->PeerCredentials()); });
  absl::StatusOr<PeerCredentials> peer = credentials.get_future().get();
  ASSERT_TRUE(peer.ok()) << peer.status();
  EXPECT_EQ(peer->uid, ::getuid());
}

TEST(ClientTest, FramesWithAProtocolAndTimesOutWhenIdle) {
  // A server that answers one length-framed message, then stays quiet.
  class FramedEcho : public Handler {
   public:
    Reply OnMessage(Connection&, RingBuffer& buffer) override {
      return Reply::FromBuffer(buffer.Length());
    }
  } framed_echo;
  ServerOptions server_options;
  server_options.address = "127.0.0.1:0";
  server_options.num_loops = 1;
  server_options.protocol = std::make_shared<LengthFieldProtocol>();
  auto server = Server::Create(&framed_echo, server_options);
  ASSERT_TRUE(server.ok());
  ServerThread running(server->get());

  std::mutex mutex;
  std::vector<std::string> frames;
  RecordingHandler handler;
  handler.on_message = [&](Connection&, RingBuffer& payload) -> Reply {
    std::lock_guard<std::mutex> lock(mutex);
    frames.push_back(TakeAll(payload));
    return {};
  };
  ClientOptions options;
  options.protocol = std::make_shared<LengthFieldProtocol>();
  options.idle_time = absl::Milliseconds(200);
  auto client = Dial(&handler, (*server)->ListenAddress().ToString(), options);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(WaitFor([&] { return (*client)->connection() != nullptr; }));
  ConnectionPtr connection = (*client)->connection();
  // Send() writes raw bytes; a framed reply comes from OnMessage. Frame it by hand.
  ASSERT_TRUE(connection->Send(gev::testing::LengthFramed("one")).ok());
  ASSERT_TRUE(connection->Send(gev::testing::LengthFramed("two")).ok());
  ASSERT_TRUE(WaitFor([&] {
    std::lock_guard<std::mutex> lock(mutex);
    return frames.size() == 2;
  }));
  {
    std::lock_guard<std::mutex> lock(mutex);
    EXPECT_EQ(frames, (std::vector<std::string>{"one", "two"}));
  }
  ASSERT_TRUE(WaitFor([&] { return handler.closes() == 1; }));
  EXPECT_TRUE(absl::IsDeadlineExceeded(handler.reasons()[0])) << handler.reasons()[0];
}

// The proxy's arrangement: a server connection dials out on its own loop.
TEST(ClientTest, RunsOnAServerConnectionsLoop) {
  EchoHandler echo;
  auto upstream = EchoServer(&echo);
  ASSERT_NE(upstream, nullptr);
  ServerThread upstream_running(upstream.get());

  struct Front : Handler {
    std::string upstream_address;
    RecordingHandler upstream_handler;
    std::mutex mutex;
    std::vector<std::unique_ptr<Client>> clients;
    std::atomic<bool> same_thread{false};
    std::thread::id front_thread;

    void OnConnect(Connection& conn) override {
      ClientOptions options;
      options.loop = conn.shared_loop();
      front_thread = std::this_thread::get_id();
      upstream_handler.greeting = "via";
      auto client = Dial(&upstream_handler, upstream_address, options);
      EXPECT_TRUE(client.ok());
      std::lock_guard<std::mutex> lock(mutex);
      clients.push_back(std::move(*client));
    }
    Reply OnMessage(Connection&, RingBuffer&) override { return {}; }
    void OnClose(Connection&, const absl::Status&) override {
      std::lock_guard<std::mutex> lock(mutex);
      for (auto& client : clients) {
        same_thread = client->loop()->IsInLoopThread();
        client.reset();  // On the loop thread: returns at once; OnClose follows.
      }
    }
  } front;
  front.upstream_address = upstream->ListenAddress().ToString();
  auto server = EchoServer(&front);
  ASSERT_NE(server, nullptr);
  ServerThread running(server.get());
  int fd = gev::testing::Connect(server->ListenAddress());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(WaitFor([&] { return front.upstream_handler.received() == "via"; }));
  ::close(fd);
  ASSERT_TRUE(WaitFor([&] { return front.upstream_handler.closes() == 1; }));
  EXPECT_TRUE(front.same_thread.load());
  EXPECT_EQ(front.upstream_handler.events(),
            (std::vector<std::string>{"connect", "message", "close:OK"}));
}

// A server's Stop() lets a client connection on its loops (a proxy's upstream) flush and
// close before the loop stops, so its OnClose runs and nothing it was given is lost.
TEST(ClientTest, AServerStoppingLetsClientsOnItsLoopsFlushAndClose) {
  // The upstream reads nothing for its first 300 ms, then counts what arrives.
  struct SlowSink : Handler {
    std::atomic<size_t> received{0};
    void OnConnect(Connection& conn) override {
      conn.PauseReading();
      conn.loop()->RunAfter(absl::Milliseconds(300),
                            [held = conn.shared_from_this()] { held->ResumeReading(); });
    }
    Reply OnMessage(Connection&, RingBuffer& buffer) override {
      received += buffer.Length();
      buffer.RetrieveAll();
      return {};
    }
  } sink;
  auto upstream = EchoServer(&sink);
  ASSERT_NE(upstream, nullptr);
  ServerThread upstream_running(upstream.get());

  constexpr size_t kBytes = 8 << 20;
  struct Front : Handler {
    std::string upstream_address;
    RecordingHandler upstream_handler;
    std::unique_ptr<Client> client;  // Loop thread only.
    void OnConnect(Connection& conn) override {
      ClientOptions options;
      options.loop = conn.shared_loop();
      upstream_handler.greeting = Pattern(kBytes, 1);
      client = std::move(*Dial(&upstream_handler, upstream_address, options));
    }
    Reply OnMessage(Connection&, RingBuffer&) override { return {}; }
    void OnClose(Connection&, const absl::Status&) override { client.reset(); }
  } front;
  front.upstream_address = upstream->ListenAddress().ToString();
  auto server = EchoServer(&front);
  ASSERT_NE(server, nullptr);
  auto running = std::make_unique<ServerThread>(server.get());
  int fd = gev::testing::Connect(server->ListenAddress());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(WaitFor([&] { return front.upstream_handler.events().size() == 1; }));
  running.reset();  // Stop(): the front connection closes, its client closes after the flush.
  EXPECT_EQ(front.upstream_handler.events(), (std::vector<std::string>{"connect", "close:OK"}));
  EXPECT_TRUE(WaitFor([&] { return sink.received.load() == kBytes; }));
  ::close(fd);
}

// Destroyed inside its own callback with output it cannot flush, a client on its own loop
// still ends its connection and runs OnClose.
TEST(ClientTest, DestroyedInItsOwnCallbackOnItsOwnLoopStillCallsOnClose) {
  // A server that reads nothing and greets: the client's reply stays pending.
  struct Deaf : Handler {
    void OnConnect(Connection& conn) override {
      conn.PauseReading();
      EXPECT_TRUE(conn.Send("x").ok());
    }
    Reply OnMessage(Connection&, RingBuffer&) override { return {}; }
  } deaf;
  auto server = EchoServer(&deaf);
  ASSERT_NE(server, nullptr);
  ServerThread running(server.get());
  struct SelfDestroying : RecordingHandler {
    std::unique_ptr<Client>* client = nullptr;
    Reply OnMessage(Connection& conn, RingBuffer& buffer) override {
      buffer.RetrieveAll();
      EXPECT_TRUE(conn.Send(Pattern(16 << 20, 2)).ok());  // More than the kernel takes.
      client->reset();
      return {};
    }
  } handler;
  ClientOptions options;
  options.address = server->ListenAddress().ToString();
  std::unique_ptr<Client> client = std::move(*Client::Create(&handler, options));
  handler.client = &client;  // Before Connect: the callback uses it.
  client->Connect();
  ASSERT_TRUE(WaitFor([&] { return handler.closes() == 1; }));
  EXPECT_TRUE(absl::IsCancelled(handler.reasons()[0])) << handler.reasons()[0];
}

TEST(ClientTest, RunsOnAServersLoopOutsideAnyConnection) {
  EchoHandler echo;
  auto upstream = EchoServer(&echo);
  ASSERT_NE(upstream, nullptr);
  ServerThread upstream_running(upstream.get());
  RecordingHandler quiet;
  auto server = EchoServer(&quiet);
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(server->Loop(1), nullptr);
  ServerThread running(server.get());
  struct OnLoop : RecordingHandler {
    std::shared_ptr<EventLoop> loop;
    std::atomic<bool> on_that_loop{false};
    void OnConnect(Connection& conn) override {
      on_that_loop = loop->IsInLoopThread() && conn.loop() == loop.get();
      RecordingHandler::OnConnect(conn);
    }
  } handler;
  handler.loop = server->Loop(0);
  handler.greeting = "beside";
  ClientOptions options;
  options.loop = server->Loop(0);
  auto client = Dial(&handler, upstream->ListenAddress().ToString(), options);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(WaitFor([&] { return handler.received() == "beside"; }));
  EXPECT_TRUE(handler.on_that_loop.load());
  (*client)->Stop();
  EXPECT_EQ(handler.closes(), 1u);
}

}  // namespace
}  // namespace gev

#include "server/datagram_client.h"

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "net/testing/loopback_client.h"
#include "net/testing/socket_paths.h"
#include "server/testing/running_datagram_server.h"
#include "server/datagram_server.h"

namespace gev {
namespace {

// Up to 10 s: a busy machine under a sanitizer is slow.
bool WaitFor(const std::function<bool()>& done) { return testing::WaitFor(done, 10000); }

using Running = testing::RunningDatagramServer;

// The server side: echoes, and answers "ping?" with "ping!" sent back by SendTo later.
class EchoServer : public DatagramHandler {
 public:
  Reply OnDatagram(Datagram& datagram) override {
    if (datagram.payload == "pong") {
      std::lock_guard<std::mutex> lock(mutex);
      pongs.push_back(datagram.peer.ToString());
      return {};
    }
    return Reply::FromBuffer(datagram.payload.size());
  }
  std::mutex mutex;
  std::vector<std::string> pongs;
};

// The client side: keeps what it hears, answers "ping" with "pong".
class Collector : public DatagramHandler {
 public:
  Reply OnDatagram(Datagram& datagram) override {
    EXPECT_EQ(datagram.server, nullptr);
    EXPECT_NE(datagram.client, nullptr);
    const bool ping = datagram.payload == "ping";
    {
      std::lock_guard<std::mutex> lock(mutex);
      heard.emplace_back(datagram.payload);
    }
    // Last: it may destroy the client, and then the test this collector.
    if (on_datagram) on_datagram(datagram);
    if (ping) return std::string("pong");
    return {};
  }
  void OnSendError(const InetAddress&, const absl::Status& error) override {
    std::lock_guard<std::mutex> lock(mutex);
    errors.push_back(error);
  }
  size_t heard_count() {
    std::lock_guard<std::mutex> lock(mutex);
    return heard.size();
  }
  std::function<void(Datagram&)> on_datagram;
  std::mutex mutex;
  std::vector<std::string> heard;
  std::vector<absl::Status> errors;
};

std::unique_ptr<DatagramServer> StartEcho(EchoServer* handler, std::string network = "udp",
                                          std::string address = "127.0.0.1:0") {
  ServerOptions options;
  options.network = std::move(network);
  options.address = std::move(address);
  options.num_loops = 1;
  auto server = DatagramServer::Create(handler, options);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(*server) : nullptr;
}

TEST(DatagramClientTest, SendsAndHearsItsPeerInOrderAndRepliesToIt) {
  for (const char* family : {"udp4", "udp6"}) {
    SCOPED_TRACE(family);
    EchoServer echo;
    auto server = StartEcho(&echo, family,
                            absl::StrContains(family, "6") ? "[::1]:0" : "127.0.0.1:0");
    ASSERT_NE(server, nullptr);
    Running running(server.get());
    Collector collector;
    DatagramClientOptions options;
    options.network = family;
    auto client = Dial(&collector, server->ListenAddress().ToString(), options);
    ASSERT_TRUE(client.ok()) << client.status();
    EXPECT_EQ((*client)->PeerAddress().ToString(), server->ListenAddress().ToString());
    EXPECT_NE((*client)->LocalAddress().port(), 0);
    std::vector<std::string> sent;
    for (int i = 0; i < 200; ++i) {
      sent.push_back(absl::StrCat(i, ":", std::string(static_cast<size_t>(i % 50) * 20, 'd')));
      ASSERT_TRUE((*client)->Send(sent.back()).ok());
      if (i % 20 == 19) {  // In windows, so that no buffer on the way overflows.
        ASSERT_TRUE(WaitFor([&] { return collector.heard_count() == static_cast<size_t>(i + 1); }));
      }
    }
    {
      std::lock_guard<std::mutex> lock(collector.mutex);
      EXPECT_EQ(collector.heard, sent);
    }
    // The server sends to the client's address; the client's reply goes back to it.
    ASSERT_TRUE(server->SendTo("ping", (*client)->LocalAddress()).ok());
    ASSERT_TRUE(WaitFor([&] {
      std::lock_guard<std::mutex> lock(echo.mutex);
      return echo.pongs.size() == 1;
    }));
    {
      std::lock_guard<std::mutex> lock(echo.mutex);
      EXPECT_EQ(echo.pongs[0], (*client)->LocalAddress().ToString());
    }
    ASSERT_TRUE(WaitFor([&] { return (*client)->Stats().sent == 201; }));
    DatagramLoopStats stats = (*client)->Stats();
    EXPECT_EQ(stats.received, 201u);
    EXPECT_EQ(stats.icmp_errors + stats.send_refused + stats.kernel_drops, 0u);
    (*client)->Stop();
    EXPECT_TRUE(absl::IsFailedPrecondition((*client)->Send("late")));
  }
}

// Nothing listens on the port: each datagram comes back as an ICMP port unreachable, and each
// reaches OnSendError once, even those a send took from the socket on the way (and the
// datagram that send carried still goes).
TEST(DatagramClientTest, EachPortUnreachableReachesOnSendErrorOnce) {
  int probe = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  InetAddress any = InetAddress::Loopback(0);
  ASSERT_EQ(::bind(probe, any.sockaddr(), any.length()), 0);
  sockaddr_storage bound{};
  socklen_t length = sizeof bound;
  ::getsockname(probe, reinterpret_cast<sockaddr*>(&bound), &length);
  const InetAddress closed = InetAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&bound), length);
  ::close(probe);  // Nothing listens there now.

  Collector collector;
  auto client = Dial(&collector, closed.ToString());
  ASSERT_TRUE(client.ok()) << client.status();
  constexpr int kSends = 5;
  for (int i = 0; i < kSends; ++i) {
    ASSERT_TRUE((*client)->Send(absl::StrCat("anyone there? ", i)).ok());
  }
  ASSERT_TRUE(WaitFor([&] { return (*client)->Stats().icmp_errors == kSends; }))
      << (*client)->Stats().icmp_errors;
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // Nothing more follows.
  DatagramLoopStats stats = (*client)->Stats();
  EXPECT_EQ(stats.icmp_errors, static_cast<uint64_t>(kSends));
  EXPECT_EQ(stats.sent, static_cast<uint64_t>(kSends));
  EXPECT_EQ(stats.send_refused, 0u);
  std::lock_guard<std::mutex> lock(collector.mutex);
  ASSERT_EQ(collector.errors.size(), static_cast<size_t>(kSends));
  for (const absl::Status& error : collector.errors) {
    EXPECT_TRUE(absl::IsUnavailable(error)) << error;
    EXPECT_TRUE(absl::StrContains(error.message(), "Connection refused")) << error;
  }
}

// A client on a server's loop (a relay's shape): both on one thread, stopped off it while the
// loop runs on.
TEST(DatagramClientTest, RunsOnAServersLoopAndLeavesIt) {
  EchoServer echo;
  auto server = StartEcho(&echo);
  ASSERT_NE(server, nullptr);
  Running running(server.get());
  EchoServer other;
  auto upstream = StartEcho(&other);
  ASSERT_NE(upstream, nullptr);
  Running upstream_running(upstream.get());
  Collector collector;
  std::atomic<bool> on_servers_loop{true};
  collector.on_datagram = [&](Datagram& datagram) {
    if (!server->Loop(0)->IsInLoopThread()) on_servers_loop = false;
    EXPECT_EQ(&datagram.loop, server->Loop(0).get());
  };
  DatagramClientOptions options;
  options.loop = server->Loop(0);
  auto client = Dial(&collector, upstream->ListenAddress().ToString(), options);
  ASSERT_TRUE(client.ok()) << client.status();
  for (int i = 0; i < 50; ++i) ASSERT_TRUE((*client)->Send(absl::StrCat("via ", i)).ok());
  ASSERT_TRUE(WaitFor([&] { return collector.heard_count() == 50; }));
  EXPECT_TRUE(on_servers_loop);
  client->reset();  // Off the loop: returns once the client has left it.
  // The server's loop serves on.
  Collector direct;
  auto check = Dial(&direct, server->ListenAddress().ToString());
  ASSERT_TRUE(check.ok());
  ASSERT_TRUE((*check)->Send("still here").ok());
  ASSERT_TRUE(WaitFor([&] { return direct.heard_count() == 1; }));
}

// A client destroyed in its own callback: nothing more is called, nothing is touched after.
TEST(DatagramClientTest, DestroyedInItsOwnCallback) {
  EchoServer echo;
  auto server = StartEcho(&echo);
  ASSERT_NE(server, nullptr);
  Running running(server.get());
  Collector collector;
  std::unique_ptr<DatagramClient> client;
  std::atomic<int> calls{0};
  std::atomic<bool> destroyed{false};
  collector.on_datagram = [&](Datagram&) {
    if (++calls == 3) {
      client.reset();
      destroyed = true;  // After the reset: this thread may read `client` once it sees this.
    }
  };
  auto dialed = Dial(&collector, server->ListenAddress().ToString());
  ASSERT_TRUE(dialed.ok());
  client = std::move(*dialed);
  DatagramClient* raw = client.get();
  // Ten in one go, sent on the client's loop before any echo can come back (this thread must
  // not touch the client once it may be gone): the echoes arrive together, so the reset
  // falls inside a batch.
  std::shared_ptr<EventLoop> loop = raw->loop();  // Ours: the client's may go at any time.
  ASSERT_TRUE(loop->QueueInLoop([raw] {
    for (int i = 0; i < 10; ++i) EXPECT_TRUE(raw->Send(absl::StrCat(i)).ok());
  }));
  ASSERT_TRUE(WaitFor([&] { return destroyed.load(); }));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(calls.load(), 3);
  EXPECT_EQ(client, nullptr);
}

// A Unix datagram client (bound by the kernel to an abstract name of its own) whose server
// does not read: its sends wait for room, polled (a connected socket's poll follows its peer's
// queue, so the wait does not spin), then all arrive in order; the server can answer it.
TEST(DatagramClientTest, AUnixClientWaitsForRoomAtItsPeerAndHearsItsAnswers) {
  const std::string name = testing::AbstractSocketName("udg-client");
  absl::StatusOr<SocketAddress> address = SocketAddress::Unix(name);
  ASSERT_TRUE(address.ok());
  int server = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_storage storage;
  socklen_t length = address->Fill(&storage);
  ASSERT_EQ(::bind(server, reinterpret_cast<sockaddr*>(&storage), length), 0);
  timeval timeout{5, 0};
  ::setsockopt(server, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);

  Collector collector;
  DatagramClientOptions options;
  options.network = "unixgram";
  auto client = Dial(&collector, name, options);
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_TRUE((*client)->LocalAddress().is_abstract()) << (*client)->LocalAddress().ToString();
  // More than the kernel holds for the server on any setting (its queue, the client's buffer).
  constexpr int kCount = 600;
  auto message = [](int i) { return absl::StrCat(i, ":", std::string(1000, 'c')); };
  for (int i = 0; i < kCount; ++i) ASSERT_TRUE((*client)->Send(message(i)).ok());
  ASSERT_TRUE(WaitFor([&] { return (*client)->Stats().blocked_flushes > 0; }));
  const uint64_t before = (*client)->Stats().send_calls;
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_LT((*client)->Stats().send_calls - before, 3u) << "the wait spins";
  char buffer[2048];
  sockaddr_storage from{};
  socklen_t from_length = 0;
  for (int i = 0; i < kCount; ++i) {
    from_length = sizeof from;
    ssize_t n = ::recvfrom(server, buffer, sizeof buffer, 0, reinterpret_cast<sockaddr*>(&from),
                           &from_length);
    ASSERT_GT(n, 0) << i;
    ASSERT_EQ(std::string(buffer, static_cast<size_t>(n)), message(i));
  }
  EXPECT_EQ(SocketAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&from), from_length).ToString(),
            (*client)->LocalAddress().ToString());
  ASSERT_EQ(::sendto(server, "ping", 4, 0, reinterpret_cast<sockaddr*>(&from), from_length), 4);
  ssize_t n = ::recv(server, buffer, sizeof buffer, 0);
  EXPECT_EQ(std::string(buffer, n > 0 ? static_cast<size_t>(n) : 0), "pong");
  // The loop counts a send once sendmmsg returns, which may be after the peer has read.
  ASSERT_TRUE(WaitFor([&] { return (*client)->Stats().sent == kCount + 1; }));
  DatagramLoopStats stats = (*client)->Stats();
  EXPECT_EQ(stats.queue_refused + stats.send_refused + stats.dropped_at_stop, 0u);
  ::close(server);
}

// Two gev endpoints over Unix datagram sockets, each with more for the other than the kernel
// holds: both read on while they wait, so neither waits for ever.
TEST(DatagramClientTest, AUnixClientFloodingAUnixServerDeadlocksNeither) {
  EchoServer echo;
  auto server = StartEcho(&echo, "unixgram", testing::AbstractSocketName("udg-flood"));
  ASSERT_NE(server, nullptr);
  Running running(server.get());
  Collector collector;
  DatagramClientOptions options;
  options.network = "unixgram";
  auto client = Dial(&collector, server->ListenSocketAddress().ToString(), options);
  ASSERT_TRUE(client.ok()) << client.status();
  constexpr int kCount = 2000;
  DatagramClient* raw = client->get();
  ASSERT_TRUE(raw->loop()->QueueInLoop([raw] {
    for (int i = 0; i < kCount; ++i) {
      EXPECT_TRUE(raw->Send(absl::StrCat(i, ":", std::string(500, 'f'))).ok());
    }
  }));
  ASSERT_TRUE(WaitFor([&] { return collector.heard_count() == kCount; }))
      << collector.heard_count() << " of " << kCount;
  std::lock_guard<std::mutex> lock(collector.mutex);
  for (int i = 0; i < kCount; ++i) {
    ASSERT_EQ(collector.heard[static_cast<size_t>(i)], absl::StrCat(i, ":", std::string(500, 'f')));
  }
}

// The kernel refusing a datagram itself (too long for IPv4) is the send's error, reported
// once, not also as an ICMP error from the error queue.
TEST(DatagramClientTest, ALocalRefusalIsReportedOnce) {
  EchoServer echo;
  auto server = StartEcho(&echo);
  ASSERT_NE(server, nullptr);
  Running running(server.get());
  Collector collector;
  auto client = Dial(&collector, server->ListenAddress().ToString());
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE((*client)->Send(std::string(65520, 'x')).ok());  // IPv4 carries 65,507.
  ASSERT_TRUE((*client)->Send("after").ok());
  ASSERT_TRUE(WaitFor([&] { return collector.heard_count() == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  DatagramLoopStats stats = (*client)->Stats();
  EXPECT_EQ(stats.send_refused, 1u);
  EXPECT_EQ(stats.icmp_errors, 0u);
  std::lock_guard<std::mutex> lock(collector.mutex);
  ASSERT_EQ(collector.errors.size(), 1u);
  EXPECT_TRUE(absl::IsInvalidArgument(collector.errors[0])) << collector.errors[0];
}

// A client on a server's loop whose server stops first: the client's Stop returns (its loop is
// gone), and a client cannot be made on a loop that has finished.
TEST(DatagramClientTest, AClientOutlivingItsSharedLoopStopsAtOnce) {
  EchoServer echo;
  auto server = StartEcho(&echo);
  ASSERT_NE(server, nullptr);
  EchoServer other;
  auto upstream = StartEcho(&other);
  ASSERT_NE(upstream, nullptr);
  Running upstream_running(upstream.get());
  Collector collector;
  DatagramClientOptions options;
  options.loop = server->Loop(0);
  std::unique_ptr<DatagramClient> client;
  {
    Running running(server.get());
    auto dialed = Dial(&collector, upstream->ListenAddress().ToString(), options);
    ASSERT_TRUE(dialed.ok()) << dialed.status();
    client = std::move(*dialed);
    ASSERT_TRUE(client->Send("one").ok());
    ASSERT_TRUE(WaitFor([&] { return collector.heard_count() == 1; }));
  }  // The server stops; its loop finishes.
  const auto start = std::chrono::steady_clock::now();
  client->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  EXPECT_TRUE(absl::IsFailedPrecondition(client->Send("late")));
  EXPECT_TRUE(absl::IsFailedPrecondition(
      Dial(&collector, upstream->ListenAddress().ToString(), options).status()));
}

TEST(DatagramClientTest, BadNetworksAndAddressesAreRefused) {
  Collector collector;
  DatagramClientOptions options;
  options.network = "tcp";
  EXPECT_TRUE(absl::IsInvalidArgument(Dial(&collector, "127.0.0.1:53", options).status()));
  options.network = "udp4";
  EXPECT_TRUE(absl::IsInvalidArgument(Dial(&collector, "[::1]:53", options).status()));
  options.network = "udp";
  EXPECT_FALSE(Dial(&collector, "no port", options).ok());
  options.local_address = "[::1]:0";
  EXPECT_TRUE(absl::IsInvalidArgument(Dial(&collector, "127.0.0.1:53", options).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(Dial(nullptr, "127.0.0.1:53").status()));
  options.network = "unixgram";
  options.local_address = "";
  EXPECT_TRUE(absl::IsInvalidArgument(Dial(&collector, "", options).status()));
  // Nobody bound there.
  EXPECT_TRUE(absl::IsUnavailable(
      Dial(&collector, testing::AbstractSocketName("nobody"), options).status()));
}

}  // namespace
}  // namespace gev

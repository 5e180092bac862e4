#include "server/datagram_server.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "net/testing/loopback_client.h"
#include "net/testing/socket_paths.h"
#include "server/testing/running_datagram_server.h"
#include "net/datagram_io.h"

namespace gev {
namespace {

// A blocking UDP socket on the loopback address of `family`, with a receive timeout.
class Peer {
 public:
  explicit Peer(int family = AF_INET, int receive_timeout_ms = 5000) {
    fd_ = ::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    InetAddress any = InetAddress::Loopback(0, family);
    EXPECT_EQ(::bind(fd_, any.sockaddr(), any.length()), 0);
    timeval timeout{receive_timeout_ms / 1000, (receive_timeout_ms % 1000) * 1000};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  }
  ~Peer() { ::close(fd_); }
  bool SendTo(const InetAddress& to, std::string_view bytes) const {
    return ::sendto(fd_, bytes.data(), bytes.size(), 0, to.sockaddr(), to.length()) ==
           static_cast<ssize_t>(bytes.size());
  }
  // The next datagram, or "<none>" after the timeout.
  std::string Receive() const {
    std::string buffer(70000, '\0');
    ssize_t n = ::recv(fd_, buffer.data(), buffer.size(), 0);
    if (n < 0) return "<none>";
    buffer.resize(static_cast<size_t>(n));
    return buffer;
  }
  uint16_t port() const {
    sockaddr_storage storage{};
    socklen_t length = sizeof storage;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&storage), &length);
    return InetAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&storage), length).port();
  }
  int fd() const { return fd_; }

 private:
  int fd_;
};

using Running = testing::RunningDatagramServer;

// Echoes (without a copy) unless told otherwise by the datagram's first word.
class EchoHandler : public DatagramHandler {
 public:
  void OnLoopStart(EventLoop&, size_t loop_index) override {
    std::lock_guard<std::mutex> lock(mutex);
    loops_started.insert(loop_index);
  }
  Reply OnDatagram(Datagram& datagram) override {
    {
      std::lock_guard<std::mutex> lock(mutex);
      loops_used.insert(datagram.loop_index);
    }
    while (hold.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::string_view payload = datagram.payload;
    if (payload == "silence") return {};
    if (payload == "owned") return std::string("an owned reply");
    if (payload == "view") {
      view_storage = absl::StrCat("a view ", ++views);
      return Reply::View(view_storage);
    }
    if (payload == "half") return Reply::FromBuffer(2);
    if (payload == "huge") return std::string(65520, 'h');  // More than IPv4 carries.
    return Reply::FromBuffer(payload.size());
  }
  void OnTruncated(Datagram& datagram, size_t length) override {
    std::lock_guard<std::mutex> lock(mutex);
    truncated.emplace_back(datagram.payload.size(), length);
  }
  void OnSendError(const InetAddress& peer, const absl::Status& error) override {
    std::lock_guard<std::mutex> lock(mutex);
    send_errors.push_back(absl::StrCat(peer.port(), " ", error.ToString()));
  }

  std::mutex mutex;
  std::set<size_t> loops_started;
  std::set<size_t> loops_used;
  std::vector<std::pair<size_t, size_t>> truncated;
  std::vector<std::string> send_errors;
  std::atomic<bool> hold{false};
  std::string view_storage;
  int views = 0;
};

absl::StatusOr<std::unique_ptr<DatagramServer>> Make(EchoHandler* handler, int loops,
                                                     DatagramOptions options = {},
                                                     std::string network = "udp",
                                                     std::string address = "127.0.0.1:0") {
  ServerOptions server_options;
  server_options.network = std::move(network);
  server_options.address = std::move(address);
  server_options.num_loops = loops;
  return DatagramServer::Create(handler, server_options, options);
}

// Up to 10 s: a busy machine under a sanitizer is slow.
bool WaitFor(const std::function<bool()>& done) { return testing::WaitFor(done, 10000); }

TEST(DatagramServerTest, EchoesEveryDatagramToItsPeerOnOneAndTwoLoops) {
  for (int loops : {1, 2}) {
    EchoHandler handler;
    auto server = Make(&handler, loops);
    ASSERT_TRUE(server.ok()) << server.status();
    Running running(server->get());
    std::vector<std::unique_ptr<Peer>> peers;
    for (int i = 0; i < 64; ++i) peers.push_back(std::make_unique<Peer>());
    for (int round = 0; round < 10; ++round) {
      for (size_t i = 0; i < peers.size(); ++i) {
        std::string message(1 + (i * 37 + static_cast<size_t>(round) * 101) % 1400,
                            static_cast<char>('a' + (i + static_cast<size_t>(round)) % 26));
        ASSERT_TRUE(peers[i]->SendTo((*server)->ListenAddress(), message));
        ASSERT_EQ(peers[i]->Receive(), message) << loops << " loops, peer " << i;
      }
    }
    // The loop counts a flush once sendmmsg returns, which may be after the peer has read.
    ASSERT_TRUE(WaitFor([&] { return (*server)->Stats().Total().sent == 640; }));
    DatagramLoopStats total = (*server)->Stats().Total();
    EXPECT_EQ(total.received, 640u);
    EXPECT_EQ(total.bytes_received, total.bytes_sent);
    EXPECT_EQ(total.truncated + total.kernel_drops + total.send_refused + total.queue_refused, 0u);
    std::lock_guard<std::mutex> lock(handler.mutex);
    EXPECT_EQ(handler.loops_started.size(), static_cast<size_t>(loops));
    // 64 peers over two SO_REUSEPORT sockets: the kernel's hash gives each socket some.
    EXPECT_EQ(handler.loops_used.size(), static_cast<size_t>(loops));
  }
}

// Datagrams that wait together are read with one recvmmsg per batch and answered with one
// sendmmsg per batch: 128 datagrams (as many as the socket's default buffer surely holds) in
// three receive calls and three send calls.
TEST(DatagramServerTest, ABurstIsReadAndAnsweredInBatches) {
  EchoHandler handler;
  DatagramOptions options;
  options.batch = 64;
  auto server = Make(&handler, 1, options);
  ASSERT_TRUE(server.ok()) << server.status();
  Running running(server->get());
  Peer peer;
  // The first datagram holds the loop while the rest queue in the socket.
  handler.hold = true;
  ASSERT_TRUE(peer.SendTo((*server)->ListenAddress(), "first"));
  ASSERT_TRUE(WaitFor([&] { return (*server)->Stats().Total().receive_calls == 1; }));
  constexpr int kBurst = 127;
  for (int i = 0; i < kBurst; ++i) {
    ASSERT_TRUE(peer.SendTo((*server)->ListenAddress(), absl::StrCat(i)));
  }
  handler.hold = false;
  EXPECT_EQ(peer.Receive(), "first");
  for (int i = 0; i < kBurst; ++i) ASSERT_EQ(peer.Receive(), absl::StrCat(i));
  ASSERT_TRUE(WaitFor([&] { return (*server)->Stats().Total().sent == 128; }));
  DatagramLoopStats total = (*server)->Stats().Total();
  EXPECT_EQ(total.received, 128u);
  EXPECT_EQ(total.sent, 128u);
  EXPECT_EQ(total.receive_calls, 3u);  // "first", then 64 + 63.
  EXPECT_EQ(total.send_calls, 3u);
  EXPECT_EQ(total.kernel_drops, 0u);
}

// A burst from one peer of one size is answered with GSO: the run of replies leaves as one
// message, and the peer (without GRO) still gets every datagram, whole and in order. Off, the
// same replies go singly.
TEST(DatagramServerTest, ARunOfRepliesToOnePeerLeavesAsOneGsoMessage) {
  for (bool gso : {true, false}) {
    SCOPED_TRACE(gso ? "gso" : "no gso");
    EchoHandler handler;
    DatagramOptions options;
    options.gso = gso;
    auto server = Make(&handler, 1, options);
    ASSERT_TRUE(server.ok()) << server.status();
    Running running(server->get());
    Peer peer;
    handler.hold = true;
    ASSERT_TRUE(peer.SendTo((*server)->ListenAddress(), "first"));
    ASSERT_TRUE(WaitFor([&] { return (*server)->Stats().Total().receive_calls == 1; }));
    constexpr int kBurst = 60;
    std::vector<std::string> burst;
    for (int i = 0; i < kBurst; ++i) {
      burst.push_back(absl::StrCat(i + 100, ":", std::string(1100, static_cast<char>('a' + i % 26))));
      ASSERT_TRUE(peer.SendTo((*server)->ListenAddress(), burst.back()));
    }
    handler.hold = false;
    EXPECT_EQ(peer.Receive(), "first");
    for (int i = 0; i < kBurst; ++i) ASSERT_EQ(peer.Receive(), burst[static_cast<size_t>(i)]) << i;
    ASSERT_TRUE(WaitFor([&] { return (*server)->Stats().Total().sent == kBurst + 1; }));
    DatagramLoopStats total = (*server)->Stats().Total();
    EXPECT_EQ(total.gso_messages, gso ? 1u : 0u);
    EXPECT_EQ(total.gso_refusals, 0u);
    EXPECT_EQ(total.send_calls, 2u);
  }
}

// With GRO, a peer's GSO run arrives as one buffer and the handler still sees each datagram.
TEST(DatagramServerTest, WithGroARunFromAGsoPeerIsSplitBackIntoDatagrams) {
  EchoHandler handler;
  DatagramOptions options;
  options.gro = true;
  options.batch = 8;
  auto server = Make(&handler, 1, options);
  ASSERT_TRUE(server.ok()) << server.status();
  Running running(server->get());
  Peer peer;
  sockaddr_storage to{};
  std::memcpy(&to, (*server)->ListenAddress().sockaddr(), (*server)->ListenAddress().length());
  DatagramWriter writer(1 << 20);
  writer.set_gso(true);
  std::vector<std::string> run;
  for (int i = 0; i < 40; ++i) run.push_back(absl::StrCat(i + 100, std::string(1300, 'r')));
  for (const std::string& bytes : run) {
    ASSERT_TRUE(writer.Queue(&to, (*server)->ListenAddress().length(), bytes).ok());
  }
  ASSERT_EQ(writer.Flush(peer.fd()).sent, run.size());
  ASSERT_EQ(writer.gso_messages(), 1u);
  for (size_t i = 0; i < run.size(); ++i) ASSERT_EQ(peer.Receive(), run[i]) << i;
  ASSERT_TRUE(WaitFor([&] { return (*server)->Stats().Total().sent == run.size(); }));
  DatagramLoopStats total = (*server)->Stats().Total();
  EXPECT_EQ(total.received, run.size());
  EXPECT_EQ(total.receive_calls, 1u);  // 40 datagrams in one read of a batch of 8.
  EXPECT_EQ(total.gro_reads, 1u);
  EXPECT_EQ(total.gso_messages, 1u);  // And answered as one message.
}

TEST(DatagramServerTest, EachKindOfReplyAndNoneGoOut) {
  EchoHandler handler;
  auto server = Make(&handler, 1);
  ASSERT_TRUE(server.ok()) << server.status();
  Running running(server->get());
  Peer peer;
  const InetAddress& to = (*server)->ListenAddress();
  ASSERT_TRUE(peer.SendTo(to, "owned"));
  EXPECT_EQ(peer.Receive(), "an owned reply");
  ASSERT_TRUE(peer.SendTo(to, "silence"));
  ASSERT_TRUE(peer.SendTo(to, "half"));
  EXPECT_EQ(peer.Receive(), "ha");  // Nothing came for "silence".
  // Views of storage the handler rewrites on its next call, three in one batch (they wait
  // while the loop is held): each reply as it was.
  const uint64_t calls = (*server)->Stats().Total().receive_calls;  // Counted before replying.
  handler.hold = true;
  ASSERT_TRUE(peer.SendTo(to, "held"));
  ASSERT_TRUE(WaitFor([&] { return (*server)->Stats().Total().receive_calls == calls + 1; }));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(peer.SendTo(to, "view"));
  handler.hold = false;
  EXPECT_EQ(peer.Receive(), "held");
  for (int i = 1; i <= 3; ++i) EXPECT_EQ(peer.Receive(), absl::StrCat("a view ", i));
  EXPECT_EQ((*server)->Stats().Total().receive_calls, calls + 2);  // The three views in one.
}

TEST(DatagramServerTest, ADatagramLongerThanMaxDatagramIsReportedNotAnswered) {
  EchoHandler handler;
  DatagramOptions options;
  options.max_datagram = 512;
  auto server = Make(&handler, 1, options);
  ASSERT_TRUE(server.ok()) << server.status();
  Running running(server->get());
  Peer peer;
  ASSERT_TRUE(peer.SendTo((*server)->ListenAddress(), std::string(2000, 't')));
  ASSERT_TRUE(peer.SendTo((*server)->ListenAddress(), std::string(512, 'k')));
  EXPECT_EQ(peer.Receive(), std::string(512, 'k'));  // Only the one that fit.
  EXPECT_EQ((*server)->Stats().Total().truncated, 1u);  // Counted before the later datagram.
  std::lock_guard<std::mutex> lock(handler.mutex);
  ASSERT_EQ(handler.truncated.size(), 1u);
  EXPECT_EQ(handler.truncated[0], std::make_pair(size_t{512}, size_t{2000}));
}

TEST(DatagramServerTest, SixtyFourKilobyteDatagramsOverIPv4AndIPv6) {
  for (const char* network : {"udp4", "udp6"}) {
    EchoHandler handler;
    DatagramOptions options;
    options.max_datagram = 65527;
    options.batch = 4;
    const bool v6 = std::string(network) == "udp6";
    auto server = Make(&handler, 2, options, network, v6 ? "[::1]:0" : "127.0.0.1:0");
    ASSERT_TRUE(server.ok()) << server.status();
    Running running(server->get());
    Peer peer(v6 ? AF_INET6 : AF_INET);
    std::string big(v6 ? 65527 : 65507, '\0');
    for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7 + i / 251);
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(peer.SendTo((*server)->ListenAddress(), big));
      EXPECT_TRUE(peer.Receive() == big) << network;
    }
  }
}

// A reply the kernel refuses reaches OnSendError with its peer and is counted; the server
// answers the next datagram as before.
TEST(DatagramServerTest, ARefusedReplyIsReportedAndServingGoesOn) {
  EchoHandler handler;
  auto server = Make(&handler, 1);
  ASSERT_TRUE(server.ok()) << server.status();
  Running running(server->get());
  Peer peer;
  ASSERT_TRUE(peer.SendTo((*server)->ListenAddress(), "huge"));
  ASSERT_TRUE(peer.SendTo((*server)->ListenAddress(), "after"));
  EXPECT_EQ(peer.Receive(), "after");
  ASSERT_TRUE(WaitFor([&] { return (*server)->Stats().Total().send_refused == 1; }));
  std::lock_guard<std::mutex> lock(handler.mutex);
  ASSERT_EQ(handler.send_errors.size(), 1u);
  EXPECT_EQ(handler.send_errors[0].rfind(absl::StrCat(peer.port(), " INVALID_ARGUMENT"), 0), 0u)
      << handler.send_errors[0];
}

// Datagrams the kernel drops while the loop is busy (its receive buffer full) are counted:
// every datagram sent is either received or counted as dropped.
TEST(DatagramServerTest, DatagramsTheKernelDropsAreCounted) {
  EchoHandler handler;
  auto server = Make(&handler, 1);
  ASSERT_TRUE(server.ok()) << server.status();
  Running running(server->get());
  Peer peer;
  handler.hold = true;
  ASSERT_TRUE(peer.SendTo((*server)->ListenAddress(), "first"));
  ASSERT_TRUE(WaitFor([&] { return (*server)->Stats().Total().receive_calls == 1; }));
  constexpr uint64_t kFlood = 5000;  // Far past what the socket's receive buffer holds.
  for (uint64_t i = 0; i < kFlood; ++i) ASSERT_TRUE(peer.SendTo((*server)->ListenAddress(), "x"));
  handler.hold = false;
  // The kernel stamps each queued datagram with the drop count of its moment, so the final
  // count comes with a datagram queued after every drop: markers are sent (each may itself
  // be dropped while the socket is still full) until the counts add up.
  uint64_t markers = 0;
  bool added_up = false;
  for (int attempt = 0; attempt < 50 && !added_up; ++attempt) {
    ASSERT_TRUE(peer.SendTo((*server)->ListenAddress(), "marker"));
    ++markers;
    // Up to 200 ms for this marker to be read (or counted) before the next.
    for (int wait = 0; wait < 100 && !added_up; ++wait) {
      DatagramLoopStats total = (*server)->Stats().Total();
      added_up = total.received + total.kernel_drops == kFlood + 1 + markers;
      if (!added_up) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  EXPECT_TRUE(added_up) << (*server)->Stats().Total().received << " received, "
                        << (*server)->Stats().Total().kernel_drops << " dropped, "
                        << kFlood + 1 + markers << " sent";
  EXPECT_GT((*server)->Stats().Total().kernel_drops, 0u);
}

TEST(DatagramServerTest, SendToFromAnyThreadAndNotAfterStop) {
  EchoHandler handler;
  auto server = NewDatagramServer(&handler, Address("127.0.0.1:0"), NumLoops(2));
  ASSERT_TRUE(server.ok()) << server.status();
  Peer peer;
  const InetAddress to = InetAddress::Loopback(peer.port());
  {
    Running running(server->get());
    std::vector<std::thread> senders;
    for (int t = 0; t < 4; ++t) {
      senders.emplace_back([&, t] {
        for (int i = 0; i < 25; ++i) {
          EXPECT_TRUE((*server)->SendTo(absl::StrCat(t, ":", i), to, static_cast<size_t>(t)).ok());
        }
      });
    }
    for (std::thread& sender : senders) sender.join();
    std::set<std::string> got;
    for (int i = 0; i < 100; ++i) got.insert(peer.Receive());
    EXPECT_EQ(got.size(), 100u);
    EXPECT_EQ(got.count("<none>"), 0u);
    EXPECT_TRUE(absl::IsInvalidArgument((*server)->SendTo(std::string(70000, 'b'), to)));
  }
  EXPECT_TRUE(absl::IsFailedPrecondition((*server)->SendTo("late", to)));
}

// A Unix datagram socket bound to `address`, blocking, with a receive timeout.
int UnixPeer(const std::string& address, bool nonblocking = false) {
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
  if (!address.empty()) {
    absl::StatusOr<SocketAddress> bound = SocketAddress::Unix(address);
    EXPECT_TRUE(bound.ok());
    sockaddr_storage storage;
    socklen_t length = bound->Fill(&storage);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&storage), length), 0) << strerror(errno);
  }
  timeval timeout{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  return fd;
}

bool UnixSendTo(int fd, const SocketAddress& to, std::string_view bytes) {
  sockaddr_storage storage;
  socklen_t length = to.Fill(&storage);
  return ::sendto(fd, bytes.data(), bytes.size(), 0, reinterpret_cast<sockaddr*>(&storage),
                  length) == static_cast<ssize_t>(bytes.size());
}

// Sends `count` copies of `bytes` from non-blocking `fd`, waiting 1 ms whenever the server's
// queue is full, for up to 20,000 tries; how many went.
int SendWaitingForRoom(int fd, const SocketAddress& to, const std::string& bytes, int count) {
  int sent = 0;
  for (int tries = 0; tries < 20000 && sent < count; ++tries) {
    if (UnixSendTo(fd, to, bytes)) {
      ++sent;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  return sent;
}

std::string UnixReceive(int fd) {
  char buffer[4096];
  ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
  return n < 0 ? "<none>" : std::string(buffer, static_cast<size_t>(n));
}

class PathRecorder : public EchoHandler {
 public:
  Reply OnDatagram(Datagram& datagram) override {
    {
      std::lock_guard<std::mutex> lock(mutex);
      peer_paths.emplace_back(datagram.peer_path);
      families.push_back(datagram.peer.family());
    }
    return EchoHandler::OnDatagram(datagram);
  }
  std::vector<std::string> peer_paths;
  std::vector<int> families;
};

// Over a Unix datagram socket (a path or an abstract name): a bound sender gets its answers,
// its name reaches the handler, SendTo reaches a path; an unbound sender's answer cannot go
// anywhere and is reported; the socket file goes with the server.
TEST(DatagramServerTest, UnixDatagramSocketsAnswerBoundSendersAndReportUnboundOnes) {
  for (const std::string& address :
       {testing::SocketPath("gev-udg"), testing::AbstractSocketName("udg")}) {
    SCOPED_TRACE(address);
    PathRecorder handler;
    {
      auto server = Make(&handler, 1, {}, "unixgram", address);
      ASSERT_TRUE(server.ok()) << server.status();
      EXPECT_EQ((*server)->ListenSocketAddress().ToString(), address);
      EXPECT_EQ((*server)->ListenAddress().family(), AF_UNIX);
      // A second server on the same live name is refused.
      EchoHandler other;
      EXPECT_FALSE(Make(&other, 1, {}, "unixgram", address).ok());
      Running running(server->get());
      const std::string peer_name = testing::AbstractSocketName("udg-peer");
      int peer = UnixPeer(peer_name);
      const SocketAddress& to = (*server)->ListenSocketAddress();
      for (int i = 0; i < 50; ++i) {
        std::string message = absl::StrCat("unix ", i, std::string(static_cast<size_t>(i) * 7, 'u'));
        ASSERT_TRUE(UnixSendTo(peer, to, message));
        ASSERT_EQ(UnixReceive(peer), message);
      }
      ASSERT_TRUE((*server)->SendTo("from the server", *SocketAddress::Unix(peer_name)).ok());
      EXPECT_EQ(UnixReceive(peer), "from the server");
      EXPECT_TRUE(absl::IsInvalidArgument((*server)->SendTo("x", InetAddress::Loopback(9))));
      int unbound = UnixPeer("");
      ASSERT_TRUE(UnixSendTo(unbound, to, "no way back"));
      ASSERT_TRUE(WaitFor([&] { return (*server)->Stats().Total().send_refused == 1; }));
      EXPECT_EQ((*server)->Stats().Total().send_calls, 51u);  // Refused without trying.
      {
        std::lock_guard<std::mutex> lock(handler.mutex);
        ASSERT_EQ(handler.peer_paths.size(), 51u);
        EXPECT_EQ(handler.peer_paths[0], std::string(1, '\0') + peer_name.substr(1));
        EXPECT_EQ(handler.peer_paths[50], "");  // The unbound sender.
        EXPECT_EQ(handler.families[0], AF_UNIX);
        ASSERT_EQ(handler.send_errors.size(), 1u);
        EXPECT_TRUE(absl::StrContains(handler.send_errors[0], "not bound")) << handler.send_errors[0];
      }
      ::close(peer);
      ::close(unbound);
    }
    if (address[0] == '/') {
      struct stat file {};
      EXPECT_NE(::lstat(address.c_str(), &file), 0) << "the socket file outlived the server";
      // A file left by a socket that is gone is taken over.
      int stale = UnixPeer(address);
      ::close(stale);
      ASSERT_EQ(::lstat(address.c_str(), &file), 0);
      EchoHandler again;
      auto successor = Make(&again, 1, {}, "unixgram", address);
      EXPECT_TRUE(successor.ok()) << successor.status();
    }
  }
}

// A receiver that does not read fills its queue: the server's replies wait (copied, in order),
// reading pauses (its own queue fills and the sender is refused for a while), and once the
// receiver reads every reply arrives, none lost. On an unconnected Unix socket the wait is a
// timer's: the kernel cannot say when the receiver has room.
TEST(DatagramServerTest, ABlockedServerWaitsForRoomThenSendsEverythingInOrder) {
  EchoHandler handler;
  const std::string address = testing::AbstractSocketName("udg-blocked");
  auto server = Make(&handler, 1, {}, "unixgram", address);
  ASSERT_TRUE(server.ok()) << server.status();
  Running running(server->get());
  int peer = UnixPeer(testing::AbstractSocketName("udg-slow"), /*nonblocking=*/true);
  constexpr int kCount = 300;
  auto message = [](int i) { return absl::StrCat(i, ":", std::string(static_cast<size_t>(200 + i % 300), 'b')); };
  int sent = 0;
  int received = 0;
  bool blocked = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  char buffer[4096];
  while (received < kCount && std::chrono::steady_clock::now() < deadline) {
    while (sent < kCount && UnixSendTo(peer, (*server)->ListenSocketAddress(), message(sent))) ++sent;
    if (!blocked) {
      // Read nothing until the server has found its replies blocked.
      blocked = (*server)->Stats().Total().blocked_flushes > 0;
      if (blocked) {
        // Nor for 50 ms after: the server waits without spinning. (A poll for writability
        // would wake it at once, again and again, each time to a send the kernel refuses;
        // the timer tries about six times.)
        const uint64_t before = (*server)->Stats().Total().send_calls;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        EXPECT_LT((*server)->Stats().Total().send_calls - before, 20u);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    ssize_t n = ::recv(peer, buffer, sizeof buffer, MSG_DONTWAIT);
    if (n < 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    ASSERT_EQ(std::string(buffer, static_cast<size_t>(n)), message(received)) << received;
    ++received;
  }
  EXPECT_TRUE(blocked);
  EXPECT_EQ(received, kCount);
  ASSERT_TRUE(WaitFor([&] { return (*server)->Stats().Total().sent == kCount; }));
  DatagramLoopStats total = (*server)->Stats().Total();
  EXPECT_EQ(total.received, static_cast<uint64_t>(kCount));
  EXPECT_EQ(total.queue_refused + total.send_refused + total.kernel_drops, 0u);
  EXPECT_GE(total.blocked_flushes, 1u);
  ::close(peer);
}

// One Unix receiver that reads nothing holds the others' replies up for a second at most: then
// what waits for it is dropped, counted and reported, and the rest go.
TEST(DatagramServerTest, AUnixReceiverThatReadsNothingIsDroppedAfterASecond) {
  EchoHandler handler;
  auto server = Make(&handler, 1, {}, "unixgram", testing::AbstractSocketName("udg-stall"));
  ASSERT_TRUE(server.ok()) << server.status();
  Running running(server->get());
  const SocketAddress& to = (*server)->ListenSocketAddress();
  int deaf = UnixPeer(testing::AbstractSocketName("udg-deaf"), /*nonblocking=*/true);
  // More than the kernel holds for it (its queue, the server's send buffer) on any setting.
  SendWaitingForRoom(deaf, to, std::string(1000, 'd'), 600);
  ASSERT_TRUE(WaitFor([&] { return (*server)->Stats().Total().blocked_flushes > 0; }));
  int other = UnixPeer(testing::AbstractSocketName("udg-other"));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(UnixSendTo(other, to, absl::StrCat("other ", i)));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(UnixReceive(other), absl::StrCat("other ", i));
  EXPECT_GT((*server)->Stats().Total().send_refused, 0u);
  {
    std::lock_guard<std::mutex> lock(handler.mutex);
    ASSERT_FALSE(handler.send_errors.empty());
    EXPECT_TRUE(absl::StrContains(handler.send_errors[0], "read nothing")) << handler.send_errors[0];
  }
  ::close(deaf);
  ::close(other);
}

// After a drop, the next receiver that reads nothing gets a second of its own, even when its
// very first reply finds it full and nothing has flowed since the drop.
TEST(DatagramServerTest, EachUnixReceiverThatReadsNothingGetsASecondOfItsOwn) {
  EchoHandler handler;
  auto server = Make(&handler, 1, {}, "unixgram", testing::AbstractSocketName("udg-stall2"));
  ASSERT_TRUE(server.ok()) << server.status();
  Running running(server->get());
  const SocketAddress& to = (*server)->ListenSocketAddress();
  auto errors = [&] {
    std::lock_guard<std::mutex> lock(handler.mutex);
    return handler.send_errors.size();
  };
  int first = UnixPeer(testing::AbstractSocketName("udg-first"), /*nonblocking=*/true);
  SendWaitingForRoom(first, to, std::string(1000, 'f'), 100);
  ASSERT_TRUE(WaitFor([&] { return errors() == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // Nothing flows meanwhile.
  // A receiver already full, so that the server's first reply to it is refused at once.
  const std::string second_name = testing::AbstractSocketName("udg-second");
  int second = UnixPeer(second_name, /*nonblocking=*/true);
  int filler = UnixPeer("", /*nonblocking=*/true);
  const SocketAddress second_address = *SocketAddress::Unix(second_name);
  while (UnixSendTo(filler, second_address, "filler")) {
  }
  const auto started = std::chrono::steady_clock::now();
  SendWaitingForRoom(second, to, std::string(1000, 'f'), 100);
  ASSERT_TRUE(WaitFor([&] { return errors() == 2; }));
  EXPECT_GE(std::chrono::steady_clock::now() - started, std::chrono::milliseconds(900));
  ::close(first);
  ::close(second);
  ::close(filler);
}

TEST(DatagramServerTest, BadNetworksAndAddressesAreRefused) {
  EchoHandler handler;
  EXPECT_TRUE(absl::IsInvalidArgument(Make(&handler, 1, {}, "tcp").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(Make(&handler, 1, {}, "udp4", "[::1]:0").status()));
  EXPECT_FALSE(Make(&handler, 1, {}, "udp6", "127.0.0.1:0").ok());
  DatagramOptions zero_batch;
  zero_batch.batch = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(Make(&handler, 1, zero_batch).status()));
  // A port in use without SO_REUSEPORT on both sides.
  Peer taken;
  EXPECT_FALSE(Make(&handler, 1, {}, "udp", absl::StrCat("127.0.0.1:", taken.port())).ok());
}

}  // namespace
}  // namespace gev

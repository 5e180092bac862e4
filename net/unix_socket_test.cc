// Unix domain sockets: addresses, listeners (stale files replaced, live ones kept), peer
// credentials.

#include <sys/socket.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "eventloop/event_loop.h"
#include "gtest/gtest.h"
#include "net/acceptor.h"
#include "net/socket_address.h"
#include "net/socket_ops.h"
#include "net/testing/loopback_client.h"
#include "net/testing/socket_paths.h"

namespace gev {
namespace {

using testing::SocketPath;

bool Exists(const std::string& path) {
  struct stat file {};
  return ::lstat(path.c_str(), &file) == 0;
}

TEST(SocketAddressTest, ParsesPathsAbstractNamesAndTcp) {
  absl::StatusOr<SocketAddress> path = SocketAddress::Parse("unix", "/run/app.sock");
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_TRUE(path->is_unix());
  EXPECT_FALSE(path->is_abstract());
  EXPECT_EQ(path->family(), AF_UNIX);
  EXPECT_EQ(path->ToString(), "/run/app.sock");
  EXPECT_EQ(path->port(), 0);
  EXPECT_EQ(path->inet().family(), AF_UNIX);
  EXPECT_EQ(path->inet().ToString(), "unix");

  absl::StatusOr<SocketAddress> tcp = SocketAddress::Parse("tcp", "127.0.0.1:80");
  ASSERT_TRUE(tcp.ok());
  EXPECT_FALSE(tcp->is_unix());
  EXPECT_EQ(tcp->ToString(), "127.0.0.1:80");
  EXPECT_EQ(tcp->port(), 80);

  EXPECT_FALSE(SocketAddress::Parse("unix", "").ok());
  EXPECT_FALSE(SocketAddress::Parse("unix", "@").ok());
  EXPECT_FALSE(SocketAddress::Parse("unix", std::string(108, 'a')).ok());
  EXPECT_TRUE(SocketAddress::Parse("unix", std::string(107, 'a')).ok());
  EXPECT_FALSE(SocketAddress::Parse("udp", "127.0.0.1:80").ok());
#ifdef __linux__
  absl::StatusOr<SocketAddress> abstract = SocketAddress::Parse("unix", "@gev-name");
  ASSERT_TRUE(abstract.ok());
  EXPECT_TRUE(abstract->is_abstract());
  EXPECT_EQ(abstract->ToString(), "@gev-name");
#else
  EXPECT_FALSE(SocketAddress::Parse("unix", "@gev-name").ok());
#endif
}

TEST(SocketAddressTest, SockaddrRoundTrips) {
  std::vector<std::string> names = {"/tmp/x.sock", "relative.sock"};
#ifdef __linux__
  names.push_back("@abstract-name");
#endif
  for (const std::string& name : names) {
    absl::StatusOr<SocketAddress> address = SocketAddress::Unix(name);
    ASSERT_TRUE(address.ok()) << name;
    sockaddr_storage storage;
    socklen_t length = address->Fill(&storage);
    SocketAddress back = SocketAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&storage), length);
    EXPECT_TRUE(back.is_unix());
    EXPECT_EQ(back.ToString(), name);
  }
  sockaddr unnamed{};
  unnamed.sa_family = AF_UNIX;
  SocketAddress peer = SocketAddress::FromSockaddr(&unnamed, sizeof(sa_family_t));
  EXPECT_TRUE(peer.is_unix());
  EXPECT_EQ(peer.ToString(), "unix");
  InetAddress inet = InetAddress::FromSockaddr(&unnamed, sizeof(sa_family_t));
  EXPECT_EQ(inet.family(), AF_UNIX);
  EXPECT_EQ(inet.port(), 0);
}

// Runs `loop` for `ms` with `acceptor` listening, destroys the acceptor on the loop; returns
// how many connections it accepted.
int AcceptFor(std::unique_ptr<Acceptor>& acceptor, EventLoop* loop, int ms) {
  int accepted = 0;
  acceptor->set_new_connection_callback([&](int fd, const InetAddress& peer) {
    EXPECT_EQ(peer.family(), AF_UNIX);
    EXPECT_EQ(peer.ToString(), "unix");
    ++accepted;
    ::close(fd);
  });
  loop->QueueInLoop([&] { ASSERT_TRUE(acceptor->Listen().ok()); });
  loop->RunAfter(absl::Milliseconds(ms), [&] {
    acceptor.reset();
    loop->Stop();
  });
  loop->Run();
  return accepted;
}

TEST(UnixAcceptorTest, AcceptsAndRemovesItsFile) {
  std::string path = SocketPath("accepts");
  SocketAddress address = *SocketAddress::Unix(path);
  auto loop = *EventLoop::Create();
  auto acceptor = Acceptor::Create(loop.get(), address, /*reuse_port=*/false);
  ASSERT_TRUE(acceptor.ok()) << acceptor.status();
  EXPECT_EQ((*acceptor)->listen_address().ToString(), path);
  EXPECT_TRUE(Exists(path));
  std::vector<int> clients;
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<int> client = sockets::ConnectBlocking(address);
    ASSERT_TRUE(client.ok()) << client.status();
    clients.push_back(*client);
  }
  EXPECT_EQ(AcceptFor(*acceptor, loop.get(), 100), 3);
  EXPECT_FALSE(Exists(path));  // Removed with the acceptor.
  for (int fd : clients) ::close(fd);
}

TEST(UnixAcceptorTest, ReplacesAStaleSocketFileButNotALiveOne) {
  std::string path = SocketPath("stale");
  SocketAddress address = *SocketAddress::Unix(path);
  // A listener that died without unlinking: bound, then closed, its file left behind.
  {
    absl::StatusOr<int> dead = sockets::Listen(address, false);
    ASSERT_TRUE(dead.ok()) << dead.status();
    ::close(*dead);
  }
  ASSERT_TRUE(Exists(path));
  absl::StatusOr<int> live = sockets::Listen(address, false);
  ASSERT_TRUE(live.ok()) << "a stale file must be replaced: " << live.status();

  // The live listener keeps its path: a second bind fails and does not unlink it.
  absl::StatusOr<int> thief = sockets::Listen(address, false);
  ASSERT_FALSE(thief.ok());
  EXPECT_NE(thief.status().message().find("live listener"), absl::string_view::npos)
      << thief.status();
  ASSERT_TRUE(Exists(path));
  absl::StatusOr<int> client = sockets::ConnectBlocking(address);
  ASSERT_TRUE(client.ok()) << "the live listener must still be reachable: " << client.status();
  int accepted = ::accept(*live, nullptr, nullptr);
  EXPECT_GE(accepted, 0);
  ::close(accepted);
  ::close(*client);
  ::close(*live);
  ::unlink(path.c_str());
}

// A listener between its bind and its listen refuses connects, as a stale file does: a second
// server binding then waits out the moment (sockets::kStartingListenerGrace, 200 ms; here a
// long grace, so that a slow machine cannot outlast it) and finds the path live, rather than
// unlink it from under the first. With no grace the path is taken.
TEST(UnixAcceptorTest, APathBoundButNotYetListeningIsNotStale) {
  std::string path = SocketPath("late-listen");
  SocketAddress address = *SocketAddress::Unix(path);
  int first = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(first, 0);
  sockaddr_storage storage;
  socklen_t length = address.Fill(&storage);
  ASSERT_EQ(::bind(first, reinterpret_cast<const sockaddr*>(&storage), length), 0);
  absl::StatusOr<int> second = absl::UnknownError("not run");
  std::thread binder(
      [&] { second = sockets::Listen(address, false, SOMAXCONN, absl::Seconds(10)); });
  absl::SleepFor(absl::Milliseconds(50));
  const int listened = ::listen(first, 4);
  binder.join();
  EXPECT_EQ(listened, 0);
  EXPECT_FALSE(second.ok()) << "the path was taken from a listener that had just bound it";
  if (second.ok()) {
    ::close(*second);
  } else {
    EXPECT_NE(second.status().message().find("live listener"), absl::string_view::npos)
        << second.status();
    absl::StatusOr<int> client = sockets::ConnectBlocking(address);
    EXPECT_TRUE(client.ok()) << "the first listener must still be reachable: " << client.status();
    if (client.ok()) ::close(*client);
  }
  ::close(first);

  // The same refusing path with no grace: taken for stale at once.
  int refusing = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(refusing, 0);
  ::unlink(path.c_str());
  ASSERT_EQ(::bind(refusing, reinterpret_cast<const sockaddr*>(&storage), length), 0);
  absl::StatusOr<int> impatient = sockets::Listen(address, false, SOMAXCONN, absl::ZeroDuration());
  EXPECT_TRUE(impatient.ok()) << impatient.status();
  if (impatient.ok()) ::close(*impatient);
  ::close(refusing);
  ::unlink(path.c_str());
}

#ifdef __linux__
// A listener too busy to accept (its backlog full: on Linux a connect says EAGAIN, not
// ECONNREFUSED) is alive: its file is not taken for stale, and a second server does not
// replace it. The BSDs and macOS refuse such a connect, and there a full backlog cannot be
// told from a dead listener (net/socket_ops.cc).
TEST(UnixAcceptorTest, ALiveListenerWithAFullBacklogKeepsItsFile) {
  std::string path = SocketPath("busy");
  SocketAddress address = *SocketAddress::Unix(path);
  absl::StatusOr<int> live = sockets::Listen(address, false, /*backlog=*/1);
  ASSERT_TRUE(live.ok()) << live.status();
  sockaddr_storage storage;
  socklen_t length = address.Fill(&storage);
  std::vector<int> waiting;
  int last_error = 0;
  for (int i = 0; i < 64 && last_error == 0; ++i) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&storage), length) == 0) {
      waiting.push_back(fd);
    } else {
      last_error = errno;
      ::close(fd);
    }
  }
  ASSERT_EQ(last_error, EAGAIN) << "the backlog should have filled";

  absl::StatusOr<int> thief = sockets::Listen(address, false);
  EXPECT_FALSE(thief.ok()) << "a busy listener's file was taken for stale";
  if (thief.ok()) ::close(*thief);
  EXPECT_NE(thief.status().message().find("live listener"), absl::string_view::npos)
      << thief.status();
  // The file is still the live listener's: what waits in its backlog is accepted.
  int accepted = ::accept(*live, nullptr, nullptr);
  EXPECT_GE(accepted, 0) << std::strerror(errno);
  if (accepted >= 0) ::close(accepted);
  absl::StatusOr<int> client = sockets::ConnectBlocking(address);
  EXPECT_TRUE(client.ok()) << "the live listener must still be reachable: " << client.status();
  if (client.ok()) ::close(*client);
  for (int fd : waiting) ::close(fd);
  ::close(*live);
  ::unlink(path.c_str());
}
#endif

TEST(UnixAcceptorTest, RefusesAPathThatIsNotASocket) {
  std::string path = SocketPath("regular");
  int file = ::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  ASSERT_GE(file, 0);
  ::close(file);
  absl::StatusOr<int> listener = sockets::Listen(*SocketAddress::Unix(path), false);
  EXPECT_FALSE(listener.ok());
  EXPECT_TRUE(Exists(path)) << "a regular file must never be deleted";
  ::unlink(path.c_str());
}

TEST(UnixAcceptorTest, RefusesReusePort) {
  absl::StatusOr<int> listener = sockets::Listen(*SocketAddress::Unix(SocketPath("reuse")), true);
  EXPECT_TRUE(absl::IsInvalidArgument(listener.status())) << listener.status();
}

TEST(UnixAcceptorTest, DoesNotRemoveAFileThatReplacedItsOwn) {
  std::string path = SocketPath("replaced");
  SocketAddress address = *SocketAddress::Unix(path);
  auto loop = *EventLoop::Create();
  auto acceptor = Acceptor::Create(loop.get(), address, false);
  ASSERT_TRUE(acceptor.ok()) << acceptor.status();
  // Another server took the path over (an operator removed the file and started it).
  ::unlink(path.c_str());
  absl::StatusOr<int> successor = sockets::Listen(address, false);
  ASSERT_TRUE(successor.ok()) << successor.status();
  acceptor->reset();
  EXPECT_TRUE(Exists(path)) << "the successor's socket file must stay";
  ::close(*successor);
  ::unlink(path.c_str());
}

#ifdef __linux__
TEST(UnixAcceptorTest, AbstractNamesLeaveNoFileAndAreExclusive) {
  std::string name = "@" + gev::testing::UniqueName("gev-test");
  SocketAddress address = *SocketAddress::Unix(name);
  auto loop = *EventLoop::Create();
  auto acceptor = Acceptor::Create(loop.get(), address, false);
  ASSERT_TRUE(acceptor.ok()) << acceptor.status();
  EXPECT_EQ((*acceptor)->listen_address().ToString(), name);
  EXPECT_FALSE(sockets::Listen(address, false).ok());  // Taken while the acceptor lives.
  absl::StatusOr<int> client = sockets::ConnectBlocking(address);
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_EQ(AcceptFor(*acceptor, loop.get(), 100), 1);
  ::close(*client);
  // Released with the listener: the name can be bound again.
  absl::StatusOr<int> again = sockets::Listen(address, false);
  EXPECT_TRUE(again.ok()) << again.status();
  if (again.ok()) ::close(*again);
}
#endif

TEST(UnixSocketTest, PeerCredentialsNameThisProcess) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  absl::StatusOr<PeerCredentials> credentials = sockets::GetPeerCredentials(pair[0]);
  ASSERT_TRUE(credentials.ok()) << credentials.status();
  EXPECT_EQ(credentials->uid, ::getuid());
  EXPECT_EQ(credentials->gid, ::getgid());
#ifdef __linux__
  EXPECT_EQ(credentials->pid, ::getpid());
#endif
  ::close(pair[0]);
  ::close(pair[1]);
}

}  // namespace
}  // namespace gev

#include "net/connector.h"

#include <dirent.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "eventloop/event_loop.h"
#include "gtest/gtest.h"
#include "net/socket_address.h"
#include "net/socket_ops.h"

namespace gev {
namespace {

int OpenDescriptors() {
  int count = 0;
  DIR* directory = ::opendir("/proc/self/fd");
  if (directory == nullptr) return -1;
  while (::readdir(directory) != nullptr) ++count;
  ::closedir(directory);
  return count;
}

// Runs one attempt on a fresh loop until it is decided (or `limit` passes).
absl::StatusOr<int> ConnectOnce(const SocketAddress& address, absl::Duration timeout,
                                absl::Duration limit = absl::Seconds(5)) {
  auto loop = *EventLoop::Create();
  std::optional<absl::StatusOr<int>> outcome;
  std::shared_ptr<Connector> connector;
  loop->QueueInLoop([&] {
    connector = Connector::Start(loop.get(), address, timeout, [&](absl::StatusOr<int> fd) {
      EXPECT_TRUE(loop->IsInLoopThread());
      EXPECT_FALSE(outcome.has_value()) << "the callback ran twice";
      outcome = std::move(fd);
      loop->Stop();
    });
  });
  loop->RunAfter(limit, [&] { loop->Stop(); });
  loop->Run();
  if (!outcome.has_value()) return absl::InternalError("the attempt was never decided");
  return *outcome;
}

// A port nothing listens on: a listener's, closed.
InetAddress ClosedPort() {
  absl::StatusOr<int> fd = sockets::Listen(InetAddress::Loopback(0), false);
  InetAddress address = *sockets::LocalAddress(*fd);
  ::close(*fd);
  return address;
}

TEST(ConnectorTest, ConnectsOverTcp) {
  absl::StatusOr<int> listener = sockets::Listen(InetAddress::Loopback(0), false);
  ASSERT_TRUE(listener.ok());
  InetAddress address = *sockets::LocalAddress(*listener);
  absl::StatusOr<int> fd = ConnectOnce(address, absl::Seconds(2));
  ASSERT_TRUE(fd.ok()) << fd.status();
  EXPECT_EQ(sockets::PeerAddress(*fd)->ToString(), address.ToString());
  ::close(*fd);
  ::close(*listener);
}

TEST(ConnectorTest, RefusedIsUnavailable) {
  absl::StatusOr<int> fd = ConnectOnce(ClosedPort(), absl::Seconds(2));
  ASSERT_FALSE(fd.ok());
  EXPECT_TRUE(absl::IsUnavailable(fd.status())) << fd.status();
  EXPECT_NE(fd.status().message().find("refused"), absl::string_view::npos) << fd.status();
}

TEST(ConnectorTest, TimesOutAgainstAListenerWhoseBacklogIsFull) {
  // Backlog 0 takes one connection into its accept queue; nothing accepts, so later SYNs are
  // dropped and those connects hang.
  absl::StatusOr<int> listener = sockets::Listen(InetAddress::Loopback(0), false, 0);
  ASSERT_TRUE(listener.ok());
  InetAddress address = *sockets::LocalAddress(*listener);
  std::vector<int> fillers;
  for (int i = 0; i < 4; ++i) {
    absl::StatusOr<int> fd = sockets::CreateNonBlockingSocket(AF_INET);
    ASSERT_TRUE(fd.ok());
    (void)::connect(*fd, address.sockaddr(), address.length());
    fillers.push_back(*fd);
  }
  ::usleep(100 * 1000);  // Let the handshakes that can complete do so.
  absl::StatusOr<int> fd = ConnectOnce(address, absl::Milliseconds(300));
  ASSERT_FALSE(fd.ok());
  EXPECT_TRUE(absl::IsDeadlineExceeded(fd.status())) << fd.status();
  for (int filler : fillers) ::close(filler);
  ::close(*listener);
}

TEST(ConnectorTest, BadAddressFamilyFailsWithAReason) {
  SocketAddress unset;  // Family 0.
  absl::StatusOr<int> fd = ConnectOnce(unset, absl::Seconds(1));
  EXPECT_FALSE(fd.ok());
}

TEST(ConnectorTest, ConnectsOverUnixAndReportsAMissingPath) {
  std::string path = "/tmp/gev-connector-" + std::to_string(::getpid()) + ".sock";
  ::unlink(path.c_str());
  SocketAddress address = *SocketAddress::Unix(path);
  absl::StatusOr<int> missing = ConnectOnce(address, absl::Seconds(1));
  EXPECT_TRUE(absl::IsNotFound(missing.status())) << missing.status();
  absl::StatusOr<int> listener = sockets::Listen(address, false);
  ASSERT_TRUE(listener.ok()) << listener.status();
  absl::StatusOr<int> fd = ConnectOnce(address, absl::Seconds(1));
  ASSERT_TRUE(fd.ok()) << fd.status();
  ::close(*fd);
  ::close(*listener);
  // Nothing listens on the file now: refused.
  absl::StatusOr<int> stale = ConnectOnce(address, absl::Seconds(1));
  EXPECT_TRUE(absl::IsUnavailable(stale.status())) << stale.status();
  ::unlink(path.c_str());
}

TEST(ConnectorTest, CancelRunsNoCallbackAndLeaksNoDescriptor) {
  absl::StatusOr<int> listener = sockets::Listen(InetAddress::Loopback(0), false, 0);
  ASSERT_TRUE(listener.ok());
  InetAddress address = *sockets::LocalAddress(*listener);
  int before = OpenDescriptors();
  {
    auto loop = *EventLoop::Create();
    int callbacks = 0;
    std::vector<std::shared_ptr<Connector>> attempts;
    loop->QueueInLoop([&] {
      // Cancelled at once, after an accepted connect, and after a refused one.
      for (int i = 0; i < 3; ++i) {
        attempts.push_back(Connector::Start(loop.get(), address, absl::Seconds(1),
                                            [&](absl::StatusOr<int>) { ++callbacks; }));
      }
      attempts.push_back(Connector::Start(loop.get(), ClosedPort(), absl::Seconds(1),
                                          [&](absl::StatusOr<int>) { ++callbacks; }));
      attempts[0]->Cancel();
    });
    loop->RunAfter(absl::Milliseconds(50), [&] {
      for (auto& attempt : attempts) attempt->Cancel();
    });
    loop->RunAfter(absl::Milliseconds(100), [&] {
      attempts.clear();
      loop->Stop();
    });
    loop->Run();
    // attempts[1..3] may have been decided before the 50 ms cancel; those ran their callback.
    EXPECT_LE(callbacks, 3);
  }
  EXPECT_EQ(OpenDescriptors(), before);
  ::close(*listener);
}

TEST(ConnectorTest, CancelBeforeTheDecisionRunsNoCallback) {
  // Backlog full: the attempt hangs until cancelled.
  absl::StatusOr<int> listener = sockets::Listen(InetAddress::Loopback(0), false, 0);
  ASSERT_TRUE(listener.ok());
  InetAddress address = *sockets::LocalAddress(*listener);
  std::vector<int> fillers;
  for (int i = 0; i < 4; ++i) {
    absl::StatusOr<int> fd = sockets::CreateNonBlockingSocket(AF_INET);
    (void)::connect(*fd, address.sockaddr(), address.length());
    fillers.push_back(*fd);
  }
  ::usleep(100 * 1000);
  auto loop = *EventLoop::Create();
  bool called = false;
  std::shared_ptr<Connector> attempt;
  loop->QueueInLoop([&] {
    attempt = Connector::Start(loop.get(), address, absl::Milliseconds(100),
                               [&](absl::StatusOr<int>) { called = true; });
  });
  loop->RunAfter(absl::Milliseconds(30), [&] { attempt->Cancel(); });
  loop->RunAfter(absl::Milliseconds(250), [&] { loop->Stop(); });  // Past the timeout.
  loop->Run();
  EXPECT_FALSE(called);
  for (int filler : fillers) ::close(filler);
  ::close(*listener);
}

}  // namespace
}  // namespace gev

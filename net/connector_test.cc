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
#include "net/testing/loopback_client.h"

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

InetAddress ClosedPort() { return ::gev::testing::UnusedLoopbackAddress(); }

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
  ::gev::testing::FullBacklogListener busy;
  absl::StatusOr<int> fd = ConnectOnce(busy.address(), absl::Milliseconds(300));
  ASSERT_FALSE(fd.ok());
  EXPECT_TRUE(absl::IsDeadlineExceeded(fd.status())) << fd.status();
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
  ::gev::testing::FullBacklogListener busy;  // Attempts to it hang until cancelled.
  std::string path = "/tmp/gev-cancel-" + std::to_string(::getpid()) + ".sock";
  ::unlink(path.c_str());
  SocketAddress unix_address = *SocketAddress::Unix(path);
  absl::StatusOr<int> unix_listener = sockets::Listen(unix_address, false);
  ASSERT_TRUE(unix_listener.ok()) << unix_listener.status();
  // Counted with a loop alive throughout: libkqueue opens descriptors of its own with the
  // first kqueue of the process and closes them with the last.
  auto loop = *EventLoop::Create();
  int before = OpenDescriptors();
  int hanging_callbacks = 0;
  int refused_callbacks = 0;
  int unix_callbacks = 0;
  {
    std::vector<std::shared_ptr<Connector>> attempts;
    loop->QueueInLoop([&] {
      // A Unix connect succeeds inside Start(): the success is queued, then cancelled.
      attempts.push_back(Connector::Start(loop.get(), unix_address, absl::Seconds(1),
                                          [&](absl::StatusOr<int>) { ++unix_callbacks; }));
      attempts.back()->Cancel();
      // Hanging attempts: cancelled at once, and after 50 ms.
      for (int i = 0; i < 3; ++i) {
        attempts.push_back(Connector::Start(loop.get(), busy.address(), absl::Seconds(1),
                                            [&](absl::StatusOr<int>) { ++hanging_callbacks; }));
      }
      attempts[1]->Cancel();
      // Refused at once: decided (and its callback run) before the cancel at 50 ms.
      attempts.push_back(Connector::Start(loop.get(), ClosedPort(), absl::Seconds(1),
                                          [&](absl::StatusOr<int> fd) {
                                            EXPECT_FALSE(fd.ok());
                                            ++refused_callbacks;
                                          }));
    });
    loop->RunAfter(absl::Milliseconds(50), [&] {
      for (auto& attempt : attempts) attempt->Cancel();
    });
    loop->RunAfter(absl::Milliseconds(100), [&] {
      attempts.clear();
      loop->Stop();
    });
    loop->Run();
  }
  EXPECT_EQ(unix_callbacks, 0);
  EXPECT_EQ(hanging_callbacks, 0);
  EXPECT_EQ(refused_callbacks, 1);
  EXPECT_EQ(OpenDescriptors(), before);
  // The listener's queue holds the cancelled Unix connection, closed by the connector.
  int accepted = ::accept(*unix_listener, nullptr, nullptr);
  ASSERT_GE(accepted, 0);
  char byte;
  EXPECT_EQ(::read(accepted, &byte, 1), 0) << "the cancelled connection was left open";
  ::close(accepted);
  ::close(*unix_listener);
  ::unlink(path.c_str());
}

TEST(ConnectorTest, CancelBeforeTheDecisionRunsNoCallback) {
  ::gev::testing::FullBacklogListener busy;  // The attempt hangs until cancelled.
  InetAddress address = busy.address();
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
}

}  // namespace
}  // namespace gev

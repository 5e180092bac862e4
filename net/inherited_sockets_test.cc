#include "net/inherited_sockets.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "net/socket_ops.h"
#include "net/testing/socket_paths.h"

namespace gev {
namespace {

// An environment of our own, as getenv would give it.
struct Environment {
  std::map<std::string, std::string> values;
  std::function<const char*(const char*)> Lookup() const {
    return [this](const char* name) -> const char* {
      auto found = values.find(name);
      return found == values.end() ? nullptr : found->second.c_str();
    };
  }
};

// `fds` moved to consecutive descriptors from `first` (far above what the test uses), as
// systemd lays them out from 3; their close-on-exec flag cleared, as an exec leaves it.
int Lay(const std::vector<int>& fds, int first) {
  for (size_t i = 0; i < fds.size(); ++i) {
    EXPECT_EQ(::dup2(fds[i], first + static_cast<int>(i)), first + static_cast<int>(i));
    ::close(fds[i]);
  }
  return first;
}

TEST(InheritedSocketsTest, DescribesWhatEachDescriptorIs) {
  absl::StatusOr<int> tcp = sockets::Listen(InetAddress::Loopback(0), false);
  ASSERT_TRUE(tcp.ok());
  int udp = ::socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  const std::string path = testing::SocketPath("gev-inherited");
  absl::StatusOr<int> unix_listener = sockets::Listen(*SocketAddress::Unix(path), false);
  ASSERT_TRUE(unix_listener.ok()) << unix_listener.status();
  int unbound_stream = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  absl::StatusOr<InheritedSocket> described = DescribeSocket(*tcp);
  ASSERT_TRUE(described.ok()) << described.status();
  EXPECT_EQ(described->type, SOCK_STREAM);
  EXPECT_TRUE(described->listening);
  EXPECT_EQ(described->address.ToString(), sockets::LocalSocketAddress(*tcp)->ToString());
  EXPECT_NE(described->address.port(), 0);

  described = DescribeSocket(udp);
  ASSERT_TRUE(described.ok()) << described.status();
  EXPECT_EQ(described->type, SOCK_DGRAM);
  EXPECT_FALSE(described->listening);
  EXPECT_EQ(described->address.family(), AF_INET6);

  described = DescribeSocket(*unix_listener);
  ASSERT_TRUE(described.ok()) << described.status();
  EXPECT_TRUE(described->listening);
  EXPECT_EQ(described->address.ToString(), path);

  described = DescribeSocket(unbound_stream);
  ASSERT_TRUE(described.ok()) << described.status();
  EXPECT_FALSE(described->listening);

  int file = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  EXPECT_TRUE(absl::IsFailedPrecondition(DescribeSocket(file).status()));
  ::close(file);
  EXPECT_TRUE(absl::IsFailedPrecondition(DescribeSocket(file).status()));  // Closed now.
  for (int fd : {*tcp, udp, *unix_listener, unbound_stream}) ::close(fd);
  ::unlink(path.c_str());
}

TEST(InheritedSocketsTest, TakesTheSocketsMeantForThisProcessWithTheirNames) {
  absl::StatusOr<int> web = sockets::Listen(InetAddress::Loopback(0), false);
  ASSERT_TRUE(web.ok());
  int dns = ::socket(AF_INET, SOCK_DGRAM, 0);  // Inherited across exec: no close-on-exec.
  const int first = Lay({*web, dns}, 600);
  Environment environment;
  environment.values = {{"LISTEN_PID", std::to_string(::getpid())},
                        {"LISTEN_FDS", "2"},
                        {"LISTEN_FDNAMES", "web:dns"}};
  absl::StatusOr<std::vector<InheritedSocket>> taken =
      SocketsFromEnvironment(environment.Lookup(), first, ::getpid());
  ASSERT_TRUE(taken.ok()) << taken.status();
  ASSERT_EQ(taken->size(), 2u);
  EXPECT_EQ((*taken)[0].fd, first);
  EXPECT_EQ((*taken)[0].name, "web");
  EXPECT_TRUE((*taken)[0].listening);
  EXPECT_EQ((*taken)[1].name, "dns");
  EXPECT_EQ((*taken)[1].type, SOCK_DGRAM);
  for (const InheritedSocket& socket : *taken) {
    EXPECT_NE(::fcntl(socket.fd, F_GETFD) & FD_CLOEXEC, 0) << socket.name;
  }

  // Without names, each is "unknown".
  environment.values.erase("LISTEN_FDNAMES");
  taken = SocketsFromEnvironment(environment.Lookup(), first, ::getpid());
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_EQ((*taken)[1].name, "unknown");

  // Meant for another process (a parent's variables left behind), or for none: nothing taken.
  environment.values["LISTEN_PID"] = std::to_string(::getpid() + 1);
  taken = SocketsFromEnvironment(environment.Lookup(), first, ::getpid());
  ASSERT_TRUE(taken.ok());
  EXPECT_TRUE(taken->empty());
  environment.values.erase("LISTEN_PID");
  taken = SocketsFromEnvironment(environment.Lookup(), first, ::getpid());
  ASSERT_TRUE(taken.ok());
  EXPECT_TRUE(taken->empty());
  ::close(first);
  ::close(first + 1);
}

TEST(InheritedSocketsTest, RefusesMalformedVariablesAndDescriptorsThatAreNoSockets) {
  int file = ::open("/dev/null", O_RDONLY);
  const int first = Lay({file}, 610);
  const std::string pid = std::to_string(::getpid());
  auto taken = [&](std::map<std::string, std::string> values) {
    Environment environment;
    environment.values = std::move(values);
    return SocketsFromEnvironment(environment.Lookup(), first, ::getpid()).status();
  };
  EXPECT_TRUE(absl::IsInvalidArgument(taken({{"LISTEN_PID", "me"}, {"LISTEN_FDS", "1"}})));
  EXPECT_TRUE(absl::IsInvalidArgument(taken({{"LISTEN_PID", pid}})));
  EXPECT_TRUE(absl::IsInvalidArgument(taken({{"LISTEN_PID", pid}, {"LISTEN_FDS", "two"}})));
  EXPECT_TRUE(absl::IsInvalidArgument(taken({{"LISTEN_PID", pid}, {"LISTEN_FDS", "-1"}})));
  EXPECT_TRUE(absl::IsInvalidArgument(taken({{"LISTEN_PID", pid}, {"LISTEN_FDS", "100000"}})));
  EXPECT_TRUE(absl::IsInvalidArgument(
      taken({{"LISTEN_PID", pid}, {"LISTEN_FDS", "1"}, {"LISTEN_FDNAMES", "a:b"}})));
  // /dev/null where a socket should be.
  EXPECT_TRUE(absl::IsFailedPrecondition(taken({{"LISTEN_PID", pid}, {"LISTEN_FDS", "1"}})));
  ::close(first);
  EXPECT_TRUE(absl::IsFailedPrecondition(taken({{"LISTEN_PID", pid}, {"LISTEN_FDS", "1"}})));
  EXPECT_TRUE(taken({{"LISTEN_PID", pid}, {"LISTEN_FDS", "0"}}).ok());
}

// The process's own variables are read once and unset, so a child does not take the sockets.
TEST(InheritedSocketsTest, TakeSystemdSocketsUnsetsTheVariables) {
  ::setenv("LISTEN_PID", std::to_string(::getpid() + 1).c_str(), 1);  // Not ours: none taken.
  ::setenv("LISTEN_FDS", "1", 1);
  ::setenv("LISTEN_FDNAMES", "x", 1);
  absl::StatusOr<std::vector<InheritedSocket>> taken = TakeSystemdSockets();
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_TRUE(taken->empty());
  EXPECT_EQ(::getenv("LISTEN_PID"), nullptr);
  EXPECT_EQ(::getenv("LISTEN_FDS"), nullptr);
  EXPECT_EQ(::getenv("LISTEN_FDNAMES"), nullptr);
}

}  // namespace
}  // namespace gev

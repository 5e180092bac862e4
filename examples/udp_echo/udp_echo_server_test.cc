// End to end: the udp_echo_server binary on port 0, one loop and two, IPv4 and dual stack.

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "examples/testing/subprocess.h"
#include "gtest/gtest.h"

namespace gev::examples {
namespace {

// Sends `message` from a fresh socket of `family` to `port` on loopback; the echo, or "".
std::string RoundTrip(int family, uint16_t port, const std::string& message) {
  int fd = ::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  timeval timeout{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  InetAddress to = InetAddress::Loopback(port, family);
  std::string echo(70000, '\0');
  ssize_t n = -1;
  if (::sendto(fd, message.data(), message.size(), 0, to.sockaddr(), to.length()) ==
      static_cast<ssize_t>(message.size())) {
    n = ::recv(fd, echo.data(), echo.size(), 0);
  }
  ::close(fd);
  echo.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return echo;
}

TEST(UdpEchoServerTest, EchoesDatagramsOnOneAndTwoLoopsAndExitsCleanly) {
  for (const char* loops : {"--loops=1", "--loops=2"}) {
    auto server = ExampleProcess::Start("examples/udp_echo/udp_echo_server", {"--port=0", loops});
    ASSERT_TRUE(server.ok()) << server.status();
    for (size_t size : {1, 512, 1472, 9000, 65507}) {
      std::string message(size, '\0');
      for (size_t i = 0; i < size; ++i) message[i] = static_cast<char>(i * 13 + size);
      EXPECT_TRUE(RoundTrip(AF_INET, server->address().port(), message) == message)
          << loops << ", " << size << " bytes";
    }
    EXPECT_EQ(server->Terminate(), 0);
  }
}

TEST(UdpEchoServerTest, Udp6OnTheAnyAddressTakesIPv4AndIPv6) {
  auto server = ExampleProcess::Start("examples/udp_echo/udp_echo_server",
                                      {"--port=0", "--network=udp6", "--loops=2"});
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ(RoundTrip(AF_INET6, server->address().port(), "over IPv6"), "over IPv6");
  EXPECT_EQ(RoundTrip(AF_INET, server->address().port(), "over IPv4"), "over IPv4");
  EXPECT_EQ(server->Terminate(), 0);
}

}  // namespace
}  // namespace gev::examples

// End to end: the echo_server binary, on port 0, in both accept modes.

#include <unistd.h>

#include <string>
#include <vector>

#include "examples/testing/subprocess.h"
#include "gtest/gtest.h"
#include "server/testing/loopback_client.h"

namespace gev::examples {
namespace {

using ::gev::testing::Connect;
using ::gev::testing::Pattern;
using ::gev::testing::ReadExactly;
using ::gev::testing::WriteAll;

class EchoServerTest : public ::testing::TestWithParam<const char*> {};

TEST_P(EchoServerTest, EchoesEveryByteToEveryClientAndExitsCleanly) {
  auto server = ExampleProcess::Start("examples/echo/echo_server",
                                      {"--port=0", "--loops=2", GetParam()});
  ASSERT_TRUE(server.ok()) << server.status();
  std::vector<int> clients;
  for (int i = 0; i < 8; ++i) clients.push_back(Connect(server->address()));
  for (size_t i = 0; i < clients.size(); ++i) {
    ASSERT_GE(clients[i], 0);
    std::string message = Pattern(100000 + i, static_cast<int>(i));
    ASSERT_TRUE(WriteAll(clients[i], message));
    EXPECT_TRUE(ReadExactly(clients[i], message.size()) == message) << "client " << i;
  }
  for (int fd : clients) ::close(fd);
  EXPECT_EQ(server->Terminate(), 0);
}

INSTANTIATE_TEST_SUITE_P(Modes, EchoServerTest,
                         ::testing::Values("--reuseport=false", "--reuseport=true"));

TEST(EchoServerTest, ReportsAPortInUse) {
  auto first = ExampleProcess::Start("examples/echo/echo_server", {"--port=0", "--loops=1"});
  ASSERT_TRUE(first.ok()) << first.status();
  std::string port = "--port=" + std::to_string(first->address().port());
  EXPECT_EQ(RunToCompletion("examples/echo/echo_server", {port, "--loops=1"}), 1);
}

}  // namespace
}  // namespace gev::examples

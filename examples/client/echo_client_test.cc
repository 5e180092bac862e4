// End to end: echo_client finds no server, keeps retrying, connects when the server starts,
// reconnects when it restarts, and exits cleanly.

#include <unistd.h>

#include <string>

#include "examples/testing/subprocess.h"
#include "gtest/gtest.h"
#include "net/testing/loopback_client.h"

namespace gev::examples {
namespace {

// Nothing listens on it until the test starts a server there.
int FreePort() { return ::gev::testing::UnusedLoopbackAddress().port(); }

TEST(EchoClientTest, RetriesUntilTheServerIsUpAndReconnectsAfterARestart) {
  int port = FreePort();
  std::string server_flag = "--server=127.0.0.1:" + std::to_string(port);
  auto client = ExampleProcess::StartClient(
      "examples/client/echo_client",
      {server_flag, "--interval_ms=20", "--initial_delay_ms=20", "--max_delay_ms=200"});
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<std::string> refused = client->WaitForLine("connect failed");
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_NE(refused->find("(retrying)"), std::string::npos) << *refused;
  ASSERT_TRUE(client->WaitForLine("connect failed").ok());  // Still retrying.

  std::string port_flag = "--port=" + std::to_string(port);
  {
    auto server = ExampleProcess::Start("examples/echo/echo_server", {port_flag, "--loops=1"});
    ASSERT_TRUE(server.ok()) << server.status();
    ASSERT_TRUE(client->WaitForLine("connected to").ok());
    absl::StatusOr<std::string> echo = client->WaitForLine("echo: ping");
    ASSERT_TRUE(echo.ok()) << echo.status();
    ASSERT_TRUE(client->WaitForLine("echo: ping").ok());
    EXPECT_EQ(server->Terminate(), 0);
  }
  ASSERT_TRUE(client->WaitForLine("closed:").ok());
  ASSERT_TRUE(client->WaitForLine("connect failed").ok());  // Down again: retrying.

  auto server = ExampleProcess::Start("examples/echo/echo_server", {port_flag, "--loops=1"});
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE(client->WaitForLine("connected to").ok());
  ASSERT_TRUE(client->WaitForLine("echo: ping").ok());
  EXPECT_EQ(client->Terminate(), 0);
  EXPECT_EQ(server->Terminate(), 0);
}

TEST(EchoClientTest, ExitsAfterItsCount) {
  int port = FreePort();
  auto server = ExampleProcess::Start("examples/echo/echo_server",
                                      {"--port=" + std::to_string(port), "--loops=1"});
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ(RunToCompletion("examples/client/echo_client",
                            {"--server=127.0.0.1:" + std::to_string(port), "--interval_ms=5",
                             "--count=5"},
                            30),
            0);
}

}  // namespace
}  // namespace gev::examples

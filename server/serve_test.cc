#include "server/serve.h"

#include <memory>
#include <string>
#include <utility>

#include "gtest/gtest.h"
#include "net/testing/loopback_client.h"
#include "server/server.h"

namespace gev {
namespace {

class Quiet : public Handler {
 public:
  Reply OnMessage(Connection&, RingBuffer& buffer) override {
    return Reply::FromBuffer(buffer.Length());
  }
};

std::unique_ptr<Server> Listening(const std::string& network, const std::string& address) {
  ServerOptions options;
  options.network = network;
  options.address = address;
  options.num_loops = 1;
  static Quiet handler;  // Outlives every server of the test.
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Create(&handler, options);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(*server) : nullptr;
}

TEST(ListeningLineTest, NamesTheAddressAUserCanConnectTo) {
  std::unique_ptr<Server> tcp = Listening("tcp", "127.0.0.1:0");
  ASSERT_NE(tcp, nullptr);
  EXPECT_EQ(ListeningLine(*tcp),
            "listening on 127.0.0.1:" + std::to_string(tcp->ListenAddress().port()));

  std::string path = "/tmp/" + testing::UniqueName("gev-serve") + ".sock";
  std::unique_ptr<Server> unix_path = Listening("unix", path);
  ASSERT_NE(unix_path, nullptr);
  EXPECT_EQ(ListeningLine(*unix_path), "listening on " + path);

#ifdef __linux__
  std::string name = "@" + testing::UniqueName("gev-serve");
  std::unique_ptr<Server> abstract = Listening("unix", name);
  ASSERT_NE(abstract, nullptr);
  EXPECT_EQ(ListeningLine(*abstract), "listening on " + name);
#endif
}

}  // namespace
}  // namespace gev

namespace gev {
namespace {

// Restarting in place hands the listeners over the handoff path: without one it is refused
// before anything is served.
TEST(ServeUntilSignalTest, RestartingNeedsAHandoffPath) {
  std::unique_ptr<Server> server = Listening("tcp", "127.0.0.1:0");
  ASSERT_NE(server, nullptr);
  ServeOptions serve;
  serve.restart_argv = {"/bin/false"};
  EXPECT_EQ(ServeUntilSignal(*server, serve).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gev

// wss://: our client and our server over //tls, with ALPN http/1.1 and permessage-deflate.

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "server/testing/loopback_client.h"
#include "tls/testing/test_certificates.h"
#include "tls/tls.h"
#include "websocket/client.h"
#include "websocket/websocket.h"

namespace gev::websocket {
namespace {

using ::gev::testing::ServerThread;
using ::gev::testing::WaitFor;

class Echo : public Handler {
 public:
  void OnOpen(Socket& socket) override {
    tls::ConnectionInfo info = tls::Info(socket.connection());
    alpn = info.alpn;
    secure = info.tls;
  }
  void OnMessage(Socket& socket, std::string_view message, MessageType type) override {
    EXPECT_TRUE(socket.Send(message, type).ok());
  }
  std::string alpn;  // Loop thread; read after the server stops.
  bool secure = false;
};

class Collect : public Handler {
 public:
  void OnOpen(Socket& socket) override {
    EXPECT_TRUE(socket.Send("over TLS").ok());
    EXPECT_TRUE(socket.Send(std::string(300000, 'w'), MessageType::kBinary).ok());
  }
  void OnMessage(Socket&, std::string_view message, MessageType) override {
    std::lock_guard<std::mutex> lock(mutex);
    messages.emplace_back(message);
  }
  size_t Count() {
    std::lock_guard<std::mutex> lock(mutex);
    return messages.size();
  }
  std::mutex mutex;
  std::vector<std::string> messages;
};

TEST(WssTest, OurClientAndServerSpeakWebSocketOverTls) {
  tls::testing::TestCa ca = tls::testing::TestCa::Create("wss test CA");
  tls::ServerConfig server_config;
  server_config.certificate = ca.Issue("localhost", {"localhost"}, {"127.0.0.1"});
  server_config.alpn = {"http/1.1"};
  auto server_context = tls::ServerContext::Create(server_config);
  ASSERT_TRUE(server_context.ok()) << server_context.status();
  Echo echo;
  Options options;
  options.deflate.enabled = true;
  Service service(&echo, options);
  auto server = NewServer(&service, Address("127.0.0.1:0"), NumLoops(1),
                          WithTransport(tls::ServerTransport(*server_context)));
  ASSERT_TRUE(server.ok()) << server.status();
  auto running = std::make_unique<ServerThread>(server->get());

  tls::ClientConfig client_config;
  client_config.ca_pem = ca.pem();
  client_config.alpn = {"http/1.1"};
  auto client_context = tls::ClientContext::Create(client_config);
  ASSERT_TRUE(client_context.ok()) << client_context.status();
  Collect collect;
  ClientOptions client_options;
  client_options.websocket.deflate.enabled = true;
  client_options.connection.transport = tls::ClientTransport(*client_context);
  auto client = Client::Dial(
      &collect, absl::StrCat("wss://localhost:", (*server)->ListenAddress().port(), "/"),
      client_options);
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE(WaitFor([&] { return collect.Count() == 2; }));
  {
    std::lock_guard<std::mutex> lock(collect.mutex);
    EXPECT_EQ(collect.messages[0], "over TLS");
    EXPECT_EQ(collect.messages[1], std::string(300000, 'w'));
  }
  ASSERT_NE((*client)->socket(), nullptr);
  EXPECT_TRUE((*client)->socket()->compressed());
  (*client)->Stop();
  running.reset();
  EXPECT_TRUE(echo.secure);
  EXPECT_EQ(echo.alpn, "http/1.1");
}

}  // namespace
}  // namespace gev::websocket

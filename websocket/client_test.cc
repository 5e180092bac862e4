#include "websocket/client.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <any>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "server/testing/loopback_client.h"
#include "websocket/websocket.h"

namespace gev::websocket {
namespace {

using ::gev::testing::Pattern;
using ::gev::testing::ServerThread;
using ::gev::testing::WaitFor;

// The server side: echoes, closes on request, refuses /forbidden.
class EchoServer : public Handler {
 public:
  void OnUpgrade(Upgrade& upgrade) override {
    if (upgrade.offer->target == "/forbidden") {
      upgrade.refusal = HandshakeError{"403 Forbidden", "not here"};
    }
    origins.push_back(std::string(upgrade.offer->origin));
  }
  void OnMessage(Socket& socket, std::string_view message, MessageType type) override {
    if (message == "close me") {
      EXPECT_TRUE(socket.Close(4000, "asked").ok());
      return;
    }
    EXPECT_TRUE(socket.Send(message, type).ok());
  }
  void OnClose(Socket&, uint16_t code, std::string_view) override {
    std::lock_guard<std::mutex> lock(mutex);
    codes.push_back(code);
  }
  std::vector<uint16_t> Codes() {
    std::lock_guard<std::mutex> lock(mutex);
    return codes;
  }
  std::mutex mutex;
  std::vector<uint16_t> codes;
  std::vector<std::string> origins;  // Loop thread; read after the server stops.
};

// The client side: records everything, sends what it is told on open.
class Recorder : public Handler {
 public:
  std::vector<std::pair<std::string, MessageType>> to_send;
  void OnOpen(Socket& socket) override {
    opens.fetch_add(1);
    compressed = socket.compressed();
    protocol = socket.protocol();
    for (const auto& [message, type] : to_send) EXPECT_TRUE(socket.Send(message, type).ok());
  }
  void OnMessage(Socket&, std::string_view message, MessageType type) override {
    std::lock_guard<std::mutex> lock(mutex);
    messages.emplace_back(std::string(message), type);
  }
  void OnClose(Socket&, uint16_t code, std::string_view reason) override {
    std::lock_guard<std::mutex> lock(mutex);
    closes.emplace_back(code, std::string(reason));
  }
  size_t MessageCount() {
    std::lock_guard<std::mutex> lock(mutex);
    return messages.size();
  }
  std::vector<std::pair<uint16_t, std::string>> Closes() {
    std::lock_guard<std::mutex> lock(mutex);
    return closes;
  }
  std::atomic<int> opens{0};
  std::atomic<bool> compressed{false};
  std::string protocol;
  std::mutex mutex;
  std::vector<std::pair<std::string, MessageType>> messages;
  std::vector<std::pair<uint16_t, std::string>> closes;
};

struct EchoService {
  explicit EchoService(Options options = {}) : service(&handler, std::move(options)) {
    auto made = NewServer(&service, Address("127.0.0.1:0"), NumLoops(1));
    EXPECT_TRUE(made.ok()) << made.status();
    server = std::move(*made);
    thread = std::make_unique<ServerThread>(server.get());
  }
  std::string Url(const std::string& path = "/") const {
    return absl::StrCat("ws://127.0.0.1:", server->ListenAddress().port(), path);
  }
  EchoServer handler;
  Service service;
  std::unique_ptr<Server> server;
  std::unique_ptr<ServerThread> thread;
};

TEST(WebSocketClientTest, EchoesThroughOurServerWithAndWithoutDeflate) {
  for (bool deflate : {false, true}) {
    Options server_options;
    server_options.deflate.enabled = true;
    server_options.protocols = {"chat"};
    EchoService server(server_options);
    Recorder recorder;
    const std::string big = Pattern(1 << 20, 3);
    recorder.to_send = {{"hello", MessageType::kText},
                        {std::string(100000, 'z'), MessageType::kText},
                        {big, MessageType::kBinary}};
    ClientOptions options;
    options.websocket.deflate.enabled = deflate;
    options.websocket.protocols = {"superchat", "chat"};
    options.headers = {{"Origin", "http://client.example"}};
    auto client = Client::Dial(&recorder, server.Url("/echo?x=1"), options);
    ASSERT_TRUE(client.ok()) << client.status();
    ASSERT_TRUE(WaitFor([&] { return recorder.MessageCount() == 3; }));
    EXPECT_EQ(recorder.compressed.load(), deflate);
    EXPECT_EQ(recorder.protocol, "chat");
    {
      std::lock_guard<std::mutex> lock(recorder.mutex);
      EXPECT_EQ(recorder.messages[0].first, "hello");
      EXPECT_EQ(recorder.messages[1].first, std::string(100000, 'z'));
      EXPECT_TRUE(recorder.messages[2].first == big);
      EXPECT_EQ(recorder.messages[2].second, MessageType::kBinary);
    }
    (*client)->Stop();
    EXPECT_EQ((*client)->socket(), nullptr);
    ASSERT_TRUE(WaitFor([&] { return server.handler.Codes().size() == 1; }));
    EXPECT_EQ(server.handler.Codes()[0], kCloseGoingAway);
    server.thread.reset();
    ASSERT_EQ(server.handler.origins.size(), 1u);
    EXPECT_EQ(server.handler.origins[0], "http://client.example");
  }
}

TEST(WebSocketClientTest, ARefusedUpgradeIsReportedAndNothingOpens) {
  EchoService server;
  Recorder recorder;
  std::mutex mutex;
  std::vector<absl::Status> errors;
  ClientOptions options;
  options.on_handshake_error = [&](const absl::Status& why) {
    std::lock_guard<std::mutex> lock(mutex);
    errors.push_back(why);
  };
  auto client = Client::Dial(&recorder, server.Url("/forbidden"), options);
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE(WaitFor([&] {
    std::lock_guard<std::mutex> lock(mutex);
    return !errors.empty();
  }));
  {
    std::lock_guard<std::mutex> lock(mutex);
    EXPECT_NE(errors[0].message().find("403"), std::string::npos) << errors[0];
  }
  EXPECT_EQ(recorder.opens.load(), 0);
  EXPECT_TRUE(recorder.Closes().empty());
}

TEST(WebSocketClientTest, ReconnectsAfterTheServerClosesAndHearsItsCode) {
  EchoService server;
  Recorder recorder;
  recorder.to_send = {{"close me", MessageType::kText}};
  ClientOptions options;
  options.connection.reconnect.enabled = true;
  options.connection.reconnect.initial_delay = absl::Milliseconds(20);
  auto client = Client::Dial(&recorder, server.Url(), options);
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE(WaitFor([&] { return recorder.opens.load() >= 3; }));
  auto closes = recorder.Closes();
  ASSERT_GE(closes.size(), 2u);
  EXPECT_EQ(closes[0], std::make_pair(uint16_t{4000}, std::string("asked")));
  (*client)->Stop();
}

// A client destroyed inside its own callbacks: in OnMessage, and in OnClose.
TEST(WebSocketClientTest, AClientMayBeDestroyedInsideItsOwnCallbacks) {
  EchoService server;
  for (bool in_close : {false, true}) {
    class Destroyer : public Handler {
     public:
      void OnOpen(Socket& socket) override {
        EXPECT_TRUE(socket.Send(in_close ? "close me" : "echo me").ok());
      }
      void OnMessage(Socket&, std::string_view, MessageType) override {
        if (!in_close) Destroy();
      }
      void OnClose(Socket&, uint16_t, std::string_view) override {
        if (in_close) Destroy();
        closed = true;  // The last the client does with this handler.
      }
      void Destroy() {
        while (!assigned.load()) std::this_thread::yield();  // Dial's caller is storing it.
        client.reset();  // Inside the callback.
        done = true;
      }
      bool in_close = false;
      std::unique_ptr<Client> client;
      std::atomic<bool> assigned{false};
      std::atomic<bool> done{false};
      std::atomic<bool> closed{false};
    } destroyer;
    destroyer.in_close = in_close;
    auto client = Client::Dial(&destroyer, server.Url(), {});
    ASSERT_TRUE(client.ok()) << client.status();
    destroyer.client = std::move(*client);
    destroyer.assigned = true;
    EXPECT_TRUE(WaitFor([&] { return destroyer.done.load(); })) << in_close;
    // OnClose is the handler's last call (after a destruction in OnMessage it still comes).
    EXPECT_TRUE(WaitFor([&] { return destroyer.closed.load(); })) << in_close;
  }
}

// A relay: a server whose every socket dials the echo server with a websocket::Client on that
// socket's own loop (two connections composed on one thread, as a proxy composes them).
// Messages cross both hops in order, some while the upstream is still upgrading; a downstream
// that leaves takes its upstream with it, destroyed inside the server's OnClose (the echo
// server hears 1001); on both of the relay's loops.
class Relay : public Handler {
 public:
  // One downstream socket's upstream side, and the handler of its client. Loop thread only;
  // kept until the test ends, since a handler outlives its client's last OnClose.
  struct Pair : Handler {
    std::shared_ptr<Socket> downstream;
    std::unique_ptr<Client> upstream;
    std::shared_ptr<Socket> up;  // While the upstream is open.
    std::vector<std::pair<std::string, MessageType>> waiting;  // Until it is.
    std::thread::id relay_thread;
    std::atomic<bool> on_relay_thread{false};
    std::atomic<bool> upstream_closed{false};
    void OnOpen(Socket& socket) override {
      on_relay_thread = std::this_thread::get_id() == relay_thread;
      up = socket.shared_from_this();
      for (const auto& [message, type] : waiting) EXPECT_TRUE(up->Send(message, type).ok());
      waiting.clear();
    }
    void OnMessage(Socket&, std::string_view message, MessageType type) override {
      if (downstream != nullptr) {
        EXPECT_TRUE(downstream->Send(message, type).ok());
      }
    }
    void OnClose(Socket&, uint16_t, std::string_view) override {
      up.reset();
      upstream_closed = true;
    }
  };

  explicit Relay(std::string upstream_url) : upstream_url_(std::move(upstream_url)) {}

  void OnOpen(Socket& socket) override {
    auto pair = std::make_shared<Pair>();
    pair->downstream = socket.shared_from_this();
    pair->relay_thread = std::this_thread::get_id();
    ClientOptions options;
    options.connection.loop = socket.connection().shared_loop();
    auto client = Client::Dial(pair.get(), upstream_url_, options);
    ASSERT_TRUE(client.ok()) << client.status();
    pair->upstream = std::move(*client);
    socket.user_data() = pair;
    std::lock_guard<std::mutex> lock(mutex);
    pairs.push_back(pair);
    loops.insert(socket.connection().loop());
  }
  void OnMessage(Socket& socket, std::string_view message, MessageType type) override {
    auto& pair = std::any_cast<std::shared_ptr<Pair>&>(socket.user_data());
    if (pair->up != nullptr) {
      EXPECT_TRUE(pair->up->Send(message, type).ok());
    } else {
      pair->waiting.emplace_back(std::string(message), type);
    }
  }
  void OnClose(Socket& socket, uint16_t, std::string_view) override {
    auto* pair = std::any_cast<std::shared_ptr<Pair>>(&socket.user_data());
    if (pair == nullptr) return;
    (*pair)->downstream.reset();
    (*pair)->upstream.reset();  // Stops it: a close frame, then its connection ends.
  }

  std::mutex mutex;
  std::vector<std::shared_ptr<Pair>> pairs;
  std::set<const EventLoop*> loops;

 private:
  const std::string upstream_url_;
};

TEST(WebSocketClientTest, AClientOnAServersLoopRelaysBothWaysAndLeavesWithItsSocket) {
  EchoService upstream;
  Relay relay(upstream.Url("/"));
  Service relay_service(&relay, Options{});
  auto made = NewServer(&relay_service, Address("127.0.0.1:0"), NumLoops(2));
  ASSERT_TRUE(made.ok()) << made.status();
  std::unique_ptr<Server> relay_server = std::move(*made);
  auto relay_thread = std::make_unique<ServerThread>(relay_server.get());
  const std::string relay_url =
      absl::StrCat("ws://127.0.0.1:", relay_server->ListenAddress().port(), "/");

  constexpr int kClients = 8;
  std::vector<std::unique_ptr<Recorder>> recorders;
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < kClients; ++i) {
    auto recorder = std::make_unique<Recorder>();
    for (int j = 0; j < 20; ++j) {
      recorder->to_send.emplace_back(absl::StrCat("message ", j, " of client ", i),
                                     MessageType::kText);
    }
    recorder->to_send.emplace_back(Pattern(200000, i), MessageType::kBinary);
    auto client = Client::Dial(recorder.get(), relay_url, {});
    ASSERT_TRUE(client.ok()) << client.status();
    clients.push_back(std::move(*client));
    recorders.push_back(std::move(recorder));
  }
  for (int i = 0; i < kClients; ++i) {
    ASSERT_TRUE(WaitFor([&] { return recorders[i]->MessageCount() == 21; })) << i;
    std::lock_guard<std::mutex> lock(recorders[i]->mutex);
    for (int j = 0; j < 20; ++j) {
      EXPECT_EQ(recorders[i]->messages[j].first, absl::StrCat("message ", j, " of client ", i));
    }
    EXPECT_TRUE(recorders[i]->messages[20].first == Pattern(200000, i));
    EXPECT_EQ(recorders[i]->messages[20].second, MessageType::kBinary);
  }
  {
    std::lock_guard<std::mutex> lock(relay.mutex);
    EXPECT_EQ(relay.loops.size(), 2u);  // Both of the relay's loops served.
    for (const auto& pair : relay.pairs) EXPECT_TRUE(pair->on_relay_thread.load());
  }
  for (auto& client : clients) client->Stop();
  ASSERT_TRUE(WaitFor([&] { return upstream.handler.Codes().size() == kClients; }));
  for (uint16_t code : upstream.handler.Codes()) EXPECT_EQ(code, kCloseGoingAway);
  ASSERT_TRUE(WaitFor([&] {
    std::lock_guard<std::mutex> lock(relay.mutex);
    for (const auto& pair : relay.pairs) {
      if (!pair->upstream_closed.load()) return false;
    }
    return true;
  }));
  relay_thread.reset();
}

TEST(WebSocketClientTest, BadUrlsAndMissingTransportsAreRefused) {
  Recorder recorder;
  for (const char* url : {"http://x/", "ws://", "ws://:80/", "ws://host:0/", "ws://host:99999/",
                          "ws://user@host/", "ws://[::1/", "ws://host/a b"}) {
    auto client = Client::Dial(&recorder, url, {});
    EXPECT_TRUE(absl::IsInvalidArgument(client.status())) << url << ": " << client.status();
  }
  auto secure = Client::Dial(&recorder, "wss://127.0.0.1:1/", {});
  EXPECT_TRUE(absl::IsFailedPrecondition(secure.status())) << secure.status();
}

// A server that answers 101 with the wrong accept value, or an extension never offered: the
// client fails the connection (RFC 6455, 4.1) and opens nothing.
TEST(WebSocketClientTest, AWrongAcceptValueOrAnUnofferedExtensionFailsTheUpgrade) {
  for (const std::string& extra :
       {std::string("Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n"),
        std::string("Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: "
                    "permessage-deflate\r\n"),
        std::string("Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: other\r\n")}) {
    InetAddress address;
    int listener = ::gev::testing::ListenOnLoopback(&address);
    ASSERT_GE(listener, 0);
    std::thread fake([&] {
      int peer = ::gev::testing::AcceptWithin(listener);
      if (peer < 0) return;
      std::string request;
      char buffer[4096];
      while (request.find("\r\n\r\n") == std::string::npos) {
        ssize_t n = ::read(peer, buffer, sizeof(buffer));
        if (n <= 0) break;
        request.append(buffer, static_cast<size_t>(n));
      }
      size_t at = request.find("Sec-WebSocket-Key: ");
      std::string key = request.substr(at + 19, 24);
      std::string fields = extra;
      size_t slot = fields.find("{accept}");
      if (slot != std::string::npos) fields.replace(slot, 8, AcceptKey(key));
      std::string response =
          "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
          fields + "\r\n";
      ::gev::testing::WriteAll(peer, response);
      ::gev::testing::SeesEndOfStream(peer);  // The client hangs up.
      ::close(peer);
    });
    Recorder recorder;
    std::atomic<bool> failed{false};
    ClientOptions options;
    options.on_handshake_error = [&](const absl::Status&) { failed = true; };
    auto client = Client::Dial(&recorder, absl::StrCat("ws://", address.ToString(), "/"), options);
    ASSERT_TRUE(client.ok()) << client.status();
    EXPECT_TRUE(WaitFor([&] { return failed.load(); })) << extra;
    EXPECT_EQ(recorder.opens.load(), 0) << extra;
    (*client)->Stop();
    fake.join();
    ::close(listener);
  }
}

// A server nobody here wrote: python3-websockets' echo, with permessage-deflate. Its close
// code reaches OnClose.
TEST(WebSocketClientTest, TalksToPythonWebsocketsServer) {
  const char* script = R"py(
import asyncio, sys, websockets
async def echo(ws):
    async for message in ws:
        if message == "bye":
            await ws.close(4002, "python says bye")
            return
        await ws.send(message)
async def main():
    async with websockets.serve(echo, "127.0.0.1", 0, compression="deflate", max_size=None) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.sleep(60)
asyncio.run(main())
)py";
  int output[2];
  ASSERT_EQ(::pipe(output), 0);
  pid_t child = ::fork();
  if (child == 0) {
    ::dup2(output[1], STDOUT_FILENO);
    ::execl("/usr/bin/python3", "python3", "-c", script, static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(output[1]);
  FILE* lines = ::fdopen(output[0], "r");
  int port = 0;
  ASSERT_EQ(std::fscanf(lines, "%d", &port), 1) << "python3-websockets did not start";
  Recorder recorder;
  const std::string text = std::string(50000, 'q') + "\u00e9";
  recorder.to_send = {{text, MessageType::kText}, {"short", MessageType::kText},
                      {"bye", MessageType::kText}};
  ClientOptions options;
  options.websocket.deflate.enabled = true;
  auto client = Client::Dial(&recorder, absl::StrCat("ws://127.0.0.1:", port, "/"), options);
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_TRUE(WaitFor([&] { return !recorder.Closes().empty(); }));
  EXPECT_TRUE(recorder.compressed.load());
  {
    std::lock_guard<std::mutex> lock(recorder.mutex);
    ASSERT_EQ(recorder.messages.size(), 2u);
    EXPECT_EQ(recorder.messages[0].first, text);
    EXPECT_EQ(recorder.messages[1].first, "short");
    ASSERT_EQ(recorder.closes.size(), 1u);
    EXPECT_EQ(recorder.closes[0], std::make_pair(uint16_t{4002}, std::string("python says bye")));
  }
  (*client)->Stop();
  ::kill(child, SIGTERM);
  ::waitpid(child, nullptr, 0);
  std::fclose(lines);
}

}  // namespace
}  // namespace gev::websocket

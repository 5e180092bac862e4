#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "ringbuffer/ring_buffer.h"
#include "server/server.h"
#include "server/testing/loopback_client.h"
#include "websocket/deflate.h"
#include "websocket/frame.h"
#include "websocket/handshake.h"
#include "websocket/message_reader.h"
#include "websocket/websocket.h"

namespace gev::websocket {
namespace {

using ::gev::testing::Connect;
using ::gev::testing::Pattern;
using ::gev::testing::ServerThread;
using ::gev::testing::WaitFor;
using ::gev::testing::WriteAll;

constexpr char kKey[] = "dGhlIHNhbXBsZSBub25jZQ==";

// Echoes every message; records what happened.
class EchoHandler : public Handler {
 public:
  void OnUpgrade(Upgrade& upgrade) override {
    if (upgrade.offer->target == "/forbidden") {
      upgrade.refusal = HandshakeError{"403 Forbidden", "not here"};
    }
    if (upgrade.offer->origin == "http://evil.example") {
      upgrade.refusal = HandshakeError{"403 Forbidden", "origin not allowed"};
    }
  }
  void OnOpen(Socket& socket) override {
    std::lock_guard<std::mutex> lock(mutex);
    opened.push_back(socket.shared_from_this());
    if (socket.target() == "/room") socket.Subscribe("room");
  }
  void OnMessage(Socket& socket, std::string_view message, MessageType type) override {
    if (message == "close me") {
      EXPECT_TRUE(socket.Close(4000, "as asked").ok());
      return;
    }
    if (message == "publish") {
      socket.Publish("room", "news", MessageType::kText);
      return;
    }
    EXPECT_TRUE(socket.Send(message, type).ok());
  }
  void OnClose(Socket&, uint16_t code, std::string_view reason) override {
    std::lock_guard<std::mutex> lock(mutex);
    closes.emplace_back(code, std::string(reason));
  }
  HttpResponse OnHttpRequest(const http::Request& request) override {
    if (request.target == "/page") {
      HttpResponse page;
      page.status_line = "200 OK";
      page.content_type = "text/html";
      page.body = "<p>hello</p>";
      return page;
    }
    return Handler::OnHttpRequest(request);
  }

  std::vector<std::pair<uint16_t, std::string>> Closes() {
    std::lock_guard<std::mutex> lock(mutex);
    return closes;
  }
  std::mutex mutex;
  std::vector<std::shared_ptr<Socket>> opened;
  std::vector<std::pair<uint16_t, std::string>> closes;
};

// A WebSocket client written plainly over a blocking socket: the upgrade, masked frames, and
// the server's frames read back through a MessageReader.
class RawClient : public MessageReader::Sink {
 public:
  explicit RawClient(const InetAddress& address, uint64_t max_message = 64 << 20)
      : fd_(Connect(address)), reader_(Role::kClient, {max_message}) {}
  ~RawClient() override {
    if (fd_ >= 0) ::close(fd_);
  }
  int fd() const { return fd_; }

  // Sends an upgrade request with `extra` fields; returns the response head.
  std::string Upgrade(const std::string& target = "/", const std::string& extra = "") {
    std::string request = "GET " + target + " HTTP/1.1\r\nHost: localhost\r\n" +
                          "Upgrade: websocket\r\nConnection: Upgrade\r\n" +
                          "Sec-WebSocket-Key: " + kKey + "\r\nSec-WebSocket-Version: 13\r\n" +
                          extra + "\r\n";
    if (!WriteAll(fd_, request)) return "";
    return ReadHead();
  }
  // Reads up to the blank line that ends a response head (what follows stays buffered).
  std::string ReadHead() {
    while (true) {
      size_t end = buffered_.find("\r\n\r\n");
      if (end != std::string::npos) {
        std::string head = buffered_.substr(0, end + 4);
        buffered_.erase(0, end + 4);
        return head;
      }
      if (!ReadSome()) return buffered_;
    }
  }
  // The body of a response with this Content-Length.
  std::string ReadBody(size_t length) {
    while (buffered_.size() < length && ReadSome()) {
    }
    std::string body = buffered_.substr(0, length);
    buffered_.erase(0, std::min(length, buffered_.size()));
    return body;
  }
  bool SendFrame(Opcode opcode, std::string_view payload, bool fin = true, bool rsv1 = false,
                 bool mask = true) {
    char header[kMaxFrameHeader];
    std::optional<uint32_t> key;
    if (mask) key = 0x5A17C3E9u;
    size_t n = WriteFrameHeader(header, opcode, fin, rsv1, payload.size(), key);
    std::string frame(header, n);
    std::string body(payload);
    if (mask) ApplyMask(body.data(), body.size(), *key, 0);
    return WriteAll(fd_, frame + body);
  }
  bool SendRaw(std::string_view bytes) { return WriteAll(fd_, bytes); }
  // Reads until `n` events (messages, pings, pongs, closes) have come, or the stream ends,
  // or `timeout_ms` passes.
  bool WaitForEvents(size_t n, int timeout_ms = 5000) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (events.size() < n) {
      if (!buffered_.empty()) {
        input_.Write(buffered_.data(), buffered_.size());
        buffered_.clear();
      }
      ReadResult result = reader_.Read(input_, *this);
      if (!result.ok) {
        events.push_back("error:" + std::to_string(result.close_code));
        return false;
      }
      if (events.size() >= n) break;
      if (std::chrono::steady_clock::now() >= deadline) return false;
      pollfd readable{fd_, POLLIN, 0};
      if (::poll(&readable, 1, 50) != 1) continue;
      if (!ReadSome()) return events.size() >= n;
    }
    return true;
  }
  // Whether the server ended the TCP connection (EOF or reset) within `timeout_ms`.
  bool SeesEnd(int timeout_ms = 5000) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd readable{fd_, POLLIN, 0};
      if (::poll(&readable, 1, 50) != 1) continue;
      char buffer[4096];
      ssize_t n = ::read(fd_, buffer, sizeof(buffer));
      if (n <= 0) return true;
    }
    return false;
  }

  void OnMessage(MessageType type, std::string_view payload) override {
    events.push_back((type == MessageType::kText ? "text:" : "binary:") + std::string(payload));
  }
  void OnPing(std::string_view payload) override { events.push_back("ping:" + std::string(payload)); }
  void OnPong(std::string_view payload) override { events.push_back("pong:" + std::string(payload)); }
  void OnClose(uint16_t code, std::string_view reason) override {
    events.push_back("close:" + std::to_string(code) + ":" + std::string(reason));
  }

  // The next server frame as it came (not through the reader): its header and payload.
  std::optional<std::pair<FrameHeader, std::string>> ReadRawFrame() {
    while (true) {
      FrameHeader header;
      FrameCheck check = ReadFrameHeader(buffered_, Role::kClient, /*rsv1_allowed=*/true,
                                         uint64_t{1} << 30, &header);
      if (check.status == FrameCheck::kInvalid) return std::nullopt;
      if (check.status == FrameCheck::kOk &&
          buffered_.size() >= header.header_length + header.payload_length) {
        std::string payload = buffered_.substr(header.header_length, header.payload_length);
        buffered_.erase(0, header.header_length + header.payload_length);
        return std::make_pair(header, payload);
      }
      if (!ReadSome()) return std::nullopt;
    }
  }

  void set_inflater(MessageInflater* inflater) { reader_.set_inflater(inflater); }
  std::vector<std::string> events;

 private:
  bool ReadSome() {
    char buffer[65536];
    ssize_t n = ::read(fd_, buffer, sizeof(buffer));
    if (n <= 0) return false;
    buffered_.append(buffer, static_cast<size_t>(n));
    return true;
  }

  int fd_;
  std::string buffered_;
  RingBuffer input_;
  MessageReader reader_;
};

std::string CloseCode(uint16_t code, std::string_view reason = {}) {
  return ClosePayloadFor(code, reason);
}

struct Running {
  Running(SocketHandler* handler, Options options, int loops = 1)
      : service(handler, std::move(options)) {
    auto made = NewServer(&service, Address("127.0.0.1:0"), NumLoops(loops));
    EXPECT_TRUE(made.ok()) << made.status();
    server = std::move(*made);
    thread = std::make_unique<ServerThread>(server.get());
  }
  ~Running() { thread.reset(); }
  const InetAddress& address() const { return server->ListenAddress(); }
  Service service;
  std::unique_ptr<Server> server;
  std::unique_ptr<ServerThread> thread;
};

TEST(WebSocketServiceTest, UpgradesEchoesFragmentsAndClosesCleanly) {
  EchoHandler handler;
  Running running(&handler, {});
  RawClient client(running.address());
  std::string head = client.Upgrade("/chat");
  ASSERT_EQ(head.rfind("HTTP/1.1 101 Switching Protocols\r\n", 0), 0u) << head;
  EXPECT_NE(head.find("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), std::string::npos);
  ASSERT_TRUE(WaitFor([&] { return running.service.SocketCount() == 1; }));

  ASSERT_TRUE(client.SendFrame(Opcode::kText, "hello"));
  ASSERT_TRUE(client.SendFrame(Opcode::kBinary, "ab", false));
  ASSERT_TRUE(client.SendFrame(Opcode::kPing, "p"));  // Between fragments.
  ASSERT_TRUE(client.SendFrame(Opcode::kContinuation, "cd"));
  std::string big = Pattern(3 << 20, 7);
  ASSERT_TRUE(client.SendFrame(Opcode::kBinary, big));
  ASSERT_TRUE(client.WaitForEvents(4));
  EXPECT_EQ(client.events[0], "text:hello");
  EXPECT_EQ(client.events[1], "pong:p");
  EXPECT_EQ(client.events[2], "binary:abcd");
  EXPECT_TRUE(client.events[3] == "binary:" + big);

  ASSERT_TRUE(client.SendFrame(Opcode::kClose, CloseCode(1000, "bye")));
  ASSERT_TRUE(client.WaitForEvents(5));
  EXPECT_EQ(client.events[4], "close:1000:");  // The code echoed.
  EXPECT_TRUE(client.SeesEnd()) << "the server closes the TCP connection first";
  ASSERT_TRUE(WaitFor([&] { return handler.Closes().size() == 1; }));
  EXPECT_EQ(handler.Closes()[0], std::make_pair(uint16_t{1000}, std::string("bye")));
  EXPECT_EQ(running.service.SocketCount(), 0u);
}

TEST(WebSocketServiceTest, ProtocolViolationsCloseWithTheRightCode) {
  struct Case {
    std::string name;
    std::string bytes;  // Sent raw after the upgrade.
    uint16_t code;
  };
  auto masked = [](Opcode opcode, std::string_view payload, bool fin = true) {
    char header[kMaxFrameHeader];
    size_t n = WriteFrameHeader(header, opcode, fin, false, payload.size(), 0x01020304u);
    std::string body(payload);
    ApplyMask(body.data(), body.size(), 0x01020304u, 0);
    return std::string(header, n) + body;
  };
  char unmasked_header[kMaxFrameHeader];
  size_t unmasked_n = WriteFrameHeader(unmasked_header, Opcode::kText, true, false, 2, std::nullopt);
  const Case cases[] = {
      {"unmasked", std::string(unmasked_header, unmasked_n) + "hi", kCloseProtocolError},
      {"invalid UTF-8", masked(Opcode::kText, "\xC0\xAF"), kCloseInvalidPayload},
      {"too big", masked(Opcode::kBinary, std::string(2000, 'x')), kCloseMessageTooBig},
      {"reserved opcode", masked(static_cast<Opcode>(3), "x"), kCloseProtocolError},
      {"continuation first", masked(Opcode::kContinuation, "x"), kCloseProtocolError},
      {"bad close code", masked(Opcode::kClose, CloseCode(1000).substr(0, 0) + "\x03\xED"),
       kCloseProtocolError},
  };
  EchoHandler handler;
  Options options;
  options.max_message = 1000;
  Running running(&handler, options);
  for (const Case& c : cases) {
    RawClient client(running.address());
    ASSERT_EQ(client.Upgrade().rfind("HTTP/1.1 101", 0), 0u) << c.name;
    ASSERT_TRUE(client.SendRaw(c.bytes)) << c.name;
    client.WaitForEvents(1);
    ASSERT_FALSE(client.events.empty()) << c.name;
    EXPECT_EQ(client.events[0].rfind("close:" + std::to_string(c.code) + ":", 0), 0u)
        << c.name << ": " << client.events[0];
    EXPECT_TRUE(client.SeesEnd()) << c.name;
  }
  // Each closed alone; the server serves on.
  RawClient after(running.address());
  ASSERT_EQ(after.Upgrade().rfind("HTTP/1.1 101", 0), 0u);
  ASSERT_TRUE(after.SendFrame(Opcode::kText, "still here"));
  ASSERT_TRUE(after.WaitForEvents(1));
  EXPECT_EQ(after.events[0], "text:still here");
}

TEST(WebSocketServiceTest, PlainHttpOnTheSamePortThenAnUpgradeOnTheSameConnection) {
  EchoHandler handler;
  Running running(&handler, {});
  RawClient client(running.address());
  ASSERT_TRUE(client.SendRaw("GET /page HTTP/1.1\r\nHost: x\r\n\r\nGET /nothing HTTP/1.1\r\n"
                             "Host: x\r\n\r\n"));
  std::string page = client.ReadHead();
  EXPECT_EQ(page.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << page;
  EXPECT_NE(page.find("Content-Type: text/html\r\n"), std::string::npos);
  EXPECT_EQ(client.ReadBody(12), "<p>hello</p>");
  std::string missing = client.ReadHead();
  EXPECT_EQ(missing.rfind("HTTP/1.1 404 Not Found\r\n", 0), 0u) << missing;
  client.ReadBody(10);
  std::string head = client.Upgrade("/after-http");
  ASSERT_EQ(head.rfind("HTTP/1.1 101", 0), 0u) << head;
  ASSERT_TRUE(client.SendFrame(Opcode::kText, "upgraded"));
  ASSERT_TRUE(client.WaitForEvents(1));
  EXPECT_EQ(client.events[0], "text:upgraded");
}

TEST(WebSocketServiceTest, BadUpgradesAreRefusedWithTheRightStatus) {
  EchoHandler handler;
  Options options;
  options.protocols = {"v2.chat", "chat"};
  Running running(&handler, options);
  {
    RawClient client(running.address());
    ASSERT_TRUE(client.SendRaw("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                               "Connection: Upgrade\r\nSec-WebSocket-Key: " +
                               std::string(kKey) + "\r\nSec-WebSocket-Version: 8\r\n\r\n"));
    std::string head = client.ReadHead();
    EXPECT_EQ(head.rfind("HTTP/1.1 426 Upgrade Required\r\n", 0), 0u) << head;
    EXPECT_NE(head.find("Sec-WebSocket-Version: 13\r\n"), std::string::npos);
  }
  {
    RawClient client(running.address());
    std::string head = client.Upgrade("/forbidden");
    EXPECT_EQ(head.rfind("HTTP/1.1 403 Forbidden\r\n", 0), 0u) << head;
    EXPECT_TRUE(client.SeesEnd());
  }
  {
    RawClient client(running.address());
    std::string head = client.Upgrade("/", "Origin: http://evil.example\r\n");
    EXPECT_EQ(head.rfind("HTTP/1.1 403 Forbidden\r\n", 0), 0u) << head;
  }
  {
    RawClient client(running.address());
    std::string head = client.Upgrade("/", "Sec-WebSocket-Protocol: chat, v2.chat\r\n");
    ASSERT_EQ(head.rfind("HTTP/1.1 101", 0), 0u) << head;
    EXPECT_NE(head.find("Sec-WebSocket-Protocol: v2.chat\r\n"), std::string::npos) << head;
  }
  {
    RawClient client(running.address());
    std::string head = client.Upgrade("/", "Sec-WebSocket-Protocol: other\r\n");
    ASSERT_EQ(head.rfind("HTTP/1.1 101", 0), 0u) << head;
    EXPECT_EQ(head.find("Sec-WebSocket-Protocol"), std::string::npos) << head;
  }
  // The two upgrades that were accepted closed (1006: no close frame); the refused ones never
  // opened, so they have no OnClose.
  EXPECT_TRUE(WaitFor([&] { return handler.Closes().size() == 2; }));
  EXPECT_EQ(handler.Closes().size(), 2u);
}

TEST(WebSocketServiceTest, TheServersCloseWaitsForThePeerThenTimesOut) {
  EchoHandler handler;
  Options options;
  // Long enough that the silent client reads the close frame before the reset, however busy
  // the machine; short enough to wait for.
  options.close_timeout = absl::Seconds(1);
  Running running(&handler, options);
  {
    RawClient client(running.address());
    ASSERT_EQ(client.Upgrade().rfind("HTTP/1.1 101", 0), 0u);
    ASSERT_TRUE(client.SendFrame(Opcode::kText, "close me"));
    ASSERT_TRUE(client.WaitForEvents(1));
    EXPECT_EQ(client.events[0], "close:4000:as asked");
    ASSERT_TRUE(client.SendFrame(Opcode::kClose, CloseCode(4000)));  // The answer.
    EXPECT_TRUE(client.SeesEnd(2000));
    ASSERT_TRUE(WaitFor([&] { return handler.Closes().size() == 1; }));
    EXPECT_EQ(handler.Closes()[0].first, 4000);
  }
  {
    RawClient silent(running.address());
    ASSERT_EQ(silent.Upgrade().rfind("HTTP/1.1 101", 0), 0u);
    ASSERT_TRUE(silent.SendFrame(Opcode::kText, "close me"));
    ASSERT_TRUE(silent.WaitForEvents(1));
    // No answer: dropped after the close timeout.
    EXPECT_TRUE(silent.SeesEnd(3000));
    ASSERT_TRUE(WaitFor([&] { return handler.Closes().size() == 2; }));
    EXPECT_EQ(handler.Closes()[1].first, kCloseAbnormal);
  }
}

TEST(WebSocketServiceTest, QuietSocketsArePingedThenClosedAndSlowUpgradesTimedOut) {
  EchoHandler handler;
  Options options;
  options.ping_interval = absl::Milliseconds(200);
  options.idle_timeout = absl::Milliseconds(700);
  options.handshake_timeout = absl::Milliseconds(300);
  // Long enough that the client reads the close frame before the reset that would follow a
  // close left unanswered discards it, however busy the machine.
  options.close_timeout = absl::Seconds(5);
  Running running(&handler, options);
  RawClient quiet(running.address());
  ASSERT_EQ(quiet.Upgrade().rfind("HTTP/1.1 101", 0), 0u);
  ASSERT_TRUE(quiet.WaitForEvents(1, 3000));
  EXPECT_EQ(quiet.events[0], "ping:");
  ASSERT_TRUE(quiet.WaitForEvents(2, 3000))
      << ::testing::PrintToString(quiet.events) << " "
      << (WaitFor([&] { return !handler.Closes().empty(); }) ? handler.Closes()[0].second : "");
  EXPECT_EQ(quiet.events[1], "close:1001:idle");
  ASSERT_TRUE(quiet.SendFrame(Opcode::kClose, CloseCode(1001)));  // The answer.
  EXPECT_TRUE(quiet.SeesEnd(3000));
  ASSERT_TRUE(WaitFor([&] { return handler.Closes().size() == 1; }));
  EXPECT_EQ(handler.Closes()[0].first, 1001);

  RawClient slow(running.address());
  ASSERT_TRUE(slow.SendRaw("GET / HTTP/1.1\r\nHost: x\r\n"));  // And nothing more.
  std::string head = slow.ReadHead();
  EXPECT_EQ(head.rfind("HTTP/1.1 408 Request Timeout\r\n", 0), 0u) << head;
}

TEST(WebSocketServiceTest, PublishReachesSubscribersOnEveryLoopAndSendWorksFromAnyThread) {
  EchoHandler handler;
  Running running(&handler, {}, /*loops=*/2);
  std::vector<std::unique_ptr<RawClient>> members;
  for (int i = 0; i < 6; ++i) {
    members.push_back(std::make_unique<RawClient>(running.address()));
    ASSERT_EQ(members.back()->Upgrade("/room").rfind("HTTP/1.1 101", 0), 0u);
  }
  RawClient outsider(running.address());
  ASSERT_EQ(outsider.Upgrade("/").rfind("HTTP/1.1 101", 0), 0u);
  ASSERT_TRUE(WaitFor([&] { return running.service.SocketCount() == 7; }));
  // Subscriptions are applied on the sockets' loops; a round trip makes sure they have been.
  for (auto& member : members) {
    ASSERT_TRUE(member->SendFrame(Opcode::kText, "sync"));
    ASSERT_TRUE(member->WaitForEvents(1));
  }
  running.service.Publish("room", "to all");
  ASSERT_TRUE(members[0]->SendFrame(Opcode::kText, "publish"));  // Socket::Publish: not itself.
  for (size_t i = 0; i < members.size(); ++i) {
    size_t expected = i == 0 ? 2 : 3;
    ASSERT_TRUE(members[i]->WaitForEvents(expected)) << i;
    // Two publishers (this thread, and member 0's loop) may arrive in either order.
    std::multiset<std::string> got(members[i]->events.begin() + 1, members[i]->events.end());
    std::multiset<std::string> want = {"text:to all"};
    if (i != 0) want.insert("text:news");
    EXPECT_EQ(got, want) << i;
  }
  EXPECT_FALSE(outsider.WaitForEvents(1, 300));
  // From a thread of our own, to the socket kept since OnOpen.
  std::shared_ptr<Socket> kept;
  {
    std::lock_guard<std::mutex> lock(handler.mutex);
    kept = handler.opened.back();
  }
  std::thread([kept] { EXPECT_TRUE(kept->Send("from elsewhere").ok()); }).join();
  ASSERT_TRUE(outsider.WaitForEvents(1));
  EXPECT_EQ(outsider.events[0], "text:from elsewhere");
}

TEST(WebSocketServiceTest, DeflateIsNegotiatedAndMessagesGoBothWaysCompressed) {
  EchoHandler handler;
  Options options;
  options.deflate.enabled = true;
  options.deflate.min_size = 16;
  Running running(&handler, options);
  RawClient client(running.address());
  std::string head = client.Upgrade(
      "/", "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n");
  ASSERT_EQ(head.rfind("HTTP/1.1 101", 0), 0u) << head;
  EXPECT_NE(head.find("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
                      "client_no_context_takeover\r\n"),
            std::string::npos)
      << head;
  DeflateAgreement agreement;
  agreement.server_no_context_takeover = true;
  agreement.client_no_context_takeover = true;
  Inflater inflater(agreement, Role::kClient);
  client.set_inflater(&inflater);
  Deflater deflater(agreement, Role::kClient, 6);
  std::string text(5000, 'a');
  std::string compressed;
  ASSERT_TRUE(deflater.Compress(text, &compressed));
  ASSERT_TRUE(client.SendFrame(Opcode::kText, compressed, true, /*rsv1=*/true));
  ASSERT_TRUE(client.SendFrame(Opcode::kText, "short"));  // Uncompressed, also allowed.
  ASSERT_TRUE(client.WaitForEvents(2));
  EXPECT_EQ(client.events[0], "text:" + text);
  EXPECT_EQ(client.events[1], "text:short");
}

// What the server sends goes compressed (RSV1 set, fewer bytes, inflating to the message)
// when deflate was agreed, from Send and from Publish; a message under min_size, and one sent
// with Compression::kNone, go as they are.
TEST(WebSocketServiceTest, ServerFramesAreCompressedUnlessShortOrSentWithCompressionNone) {
  class Sender : public SocketHandler {
   public:
    void OnOpen(Socket& socket) override { socket.Subscribe("all"); }
    void OnMessage(Socket& socket, std::string_view message, MessageType type) override {
      if (message.rfind("as-is:", 0) == 0) {
        EXPECT_TRUE(socket.Send(message, type, Compression::kNone).ok());
      } else if (message.rfind("publish:", 0) == 0) {
        socket.Publish("all", message, type);  // To the other socket.
      } else if (message.rfind("publish-as-is:", 0) == 0) {
        socket.Publish("all", message, type, Compression::kNone);
      } else {
        EXPECT_TRUE(socket.Send(message, type).ok());
      }
    }
  } handler;
  Options options;
  options.deflate.enabled = true;
  options.deflate.min_size = 64;
  Running running(&handler, options, /*loops=*/2);
  RawClient client(running.address());
  RawClient listener(running.address());
  for (RawClient* each : {&client, &listener}) {
    std::string head = each->Upgrade("/", "Sec-WebSocket-Extensions: permessage-deflate\r\n");
    ASSERT_NE(head.find("permessage-deflate"), std::string::npos) << head;
  }
  // Both subscribed before anything is published: a round trip on each.
  for (RawClient* each : {&client, &listener}) {
    ASSERT_TRUE(each->SendFrame(Opcode::kText, "sync"));
    auto answer = each->ReadRawFrame();
    ASSERT_TRUE(answer.has_value());
    EXPECT_FALSE(answer->first.rsv1);  // Under min_size.
    EXPECT_EQ(answer->second, "sync");
  }
  DeflateAgreement agreement;
  agreement.server_no_context_takeover = true;
  agreement.client_no_context_takeover = true;
  auto expect_frame = [&](RawClient& reader, const std::string& message, bool compressed) {
    auto frame = reader.ReadRawFrame();
    ASSERT_TRUE(frame.has_value());
    EXPECT_TRUE(frame->first.fin);
    EXPECT_EQ(frame->first.opcode, Opcode::kText);
    EXPECT_EQ(frame->first.rsv1, compressed) << message.substr(0, 20);
    if (!compressed) {
      EXPECT_EQ(frame->second, message);
      return;
    }
    EXPECT_LT(frame->second.size(), message.size() / 10);
    Inflater inflater(agreement, Role::kClient);
    std::string inflated;
    EXPECT_EQ(inflater.Inflate(frame->second, true, 1 << 20, &inflated), MessageInflater::kOk);
    EXPECT_EQ(inflated, message);
  };
  const std::string text = "echo:" + std::string(5000, 'a');
  ASSERT_TRUE(client.SendFrame(Opcode::kText, text));
  expect_frame(client, text, true);
  const std::string as_is = "as-is:" + std::string(5000, 'b');
  ASSERT_TRUE(client.SendFrame(Opcode::kText, as_is));
  expect_frame(client, as_is, false);
  const std::string published = "publish:" + std::string(5000, 'c');
  ASSERT_TRUE(client.SendFrame(Opcode::kText, published));
  expect_frame(listener, published, true);
  const std::string published_as_is = "publish-as-is:" + std::string(5000, 'd');
  ASSERT_TRUE(client.SendFrame(Opcode::kText, published_as_is));
  expect_frame(listener, published_as_is, false);
}

// The peer's close frame comes while output waits that it never reads: the connection is
// reset close_timeout later, not held open for ever with its output.
TEST(WebSocketServiceTest, AClosingPeerThatReadsNothingIsResetAtTheCloseTimeout) {
  class Big : public Handler {
    void OnMessage(Socket& socket, std::string_view, MessageType) override {
      EXPECT_TRUE(socket.Send(std::string(8 << 20, 'b'), MessageType::kBinary).ok());
    }
  } big;
  Options options;
  options.close_timeout = absl::Milliseconds(500);
  Running running(&big, options);
  int fd = ::gev::testing::Connect(running.address(), /*receive_buffer=*/4096);
  ASSERT_GE(fd, 0);
  std::string request =
      "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
  ASSERT_TRUE(WriteAll(fd, request));
  char header[kMaxFrameHeader];
  size_t n = WriteFrameHeader(header, Opcode::kText, true, false, 0, 0u);
  ASSERT_TRUE(WriteAll(fd, std::string(header, n)));  // An empty message: 8 MiB come back.
  ASSERT_TRUE(WaitFor([&] { return running.service.SocketCount() == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::string close_payload = CloseCode(1000);
  n = WriteFrameHeader(header, Opcode::kClose, true, false, close_payload.size(), 0u);
  ASSERT_TRUE(WriteAll(fd, std::string(header, n) + close_payload));
  // Nothing is read; the server gives up on the rest once the close timeout passes.
  EXPECT_TRUE(WaitFor([&] { return running.service.SocketCount() == 0; }));
  ::close(fd);
}

// A peer that pings without end and reads nothing: pongs wait only while little output does.
TEST(WebSocketServiceTest, PingsFromAPeerThatDoesNotReadDoNotPileUp) {
  EchoHandler handler;
  Running running(&handler, {});
  int fd = ::gev::testing::Connect(running.address(), /*receive_buffer=*/4096);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(WriteAll(fd,
                       "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade"
                       "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n"));
  ASSERT_TRUE(WaitFor([&] { return running.service.SocketCount() == 1; }));
  std::string pings;
  const std::string payload(125, 'p');
  for (int i = 0; i < 1000; ++i) {
    char header[kMaxFrameHeader];
    size_t n = WriteFrameHeader(header, Opcode::kPing, true, false, payload.size(), 0u);
    pings.append(header, n);
    pings += payload;  // Masked with a zero key: as it is.
  }
  for (int round = 0; round < 100; ++round) ASSERT_TRUE(WriteAll(fd, pings));  // 13 MB.
  std::shared_ptr<Socket> socket;
  {
    std::lock_guard<std::mutex> lock(handler.mutex);
    socket = handler.opened.back();
  }
  // Let the loop read them all: it answers no ping once 64 KiB wait.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_LE(socket->BufferedAmount(), 64u * 1024 + 127) << "pongs piled up";
  ::close(fd);
}

// Messages sent from another thread race a close on the socket's loop: none follows the close
// frame on the wire (RFC 6455, 5.5.1).
TEST(WebSocketServiceTest, NothingFollowsTheCloseFrameWhateverThreadSends) {
  class Racer : public Handler {
   public:
    void OnMessage(Socket& socket, std::string_view, MessageType) override {
      std::shared_ptr<Socket> kept = socket.shared_from_this();
      threads.emplace_back([kept] {
        for (int i = 0; i < 2000; ++i) {
          if (!kept->Send("message " + std::to_string(i)).ok()) break;
        }
      });
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      EXPECT_TRUE(socket.Close(kCloseNormal, "done").ok());
    }
    ~Racer() override {
      for (std::thread& thread : threads) thread.join();
    }
    std::vector<std::thread> threads;
  } racer;
  Running running(&racer, {});
  for (int round = 0; round < 20; ++round) {
    RawClient client(running.address());
    ASSERT_EQ(client.Upgrade().rfind("HTTP/1.1 101", 0), 0u);
    ASSERT_TRUE(client.SendFrame(Opcode::kText, "go"));
    // Every frame to the end, in order, by hand (a reader stops at the close frame).
    std::string bytes;
    char buffer[65536];
    bool answered = false;
    while (true) {
      pollfd readable{client.fd(), POLLIN, 0};
      if (::poll(&readable, 1, 5000) != 1) break;
      ssize_t n = ::read(client.fd(), buffer, sizeof(buffer));
      if (n <= 0) break;
      bytes.append(buffer, static_cast<size_t>(n));
      if (!answered && bytes.find("\x88\x06\x03\xe8" "done") != std::string::npos) {
        answered = client.SendFrame(Opcode::kClose, CloseCode(1000));
      }
    }
    size_t offset = 0;
    bool closed = false;
    int after_close = 0;
    while (offset + 2 <= bytes.size()) {
      FrameHeader header;
      FrameCheck check = ReadFrameHeader(std::string_view(bytes).substr(offset), Role::kClient,
                                         false, ~uint64_t{0}, &header);
      if (check.status != FrameCheck::kOk) break;
      if (closed) ++after_close;
      if (header.opcode == Opcode::kClose) closed = true;
      offset += header.header_length + header.payload_length;
    }
    EXPECT_TRUE(closed) << "round " << round;
    EXPECT_EQ(after_close, 0) << "round " << round << ": frames after the close frame";
  }
}

// Options::stream_above: a message larger than max_message comes to OnMessagePart in parts
// as it arrives, compressed or not, and never whole; smaller ones still reach OnMessage.
TEST(WebSocketServiceTest, LargeMessagesStreamToOnMessagePart) {
  class Streamer : public Handler {
   public:
    void OnMessage(Socket& socket, std::string_view message, MessageType) override {
      EXPECT_TRUE(socket.Send(absl::StrCat("whole ", message.size())).ok());
    }
    void OnMessagePart(Socket& socket, std::string_view part, MessageType, bool last) override {
      total += part.size();
      ++parts;
      for (char c : part) sum += static_cast<unsigned char>(c);
      if (last) {
        EXPECT_TRUE(socket.Send(absl::StrCat("streamed ", total, " ", sum, " ", parts > 2)).ok());
        total = sum = 0;
        parts = 0;
      }
    }
    size_t total = 0;
    uint64_t sum = 0;
    int parts = 0;
  } streamer;
  Options options;
  options.max_message = 1 << 20;
  options.stream_above = 64 * 1024;
  options.deflate.enabled = true;
  Running running(&streamer, options);
  const std::string big = Pattern(3 << 20, 5);
  uint64_t big_sum = 0;
  for (char c : big) big_sum += static_cast<unsigned char>(c);
  RawClient client(running.address());
  ASSERT_EQ(client.Upgrade("/", "Sec-WebSocket-Extensions: permessage-deflate\r\n")
                .rfind("HTTP/1.1 101", 0),
            0u);
  ASSERT_TRUE(client.SendFrame(Opcode::kBinary, "tiny"));
  ASSERT_TRUE(client.SendFrame(Opcode::kBinary, big));
  DeflateAgreement agreement;
  agreement.server_no_context_takeover = true;
  agreement.client_no_context_takeover = true;
  Deflater deflater(agreement, Role::kClient, 6);
  std::string compressed;
  ASSERT_TRUE(deflater.Compress(big, &compressed));
  ASSERT_TRUE(client.SendFrame(Opcode::kBinary, compressed, true, /*rsv1=*/true));
  Inflater inflater(agreement, Role::kClient);
  client.set_inflater(&inflater);
  ASSERT_TRUE(client.WaitForEvents(3));
  const std::string streamed = absl::StrCat("text:streamed ", big.size(), " ", big_sum, " 1");
  EXPECT_EQ(client.events[0], "text:whole 4");
  EXPECT_EQ(client.events[1], streamed);
  EXPECT_EQ(client.events[2], streamed);
}

TEST(WebSocketServiceTest, AReaderThatFallsPastMaxBacklogIsClosed) {
  class Flood : public Handler {
   public:
    void OnMessage(Socket& socket, std::string_view, MessageType) override {
      std::string chunk(64 * 1024, 'f');
      for (int i = 0; i < 2000; ++i) {
        absl::Status sent = socket.Send(chunk, MessageType::kBinary);
        if (!sent.ok()) {
          refused = true;
          break;
        }
      }
    }
    std::atomic<bool> refused{false};
  } flood;
  Options options;
  options.max_backlog = 4 << 20;
  Running running(&flood, options);
  RawClient client(running.address());
  ASSERT_EQ(client.Upgrade().rfind("HTTP/1.1 101", 0), 0u);
  ASSERT_TRUE(client.SendFrame(Opcode::kText, "go"));
  // The client reads nothing; the server closes it once 4 MiB wait, not 125 MiB later.
  EXPECT_TRUE(WaitFor([&] { return flood.refused.load(); }));
  EXPECT_TRUE(WaitFor([&] { return running.service.SocketCount() == 0; }));
}

}  // namespace
}  // namespace gev::websocket

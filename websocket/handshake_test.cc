#include "websocket/handshake.h"

#include <string>

#include "gtest/gtest.h"
#include "http/request.h"

namespace gev::websocket {
namespace {

constexpr char kSampleKey[] = "dGhlIHNhbXBsZSBub25jZQ==";

// The request's views point into `head`, which must outlive it.
http::Request Parse(std::string_view head, http::HeadStatus expected = http::HeadStatus::kOk) {
  http::Request request;
  EXPECT_EQ(http::ParseHead(head, &request), expected) << head;
  return request;
}

std::string Upgrade(const std::string& extra_fields, const std::string& version = "13",
                    const std::string& key = kSampleKey) {
  return "GET /chat?room=1 HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
         "Connection: Upgrade\r\nSec-WebSocket-Key: " + key +
         "\r\nSec-WebSocket-Version: " + version + "\r\n" + extra_fields + "\r\n";
}

// RFC 6455, section 1.3: the sample key and its accept value.
TEST(HandshakeTest, AcceptsTheRfcSampleWithItsAcceptKey) {
  EXPECT_EQ(AcceptKey(kSampleKey), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  const std::string head = Upgrade(
      "Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n"
      "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n");
  http::Request request = Parse(head);
  ASSERT_TRUE(IsUpgradeRequest(request));
  UpgradeRequest upgrade;
  HandshakeError error;
  ASSERT_TRUE(ReadUpgradeRequest(request, &upgrade, &error)) << error.reason;
  EXPECT_EQ(upgrade.target, "/chat?room=1");
  EXPECT_EQ(upgrade.key, kSampleKey);
  EXPECT_EQ(upgrade.origin, "http://example.com");
  ASSERT_EQ(upgrade.protocols.size(), 2u);
  EXPECT_EQ(upgrade.protocols[1], "superchat");
  ASSERT_EQ(upgrade.extensions.size(), 1u);
  EXPECT_EQ(upgrade.extensions[0], "permessage-deflate; client_max_window_bits");
  EXPECT_EQ(AcceptResponse(upgrade.key, "chat", ""),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
            "Sec-WebSocket-Protocol: chat\r\n\r\n");
}

TEST(HandshakeTest, CaseAndListsDoNotMatterButEveryRuleDoes) {
  http::Request request = Parse(
      "GET / HTTP/1.1\r\nhost: x\r\nupgrade: WebSocket\r\nconnection: keep-alive, UPGRADE\r\n"
      "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n");
  UpgradeRequest upgrade;
  HandshakeError error;
  EXPECT_TRUE(IsUpgradeRequest(request));
  EXPECT_TRUE(ReadUpgradeRequest(request, &upgrade, &error)) << error.reason;
  EXPECT_TRUE(upgrade.origin.empty());

  EXPECT_FALSE(IsUpgradeRequest(Parse("GET / HTTP/1.1\r\nHost: x\r\n\r\n")));
  EXPECT_FALSE(IsUpgradeRequest(Parse("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\n")));

  struct Case {
    std::string head;
    std::string status;
  };
  const Case cases[] = {
      {"POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
       "400 Bad Request"},
      {"GET / HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
       "400 Bad Request"},
      {"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n"
       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
       "400 Bad Request"},
      {Upgrade("", "8"), "426 Upgrade Required"},
      {Upgrade("Sec-WebSocket-Version: 13\r\n"), "426 Upgrade Required"},  // Two versions.
      {Upgrade("", "13", "dGhlIHNhbXBsZSBub25jZQ"), "400 Bad Request"},     // Not 24 characters.
      {Upgrade("", "13", "dGhlIHNhbXBsZSBub25jZQ=="), ""},                   // (valid, control)
      {Upgrade("", "13", "dGhlIHNhbXBsZSBub25jZR=="), "400 Bad Request"},   // Not canonical.
      {Upgrade("", "13", "YWJjZGVmZ2hpamtsbW5vcHE="), "400 Bad Request"},   // 17 bytes.
      {Upgrade("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"), "400 Bad Request"},
      {Upgrade("Content-Length: 3\r\n"), "400 Bad Request"},
      {Upgrade("Sec-WebSocket-Protocol: chat, a b\r\n"), "400 Bad Request"},
  };
  for (const Case& c : cases) {
    http::Request parsed = Parse(c.head);
    UpgradeRequest out;
    HandshakeError refusal;
    bool ok = ReadUpgradeRequest(parsed, &out, &refusal);
    EXPECT_EQ(ok, c.status.empty()) << c.head;
    if (!ok) {
      EXPECT_EQ(refusal.status_line, c.status) << c.head;
      EXPECT_FALSE(refusal.reason.empty());
    }
  }
}

TEST(HandshakeTest, RefusalsAreWholeResponsesAndA426NamesTheVersion) {
  std::string response = RefusalResponse({"426 Upgrade Required", "version 13 only"});
  EXPECT_EQ(response.rfind("HTTP/1.1 426 Upgrade Required\r\n", 0), 0u);
  EXPECT_NE(response.find("\r\nSec-WebSocket-Version: 13\r\n"), std::string::npos);
  EXPECT_NE(response.find("\r\nConnection: close\r\n"), std::string::npos);
  size_t body = response.find("\r\n\r\n");
  ASSERT_NE(body, std::string::npos);
  EXPECT_EQ(response.substr(body + 4), "version 13 only\n");
  EXPECT_NE(response.find("Content-Length: 16\r\n"), std::string::npos);
  EXPECT_EQ(RefusalResponse({"400 Bad Request", "x"}).find("Sec-WebSocket-Version"),
            std::string::npos);
}

}  // namespace
}  // namespace gev::websocket

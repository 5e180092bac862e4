#include "http/request.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace gev::http {
namespace {

TEST(HttpRequestTest, ParsesARequestHead) {
  Request request;
  ASSERT_EQ(ParseHead("\r\nGET /plaintext HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                      "Connection: Upgrade, close\r\n\r\n",
                      &request),
            HeadStatus::kOk);
  EXPECT_EQ(request.method, "GET");
  EXPECT_EQ(request.target, "/plaintext");
  EXPECT_EQ(request.minor_version, 1);
  EXPECT_EQ(request.content_length, 5u);
  EXPECT_FALSE(request.keep_alive);
}

TEST(HttpRequestTest, KeepAliveFollowsTheVersionAndTheConnectionField) {
  Request request;
  ASSERT_EQ(ParseHead("GET / HTTP/1.1\r\nHost: x\r\n\r\n", &request), HeadStatus::kOk);
  EXPECT_TRUE(request.keep_alive);
  ASSERT_EQ(ParseHead("GET / HTTP/1.0\r\n\r\n", &request), HeadStatus::kOk);
  EXPECT_FALSE(request.keep_alive);
  ASSERT_EQ(ParseHead("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &request),
            HeadStatus::kOk);
  EXPECT_TRUE(request.keep_alive);
}

TEST(HttpRequestTest, RefusesWhatIsMalformed) {
  Request request;
  for (const char* bad : {
           "GET /\r\n\r\n",                                      // No version.
           "GET  / HTTP/1.1\r\n\r\n",                            // Empty target.
           "G(T / HTTP/1.1\r\n\r\n",                             // Not a token.
           "GET / HTTP/1.1\r\nHost: x\r\nNo colon\r\n\r\n",
           "GET / HTTP/1.1\r\nHost: x\r\nBad Name: x\r\n\r\n",
           "GET / HTTP/1.1\r\nHost: x\r\n folded: x\r\n\r\n",
           "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 12x\r\n\r\n",
           "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
           "GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n",
           "GET / HTTP/0.9\r\n\r\n",
           "GET / http/1.1\r\n\r\n",
           "GET / HTTP/1.1\r\n\r\n",                                // No Host.
           "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
       }) {
    EXPECT_EQ(ParseHead(bad, &request), HeadStatus::kBadRequest) << bad;
  }
  EXPECT_EQ(ParseHead("GET / HTTP/2.0\r\n\r\n", &request), HeadStatus::kVersionNotSupported);
  EXPECT_EQ(ParseHead("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", &request),
            HeadStatus::kNotImplemented);
  EXPECT_EQ(ParseHead("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", &request),
            HeadStatus::kBodyTooLarge);
}

TEST(HttpRequestTest, LinesMayEndWithABareLf) {
  EXPECT_EQ(HeadLength("GET / HTTP/1.1\nHost: x\n\nrest"), 24u);
  EXPECT_EQ(HeadLength("GET / HTTP/1.1\r\nHost: x\r\n\r\nrest"), 27u);
  EXPECT_EQ(HeadLength("GET / HTTP/1.1\r\nHost: x\n\r\n"), 26u);
  EXPECT_EQ(HeadLength("GET / HTTP/1.1\r\nHost: x\r\n"), std::string_view::npos);
  Request request;
  ASSERT_EQ(ParseHead("GET /a HTTP/1.1\nHost: x\nConnection: close\n\n", &request),
            HeadStatus::kOk);
  EXPECT_EQ(request.target, "/a");
  EXPECT_FALSE(request.keep_alive);
  ASSERT_EQ(ParseHead("\n\r\nGET / HTTP/1.0\n\n", &request), HeadStatus::kOk);
  // A CR that ends no line is still refused.
  EXPECT_EQ(ParseHead("GET / HTTP/1.1\nHost: a\rb\n\n", &request), HeadStatus::kBadRequest);
}

TEST(HttpRequestTest, KeepsEveryFieldInOrderAndFindsThemInAnyCase) {
  Request request;
  std::string head =
      "GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
      "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key:  dGhlIHNhbXBsZSBub25jZQ==  \r\n"
      "Sec-WebSocket-Protocol: chat\r\nsec-websocket-protocol: superchat, , v2\r\n"
      "Origin: http://example.com\r\n\r\n";
  ASSERT_EQ(ParseHead(head, &request), HeadStatus::kOk);
  ASSERT_EQ(request.fields.size(), 7u);
  EXPECT_EQ(request.fields[0].name, "Host");
  EXPECT_EQ(request.fields[3].value, "dGhlIHNhbXBsZSBub25jZQ==");  // Trimmed.
  EXPECT_EQ(request.Find("upgrade"), "websocket");
  EXPECT_EQ(request.Find("SEC-WEBSOCKET-PROTOCOL"), "chat");  // The first.
  EXPECT_EQ(request.Find("cookie"), std::nullopt);
  EXPECT_EQ(request.Count("Sec-WebSocket-Protocol"), 2u);
  EXPECT_TRUE(request.HasToken("connection", "upgrade"));
  EXPECT_TRUE(request.HasToken("Sec-WebSocket-Protocol", "V2"));
  EXPECT_FALSE(request.HasToken("Sec-WebSocket-Protocol", "super"));
  std::vector<std::string> items;
  ForEachListItem(" a, ,b ,c,", [&](std::string_view item) {
    items.emplace_back(item);
    return true;
  });
  EXPECT_EQ(items, (std::vector<std::string>{"a", "b", "c"}));
  // Parsed again, a request holds the new head's fields only.
  ASSERT_EQ(ParseHead("GET / HTTP/1.0\r\n\r\n", &request), HeadStatus::kOk);
  EXPECT_TRUE(request.fields.empty());
  EXPECT_FALSE(request.keep_alive);
}

TEST(HttpRequestTest, TooManyFieldsOrBytesAre431AndTheBodyLimitIsTheCallers) {
  Request request;
  std::string head = "GET / HTTP/1.1\r\nHost: x\r\n";
  for (size_t i = 1; i < kMaxFields; ++i) head += "A: b\r\n";
  EXPECT_EQ(ParseHead(head + "\r\n", &request), HeadStatus::kOk);
  EXPECT_EQ(request.fields.size(), kMaxFields);
  EXPECT_EQ(ParseHead(head + "A: b\r\n\r\n", &request), HeadStatus::kHeadTooLarge);
  std::string long_head = "GET / HTTP/1.1\r\nHost: x\r\nX: " + std::string(kMaxHeadBytes, 'a') +
                          "\r\n\r\n";
  EXPECT_EQ(ParseHead(long_head, &request), HeadStatus::kHeadTooLarge);
  EXPECT_EQ(ParseHead("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n", &request,
                      /*max_body_bytes=*/10),
            HeadStatus::kBodyTooLarge);
  EXPECT_EQ(ParseHead("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n", &request,
                      /*max_body_bytes=*/10),
            HeadStatus::kOk);
  EXPECT_EQ(StatusLine(HeadStatus::kHeadTooLarge), "431 Request Header Fields Too Large");
  EXPECT_EQ(StatusLine(HeadStatus::kBadRequest), "400 Bad Request");
}

TEST(HttpResponseTest, ParsesAStatusLineAndFieldsStrictly) {
  Response response;
  const std::string head =
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
  ASSERT_EQ(ParseResponseHead(head, &response), HeadStatus::kOk);
  EXPECT_EQ(response.status, 101);
  EXPECT_EQ(response.reason, "Switching Protocols");
  EXPECT_EQ(response.Find("sec-websocket-accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  EXPECT_TRUE(response.HasToken("connection", "upgrade"));
  ASSERT_EQ(ParseResponseHead("HTTP/1.0 404\r\n\r\n", &response), HeadStatus::kOk);
  EXPECT_EQ(response.status, 404);
  EXPECT_TRUE(response.reason.empty());
  EXPECT_TRUE(response.fields.empty());
  for (const char* bad : {"HTTP/1.1 10 x\r\n\r\n", "HTTP/2.0 200 OK\r\n\r\n",
                          "HTTP/1.1 2000 OK\r\n\r\n", "HTTP/1.1 20x OK\r\n\r\n",
                          "ICY 200 OK\r\n\r\n", "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
                          "HTTP/1.1 200 OK\r\nNo colon\r\n\r\n"}) {
    EXPECT_EQ(ParseResponseHead(bad, &response), HeadStatus::kBadRequest) << bad;
  }
}

}  // namespace
}  // namespace gev::http

#include "examples/http/http_request.h"

#include <string>

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

}  // namespace
}  // namespace gev::http

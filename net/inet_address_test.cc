#include "net/inet_address.h"

#include <netdb.h>
#include <netinet/in.h>

#include "gtest/gtest.h"

namespace gev {
namespace {

TEST(InetAddressTest, ParsesTheFormsGevAccepts) {
  auto any = InetAddress::Parse(":1833");
  ASSERT_TRUE(any.ok()) << any.status();
  EXPECT_EQ(any->family(), AF_INET);
  EXPECT_EQ(any->port(), 1833);
  EXPECT_EQ(any->ToString(), "0.0.0.0:1833");

  auto v4 = InetAddress::Parse("127.0.0.1:1833");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->ToString(), "127.0.0.1:1833");

  auto v6 = InetAddress::Parse("[::1]:1833");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->family(), AF_INET6);
  EXPECT_EQ(v6->ToString(), "[::1]:1833");

  auto local = InetAddress::Parse("localhost:1833", NetworkType::kTcp4);
  ASSERT_TRUE(local.ok()) << local.status();
  EXPECT_EQ(local->ToString(), "127.0.0.1:1833");

  auto any6 = InetAddress::Parse(":80", NetworkType::kTcp6);
  ASSERT_TRUE(any6.ok());
  EXPECT_EQ(any6->ToString(), "[::]:80");
}

TEST(InetAddressTest, RejectsBadAddresses) {
  EXPECT_FALSE(InetAddress::Parse("1833").ok());
  EXPECT_FALSE(InetAddress::Parse("127.0.0.1:").ok());
  EXPECT_FALSE(InetAddress::Parse("127.0.0.1:70000").ok());
  EXPECT_FALSE(InetAddress::Parse("127.0.0.1:http").ok());
  EXPECT_FALSE(InetAddress::Parse("[::1]:80", NetworkType::kTcp4).ok());
}

// What getaddrinfo says becomes a code a caller can act on: no such host (NotFound) is not a
// name service that failed to answer (Unavailable: try again) nor a bad address.
TEST(InetAddressTest, LookupFailuresSayWhatWentWrong) {
  EXPECT_TRUE(absl::IsNotFound(net_internal::LookupFailure(EAI_NONAME, "nosuch.invalid")));
  EXPECT_TRUE(absl::IsNotFound(net_internal::LookupFailure(EAI_NODATA, "mx-only.example")));
  EXPECT_TRUE(absl::IsNotFound(net_internal::LookupFailure(EAI_ADDRFAMILY, "v4-only.example")));
  EXPECT_TRUE(absl::IsNotFound(net_internal::LookupFailure(0, "empty.example")));
  EXPECT_TRUE(absl::IsUnavailable(net_internal::LookupFailure(EAI_AGAIN, "slow.example")));
  EXPECT_TRUE(absl::IsUnavailable(net_internal::LookupFailure(EAI_FAIL, "broken.example")));
  EXPECT_TRUE(absl::IsInvalidArgument(net_internal::LookupFailure(EAI_SERVICE, "x")));
  absl::Status status = net_internal::LookupFailure(EAI_NONAME, "nosuch.invalid");
  EXPECT_NE(status.message().find("cannot resolve \"nosuch.invalid\""), std::string::npos)
      << status;
}

TEST(InetAddressTest, ParsesNetworks) {
  EXPECT_EQ(*ParseNetwork("tcp"), NetworkType::kTcp);
  EXPECT_EQ(*ParseNetwork("tcp4"), NetworkType::kTcp4);
  EXPECT_EQ(*ParseNetwork("tcp6"), NetworkType::kTcp6);
  EXPECT_FALSE(ParseNetwork("udp").ok());
}

}  // namespace
}  // namespace gev

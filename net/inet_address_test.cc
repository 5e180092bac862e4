#include "net/inet_address.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>

#include <cstring>

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

namespace gev {
namespace {

TEST(PackedInetAddressTest, KeepsEverythingButTheFlowLabelIn24Bytes) {
  EXPECT_EQ(sizeof(PackedInetAddress), 24u);
  for (const char* text : {"127.0.0.1:1833", "10.1.2.3:65535", "[::1]:80", "[fe80::1]:443"}) {
    absl::StatusOr<InetAddress> address = InetAddress::Parse(text);
    ASSERT_TRUE(address.ok()) << text;
    InetAddress unpacked = PackedInetAddress(*address).Unpack();
    EXPECT_EQ(unpacked.ToString(), address->ToString());
    EXPECT_EQ(unpacked.family(), address->family());
    EXPECT_EQ(unpacked.port(), address->port());
    EXPECT_EQ(unpacked.length(), address->length());
  }
  sockaddr_in6 scoped{};
  scoped.sin6_family = AF_INET6;
  scoped.sin6_port = htons(7);
  scoped.sin6_scope_id = 3;
  scoped.sin6_flowinfo = htonl(0x12345);  // Not kept.
  scoped.sin6_addr.s6_addr[0] = 0xfe;
  scoped.sin6_addr.s6_addr[1] = 0x80;
  scoped.sin6_addr.s6_addr[15] = 9;
  InetAddress unpacked =
      PackedInetAddress(InetAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&scoped),
                                                  sizeof(scoped)))
          .Unpack();
  const auto* v6 = reinterpret_cast<const sockaddr_in6*>(unpacked.sockaddr());
  EXPECT_EQ(v6->sin6_scope_id, 3u);
  EXPECT_EQ(v6->sin6_flowinfo, 0u);
  EXPECT_EQ(std::memcmp(&v6->sin6_addr, &scoped.sin6_addr, 16), 0);
  EXPECT_EQ(ntohs(v6->sin6_port), 7);
  sockaddr unix_peer{};
  unix_peer.sa_family = AF_UNIX;
  EXPECT_EQ(PackedInetAddress(InetAddress::FromSockaddr(&unix_peer, sizeof(unix_peer)))
                .Unpack()
                .family(),
            AF_UNIX);
  EXPECT_EQ(PackedInetAddress().Unpack().family(), AF_UNSPEC);
}

}  // namespace
}  // namespace gev

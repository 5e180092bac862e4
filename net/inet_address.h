// -----------------------------------------------------------------------------
// File: net/inet_address.h
// -----------------------------------------------------------------------------
//
// `gev::InetAddress` is an IPv4 or IPv6 socket address (a Unix socket's peer is one that says
// only AF_UNIX: `SocketAddress` holds paths), parsed from the forms gev and Go accept:
// ":1833" (every local address), "127.0.0.1:1833", "[::1]:1833" and "localhost:1833" (resolved
// from the hosts database by getaddrinfo; no other name service is asked for loopback names).
//
//   absl::StatusOr<gev::InetAddress> address = gev::InetAddress::Parse("[::1]:0");
//   bind(fd, address->sockaddr(), address->length());
//
// Thread safety: a value type; const methods are safe from any thread.

#ifndef GEV_NET_INET_ADDRESS_H_
#define GEV_NET_INET_ADDRESS_H_

#if __cplusplus < 201703L
#error "gev needs C++17: compile with -std=c++17 (with Bazel: build --cxxopt=-std=c++17 in .bazelrc)"
#endif

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace gev {

// Which address family a listener or a parse may use, as Go's "tcp", "tcp4" and "tcp6".
enum class NetworkType { kTcp, kTcp4, kTcp6 };

// Parses "tcp", "tcp4" or "tcp6".
absl::StatusOr<NetworkType> ParseNetwork(absl::string_view name);

class InetAddress {
 public:
  InetAddress() = default;

  // InetAddress::Parse() — "host:port", "[v6]:port" or ":port". With kTcp6, ":port" is the
  // IPv6 any-address; otherwise IPv4's. Host names are resolved with getaddrinfo (it may
  // block): NotFound for a name that does not exist (or has no address of the family),
  // Unavailable when the name service failed to answer, InvalidArgument for what is no
  // address.
  static absl::StatusOr<InetAddress> Parse(absl::string_view host_port,
                                           NetworkType network = NetworkType::kTcp);
  static InetAddress FromSockaddr(const struct sockaddr* address, socklen_t length);
  static InetAddress Loopback(uint16_t port, int family = AF_INET);

  int family() const { return storage_.any.sa_family; }
  uint16_t port() const;
  const struct sockaddr* sockaddr() const {
    return &storage_.any;
  }
  socklen_t length() const;
  // "127.0.0.1:1833", "[::1]:1833", or "unix".
  std::string ToString() const;

 private:
  // Only the two families a TCP address can have: 28 bytes, where sockaddr_storage takes 128
  // (every connection keeps its peer's).
  union Storage {
    struct sockaddr any;
    sockaddr_in v4;
    sockaddr_in6 v6;
  };
  Storage storage_{};
};

// `gev::PackedInetAddress` keeps an InetAddress in 24 bytes instead of 28, for objects there
// are many of (a connection keeps its peer's): everything but an IPv6 address's flow label,
// which the kernel reports for accepted peers as 0 unless flow labels are reflected, and which
// says nothing about who the peer is. Copyable; no thread-safety of its own.
class PackedInetAddress {
 public:
  PackedInetAddress() = default;
  explicit PackedInetAddress(const InetAddress& address);
  InetAddress Unpack() const;
  int family() const { return family_; }

 private:
  unsigned char address_[16] = {};  // IPv4's 4 bytes, or IPv6's 16.
  uint32_t scope_id_ = 0;
  uint16_t port_ = 0;  // Network byte order.
  sa_family_t family_ = AF_UNSPEC;
};

namespace net_internal {

// LookupFailure() — the Status for getaddrinfo's `rc` (an EAI_ code; 0: no address) for `host`.
absl::Status LookupFailure(int rc, absl::string_view host);

}  // namespace net_internal

}  // namespace gev

#endif  // GEV_NET_INET_ADDRESS_H_

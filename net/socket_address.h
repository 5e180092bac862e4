// -----------------------------------------------------------------------------
// File: net/socket_address.h
// -----------------------------------------------------------------------------
//
// `gev::SocketAddress` is where a listener binds or a client connects: an IPv4 or IPv6 address
// (an `InetAddress`) or a Unix domain socket, named by a path ("/run/app.sock") or, on Linux,
// by an abstract name ("@app", no file). It is the setup-time address; a connection keeps its
// peer as the smaller `InetAddress`, which for a Unix socket says only the family.
//
//   absl::StatusOr<gev::SocketAddress> unix_socket = gev::SocketAddress::Parse("unix", "@app");
//   absl::StatusOr<gev::SocketAddress> tcp = gev::SocketAddress::Parse("tcp", "127.0.0.1:0");
//   sockaddr_storage storage;
//   socklen_t length = tcp->Fill(&storage);
//
// Thread safety: a value type; const methods are safe from any thread.

#ifndef GEV_NET_SOCKET_ADDRESS_H_
#define GEV_NET_SOCKET_ADDRESS_H_

#if __cplusplus < 201703L
#error "gev needs C++17: compile with -std=c++17 (with Bazel: build --cxxopt=-std=c++17 in .bazelrc)"
#endif

#include <sys/socket.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "net/inet_address.h"

namespace gev {

// Who is on the other end of a Unix socket, as the kernel saw it when it connected
// (SO_PEERCRED on Linux; getpeereid on the BSDs, which gives no pid: -1).
struct PeerCredentials {
  int64_t pid = -1;
  uint32_t uid = 0;
  uint32_t gid = 0;
};

class SocketAddress {
 public:
  SocketAddress() = default;
  // An IP address; implicit, so every call that takes a SocketAddress takes an InetAddress.
  SocketAddress(const InetAddress& inet) : inet_(inet) {}  // NOLINT(runtime/explicit)

  // SocketAddress::Parse() — `network` is "tcp", "tcp4", "tcp6" (`address` as
  // InetAddress::Parse takes it, host names resolved: this may block) or "unix" (a path, or
  // "@name" for a Linux abstract name).
  static absl::StatusOr<SocketAddress> Parse(absl::string_view network,
                                             absl::string_view address);
  // SocketAddress::Unix() — a path of at most 107 bytes, or "@name" (Linux only).
  static absl::StatusOr<SocketAddress> Unix(absl::string_view path);
  static SocketAddress FromSockaddr(const struct sockaddr* address, socklen_t length);

  int family() const { return unix_ ? AF_UNIX : inet_.family(); }
  bool is_unix() const { return unix_; }
  // For a Unix socket, an address that says only AF_UNIX.
  const InetAddress& inet() const { return inet_; }
  // "/path", "@name" for an abstract name; empty for an IP address or an unnamed socket.
  const std::string& unix_path() const { return path_; }
  bool is_abstract() const { return unix_ && !path_.empty() && path_[0] == '@'; }
  // 0 for a Unix socket.
  uint16_t port() const { return unix_ ? 0 : inet_.port(); }

  // SocketAddress::Fill() — writes the sockaddr; returns its length.
  socklen_t Fill(sockaddr_storage* out) const;
  // "127.0.0.1:80", "[::1]:80", "/run/app.sock", "@app"; "unix" for an unnamed socket.
  std::string ToString() const;

 private:
  InetAddress inet_;
  std::string path_;
  bool unix_ = false;
};

}  // namespace gev

#endif  // GEV_NET_SOCKET_ADDRESS_H_

// -----------------------------------------------------------------------------
// File: net/inherited_sockets.h
// -----------------------------------------------------------------------------
//
// Sockets a process did not open itself: the ones systemd passes by socket activation
// (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`, read as sd_listen_fds(3) reads them, without
// linking libsystemd), and any descriptor handed over another way, checked rather than
// assumed: what type it is, whether it listens, where it is bound.
//
//   absl::StatusOr<std::vector<gev::InheritedSocket>> sockets = gev::TakeSystemdSockets();
//   for (const gev::InheritedSocket& socket : *sockets) {
//     // socket.fd, socket.name ("http"), socket.type (SOCK_STREAM), socket.listening,
//     // socket.address ("0.0.0.0:8080", "/run/app.sock")
//   }
//
// Thread safety: TakeSystemdSockets reads and unsets environment variables, which is safe only
// while no other thread touches the environment: call it at start-up. The others are plain
// functions.

#ifndef GEV_NET_INHERITED_SOCKETS_H_
#define GEV_NET_INHERITED_SOCKETS_H_

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "net/socket_address.h"

namespace gev {

struct InheritedSocket {
  int fd = -1;
  std::string name;         // From LISTEN_FDNAMES; "unknown" when systemd gave none.
  int type = 0;             // SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET.
  bool listening = false;   // A stream socket that listen() was called on.
  SocketAddress address;    // Where it is bound (a Unix socket's path too).
};

// The first descriptor systemd passes (SD_LISTEN_FDS_START).
inline constexpr int kFirstSystemdSocket = 3;

// DescribeSocket() — what `fd` is. FailedPrecondition when it is not open or not a socket, or
// is of a family other than IPv4, IPv6 and Unix.
absl::StatusOr<InheritedSocket> DescribeSocket(int fd);

// SocketsFromEnvironment() — the sockets named by LISTEN_FDS and LISTEN_FDNAMES as `lookup`
// gives them (getenv's contract: null when unset), numbered from `first_fd`, if LISTEN_PID is
// `pid`; none if LISTEN_PID is unset or another process's (the variables were meant for it).
// Each is made close-on-exec and described. InvalidArgument for a malformed variable or a
// count of names that does not match; FailedPrecondition for a descriptor that is no socket.
absl::StatusOr<std::vector<InheritedSocket>> SocketsFromEnvironment(
    const std::function<const char*(const char*)>& lookup, int first_fd, pid_t pid);

// TakeSystemdSockets() — SocketsFromEnvironment over this process's environment from
// descriptor 3; then unsets the three variables, so that a child this process starts does not
// take the sockets for its own.
absl::StatusOr<std::vector<InheritedSocket>> TakeSystemdSockets();

}  // namespace gev

#endif  // GEV_NET_INHERITED_SOCKETS_H_

// Socket helpers shared by the acceptor, the connection, the server and the tests: non-blocking
// close-on-exec sockets, options, addresses. Setup errors come back as absl::Status with the
// errno text.
//
// Writing to a socket whose peer is gone raises SIGPIPE on Linux; every helper that creates a
// socket first sets SIGPIPE to be ignored for the process (once), as muduo does, so a peer's
// reset is an EPIPE on one connection, never the process's death.
//
// Thread safety: every function is thread-safe.

#ifndef GEV_NET_SOCKET_OPS_H_
#define GEV_NET_SOCKET_OPS_H_

#include <cerrno>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "net/inet_address.h"
#include "net/socket_address.h"

namespace gev::sockets {

// A non-blocking, close-on-exec stream socket of `family` (TCP, or a Unix socket).
absl::StatusOr<int> CreateNonBlockingSocket(int family);
// Makes an accepted or otherwise obtained descriptor non-blocking and close-on-exec.
absl::Status SetNonBlockingCloseOnExec(int fd);

absl::Status SetTcpNoDelay(int fd, bool on);
// SO_KEEPALIVE, and where supported the idle time and interval between probes.
absl::Status SetKeepAlive(int fd, bool on, absl::Duration interval);
absl::Status SetReuseAddr(int fd, bool on);
absl::Status SetReusePort(int fd, bool on);

// How long a Unix stream path that refuses connects is given before it is taken for a stale
// file (BindUnix; the handoff request): a listener between bind and listen refuses too.
inline constexpr absl::Duration kStartingListenerGrace = absl::Milliseconds(200);

// Runs `attempt` (a connect to a Unix stream path: absl::StatusOr<int> of 0 or the connect's
// errno) again every 5 ms while it is refused (ECONNREFUSED), for up to `grace`, and returns
// its last result. The one rule by which a refusing path is waited for before it is taken for
// stale (see kStartingListenerGrace).
template <typename Attempt>
absl::StatusOr<int> RetryWhileRefused(absl::Duration grace, Attempt attempt) {
  const absl::Time give_up = absl::Now() + grace;
  absl::StatusOr<int> result = attempt();
  while (result.ok() && *result == ECONNREFUSED && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(5));
    result = attempt();
  }
  return result;
}

// A listening socket bound to `address`. TCP: SO_REUSEADDR always, SO_REUSEPORT if asked. A
// Unix socket path left by a process that died (nothing accepts on it) is replaced; one a live
// listener holds is not, and that is an error, as is a path that is not a socket.
absl::StatusOr<int> Listen(const SocketAddress& address, bool reuse_port,
                           int backlog = SOMAXCONN,
                           absl::Duration stale_grace = kStartingListenerGrace);
// Binds Unix socket `fd` (of `type`: SOCK_STREAM or SOCK_DGRAM) to `address`'s path or
// abstract name, replacing a stale socket file: one nobody has bound (its owner died without
// unlinking it; a connect of `type` to it is refused). A live owner's file is left alone. A
// stream socket's owner between its bind and its listen refuses too, for a moment: a stream
// path is taken for stale once it has refused for `stale_grace` (zero: at once, for a caller that
// knows it stale).
absl::Status BindUnix(int fd, const SocketAddress& address, int type,
                      absl::Duration stale_grace = kStartingListenerGrace);
// A blocking-style connect for tools and tests: returns a non-blocking connected socket.
absl::StatusOr<int> ConnectBlocking(const SocketAddress& address);

absl::StatusOr<InetAddress> LocalAddress(int fd);
absl::StatusOr<InetAddress> PeerAddress(int fd);
// The socket's own address with a Unix socket's path (LocalAddress() says only the family).
absl::StatusOr<SocketAddress> LocalSocketAddress(int fd);

// Who is on the other end of a Unix socket (SO_PEERCRED on Linux, getpeereid elsewhere).
absl::StatusOr<PeerCredentials> GetPeerCredentials(int fd);
// SO_LINGER with a zero timeout: the next close() sends RST instead of FIN and drops what the
// kernel still holds. For ending a stream that is known to be truncated.
void SetLingerZero(int fd);
// The pending error on a socket (SO_ERROR), 0 if none.
int PendingError(int fd);

// Ignores SIGPIPE process-wide; idempotent.
void IgnoreSigPipe();

// Raises this process's soft limit on open descriptors to its hard limit: a server holds one
// per client, and the usual soft limit is 1,024.
absl::Status RaiseOpenFileLimit();

}  // namespace gev::sockets

#endif  // GEV_NET_SOCKET_OPS_H_

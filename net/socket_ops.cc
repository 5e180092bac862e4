#include "net/socket_ops.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>

#include "absl/strings/str_cat.h"

namespace gev::sockets {
namespace {

absl::Status SetIntOption(int fd, int level, int name, int value, const char* what) {
  if (::setsockopt(fd, level, name, &value, sizeof(value)) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("setsockopt(", what, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RaiseOpenFileLimit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return absl::ErrnoToStatus(errno, "getrlimit");
  if (limit.rlim_cur == limit.rlim_max) return absl::OkStatus();
  limit.rlim_cur = limit.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) return absl::ErrnoToStatus(errno, "setrlimit");
  return absl::OkStatus();
}

void IgnoreSigPipe() {
  static std::once_flag once;
  std::call_once(once, [] { ::signal(SIGPIPE, SIG_IGN); });
}

absl::Status SetNonBlockingCloseOnExec(int fd) {
  int flags = ::fcntl(fd, F_GETFL, 0);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    return absl::ErrnoToStatus(errno, "fcntl(O_NONBLOCK)");
  }
  if (::fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) return absl::ErrnoToStatus(errno, "fcntl(CLOEXEC)");
  return absl::OkStatus();
}

absl::StatusOr<int> CreateNonBlockingSocket(int family) {
  IgnoreSigPipe();
#ifdef SOCK_NONBLOCK
  int fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::ErrnoToStatus(errno, "socket");
#else
  int fd = ::socket(family, SOCK_STREAM, 0);
  if (fd < 0) return absl::ErrnoToStatus(errno, "socket");
  absl::Status status = SetNonBlockingCloseOnExec(fd);
  if (!status.ok()) {
    ::close(fd);
    return status;
  }
#endif
  return fd;
}

absl::Status SetTcpNoDelay(int fd, bool on) {
  return SetIntOption(fd, IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0, "TCP_NODELAY");
}

absl::Status SetKeepAlive(int fd, bool on, absl::Duration interval) {
  absl::Status status = SetIntOption(fd, SOL_SOCKET, SO_KEEPALIVE, on ? 1 : 0, "SO_KEEPALIVE");
  if (!status.ok() || !on || interval <= absl::ZeroDuration()) return status;
  int seconds = static_cast<int>(absl::ToInt64Seconds(interval));
  if (seconds < 1) seconds = 1;
#ifdef TCP_KEEPIDLE
  status = SetIntOption(fd, IPPROTO_TCP, TCP_KEEPIDLE, seconds, "TCP_KEEPIDLE");
  if (!status.ok()) return status;
#endif
#ifdef TCP_KEEPINTVL
  status = SetIntOption(fd, IPPROTO_TCP, TCP_KEEPINTVL, seconds, "TCP_KEEPINTVL");
#endif
  return status;
}

absl::Status SetReuseAddr(int fd, bool on) {
  return SetIntOption(fd, SOL_SOCKET, SO_REUSEADDR, on ? 1 : 0, "SO_REUSEADDR");
}

absl::Status SetReusePort(int fd, bool on) {
  return SetIntOption(fd, SOL_SOCKET, SO_REUSEPORT, on ? 1 : 0, "SO_REUSEPORT");
}

namespace {

// Connects a fresh non-blocking socket of `type` to `raw` and closes it: 0 when something
// answered, else the connect's errno (ECONNREFUSED: nobody listens or has bound there).
absl::StatusOr<int> ProbeUnix(const sockaddr* raw, socklen_t length, int type) {
#ifdef SOCK_CLOEXEC
  // Close-on-exec from the start: another thread may fork and exec meanwhile (a restart).
  int probe = ::socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
#else
  int probe = ::socket(AF_UNIX, type, 0);
#endif
  if (probe < 0) return absl::ErrnoToStatus(errno, "socket");
  // Non-blocking: a stream listener's full backlog must not hold this connect.
  absl::Status nonblocking = SetNonBlockingCloseOnExec(probe);
  if (!nonblocking.ok()) {
    ::close(probe);
    return nonblocking;
  }
  int probed = ::connect(probe, raw, length) == 0 ? 0 : errno;
  ::close(probe);
  return probed;
}

}  // namespace

absl::Status BindUnix(int fd, const SocketAddress& address, int type,
                      absl::Duration stale_grace) {
  sockaddr_storage storage;
  socklen_t length = address.Fill(&storage);
  const sockaddr* raw = reinterpret_cast<const sockaddr*>(&storage);
  if (::bind(fd, raw, length) == 0) return absl::OkStatus();
  int error = errno;
  std::string text = absl::StrCat("bind ", address.ToString());
  if (error != EADDRINUSE || address.is_abstract()) return absl::ErrnoToStatus(error, text);
  struct stat file {};
  if (::lstat(address.unix_path().c_str(), &file) != 0 || !S_ISSOCK(file.st_mode)) {
    return absl::ErrnoToStatus(error, absl::StrCat(text, " (the path exists, not a socket)"));
  }
  // A stream socket refuses between its owner's bind and listen, too: a refusal is only taken
  // for a stale file once it has lasted `stale_grace`.
  absl::StatusOr<int> probed =
      RetryWhileRefused(type == SOCK_STREAM ? stale_grace : absl::ZeroDuration(),
                        [&] { return ProbeUnix(raw, length, type); });
  if (!probed.ok()) return probed.status();
  // Connected, or (a stream listener's) backlog is full (EAGAIN): somebody has it. Only Linux
  // says EAGAIN for a full backlog; the BSDs and macOS refuse (ECONNREFUSED), so there a
  // listener too busy to accept is taken for stale. Gone meanwhile (ENOENT: its owner removed
  // it): the path is free.
  if (*probed != ECONNREFUSED && *probed != ENOENT) {
    return absl::ErrnoToStatus(error, absl::StrCat(text, ": a live listener has it"));
  }
  if (*probed == ECONNREFUSED && ::unlink(address.unix_path().c_str()) != 0 && errno != ENOENT) {
    return absl::ErrnoToStatus(errno, absl::StrCat("unlink stale ", address.ToString()));
  }
  if (::bind(fd, raw, length) != 0) return absl::ErrnoToStatus(errno, text);
  return absl::OkStatus();
}

absl::StatusOr<int> Listen(const SocketAddress& address, bool reuse_port, int backlog,
                           absl::Duration stale_grace) {
  if (address.is_unix() && reuse_port) {
    return absl::InvalidArgumentError("SO_REUSEPORT is for TCP; a unix socket has one listener");
  }
  absl::StatusOr<int> fd = CreateNonBlockingSocket(address.family());
  if (!fd.ok()) return fd;
  absl::Status status;
  if (address.is_unix()) {
    status = BindUnix(*fd, address, SOCK_STREAM, stale_grace);
  } else {
    status = SetReuseAddr(*fd, true);
    if (status.ok() && reuse_port) status = SetReusePort(*fd, true);
    const InetAddress& inet = address.inet();
    if (status.ok() && ::bind(*fd, inet.sockaddr(), inet.length()) != 0) {
      status = absl::ErrnoToStatus(errno, absl::StrCat("bind ", address.ToString()));
    }
  }
  if (status.ok() && ::listen(*fd, backlog) != 0) {
    status = absl::ErrnoToStatus(errno, absl::StrCat("listen ", address.ToString()));
  }
  if (!status.ok()) {
    ::close(*fd);
    return status;
  }
  return fd;
}

absl::StatusOr<int> ConnectBlocking(const SocketAddress& address) {
  absl::StatusOr<int> fd = CreateNonBlockingSocket(address.family());
  if (!fd.ok()) return fd;
  sockaddr_storage storage;
  socklen_t length = address.Fill(&storage);
  if (::connect(*fd, reinterpret_cast<const sockaddr*>(&storage), length) != 0 &&
      errno != EINPROGRESS) {
    int saved = errno;
    ::close(*fd);
    return absl::ErrnoToStatus(saved, absl::StrCat("connect ", address.ToString()));
  }
  pollfd waiter{*fd, POLLOUT, 0};
  int ready = ::poll(&waiter, 1, 10000);
  int error = ready == 1 ? PendingError(*fd) : ETIMEDOUT;
  if (error != 0) {
    ::close(*fd);
    return absl::ErrnoToStatus(error, absl::StrCat("connect ", address.ToString()));
  }
  return fd;
}

namespace {

using AddressQuery = int (*)(int, sockaddr*, socklen_t*);

absl::StatusOr<InetAddress> QueryAddress(int fd, AddressQuery query, const char* what) {
  sockaddr_storage storage{};
  socklen_t length = sizeof(storage);
  if (query(fd, reinterpret_cast<sockaddr*>(&storage), &length) != 0) {
    return absl::ErrnoToStatus(errno, what);
  }
  return InetAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&storage), length);
}

}  // namespace

absl::StatusOr<InetAddress> LocalAddress(int fd) {
  return QueryAddress(fd, ::getsockname, "getsockname");
}

absl::StatusOr<InetAddress> PeerAddress(int fd) {
  return QueryAddress(fd, ::getpeername, "getpeername");
}

absl::StatusOr<SocketAddress> LocalSocketAddress(int fd) {
  sockaddr_storage storage{};
  socklen_t length = sizeof(storage);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &length) != 0) {
    return absl::ErrnoToStatus(errno, "getsockname");
  }
  return SocketAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&storage), length);
}

absl::StatusOr<PeerCredentials> GetPeerCredentials(int fd) {
  PeerCredentials credentials;
#if defined(__linux__)
  ucred peer{};
  socklen_t length = sizeof(peer);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0) {
    return absl::ErrnoToStatus(errno, "getsockopt(SO_PEERCRED)");
  }
  credentials.pid = peer.pid;
  credentials.uid = peer.uid;
  credentials.gid = peer.gid;
#else
  uid_t uid = 0;
  gid_t gid = 0;
  if (::getpeereid(fd, &uid, &gid) != 0) return absl::ErrnoToStatus(errno, "getpeereid");
  credentials.uid = uid;
  credentials.gid = gid;
#endif
  return credentials;
}

void SetLingerZero(int fd) {
  linger reset{};
  reset.l_onoff = 1;
  reset.l_linger = 0;
  // Fails only for a descriptor that is not a socket; close() then does what it always does.
  (void)::setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
}

int PendingError(int fd) {
  int error = 0;
  socklen_t length = sizeof(error);
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) return errno;
  return error;
}

}  // namespace gev::sockets

#include "net/inherited_sockets.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "net/socket_ops.h"

namespace gev {

namespace {

// More than systemd ever passes in practice, and few enough that a corrupt count is caught.
constexpr int kMostSockets = 1024;

absl::StatusOr<int> IntOption(int fd, int option, const char* what) {
  int value = 0;
  socklen_t length = sizeof value;
  if (::getsockopt(fd, SOL_SOCKET, option, &value, &length) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("descriptor ", fd, ": ", what, ": ", strerror(errno)));
  }
  return value;
}

}  // namespace

absl::StatusOr<InheritedSocket> DescribeSocket(int fd) {
  InheritedSocket socket;
  socket.fd = fd;
  absl::StatusOr<int> type = IntOption(fd, SO_TYPE, "not a socket");
  if (!type.ok()) return type.status();
  socket.type = *type;
  absl::StatusOr<int> domain = IntOption(fd, SO_DOMAIN, "SO_DOMAIN");
  if (!domain.ok()) return domain.status();
  if (*domain != AF_INET && *domain != AF_INET6 && *domain != AF_UNIX) {
    return absl::FailedPreconditionError(
        absl::StrCat("descriptor ", fd, ": a socket of family ", *domain));
  }
  if (socket.type == SOCK_STREAM || socket.type == SOCK_SEQPACKET) {
    absl::StatusOr<int> listening = IntOption(fd, SO_ACCEPTCONN, "SO_ACCEPTCONN");
    if (!listening.ok()) return listening.status();
    socket.listening = *listening != 0;
  }
  absl::StatusOr<SocketAddress> address = sockets::LocalSocketAddress(fd);
  if (!address.ok()) return address.status();
  socket.address = *address;
  return socket;
}

absl::StatusOr<std::vector<InheritedSocket>> SocketsFromEnvironment(
    const std::function<const char*(const char*)>& lookup, int first_fd, pid_t pid) {
  std::vector<InheritedSocket> sockets;
  const char* listen_pid = lookup("LISTEN_PID");
  if (listen_pid == nullptr) return sockets;
  int64_t for_pid = 0;
  if (!absl::SimpleAtoi(listen_pid, &for_pid) || for_pid <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("LISTEN_PID=\"", listen_pid, "\""));
  }
  if (for_pid != pid) return sockets;  // Meant for another process (our parent, say).
  const char* listen_fds = lookup("LISTEN_FDS");
  int count = 0;
  if (listen_fds == nullptr || !absl::SimpleAtoi(listen_fds, &count) || count < 0 ||
      count > kMostSockets) {
    return absl::InvalidArgumentError(
        absl::StrCat("LISTEN_FDS=\"", listen_fds == nullptr ? "" : listen_fds, "\""));
  }
  std::vector<std::string> names(static_cast<size_t>(count), "unknown");
  if (const char* listen_names = lookup("LISTEN_FDNAMES"); listen_names != nullptr) {
    std::vector<std::string> given = absl::StrSplit(listen_names, ':');
    if (given.size() != names.size()) {
      return absl::InvalidArgumentError(absl::StrCat("LISTEN_FDNAMES names ", given.size(),
                                                     " sockets, LISTEN_FDS ", count));
    }
    names = std::move(given);
  }
  for (int i = 0; i < count; ++i) {
    const int fd = first_fd + i;
    absl::StatusOr<InheritedSocket> socket = DescribeSocket(fd);
    if (!socket.ok()) return socket.status();
    // Ours now: not for the programs this process may start.
    const int flags = ::fcntl(fd, F_GETFD);
    if (flags < 0 || ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("descriptor ", fd, ": FD_CLOEXEC: ", strerror(errno)));
    }
    socket->name = names[static_cast<size_t>(i)];
    sockets.push_back(std::move(*socket));
  }
  return sockets;
}

absl::StatusOr<std::vector<InheritedSocket>> TakeSystemdSockets() {
  absl::StatusOr<std::vector<InheritedSocket>> sockets =
      SocketsFromEnvironment([](const char* name) { return ::getenv(name); },
                             kFirstSystemdSocket, ::getpid());
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  return sockets;
}

}  // namespace gev

#include "net/socket_address.h"

#include <sys/un.h>

#include <cstddef>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace gev {
namespace {

constexpr size_t kPathOffset = offsetof(sockaddr_un, sun_path);
// sun_path less its terminating NUL (paths) or leading NUL (abstract names).
constexpr size_t kMaxPathBytes = sizeof(sockaddr_un::sun_path) - 1;

InetAddress UnixFamilyOnly() {
  sockaddr family_only{};
  family_only.sa_family = AF_UNIX;
  return InetAddress::FromSockaddr(&family_only, sizeof(sa_family_t));
}

}  // namespace

absl::StatusOr<SocketAddress> SocketAddress::Parse(absl::string_view network,
                                                   absl::string_view address) {
  if (network == "unix") return Unix(address);
  absl::StatusOr<NetworkType> type = ParseNetwork(network);
  if (!type.ok()) return type.status();
  absl::StatusOr<InetAddress> inet = InetAddress::Parse(address, *type);
  if (!inet.ok()) return inet.status();
  return SocketAddress(*inet);
}

absl::StatusOr<SocketAddress> SocketAddress::Unix(absl::string_view path) {
  if (path.empty() || path == "@") {
    return absl::InvalidArgumentError("a unix socket needs a path or an @name");
  }
#ifndef __linux__
  if (path[0] == '@') {
    return absl::InvalidArgumentError(
        absl::StrCat("abstract unix socket names (\"", path, "\") exist on Linux only"));
  }
#endif
  size_t bytes = path[0] == '@' ? path.size() - 1 : path.size();
  if (bytes > kMaxPathBytes) {
    return absl::InvalidArgumentError(absl::StrCat("unix socket path \"", path, "\" is longer than ",
                                                   kMaxPathBytes, " bytes"));
  }
  if (path.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError("unix socket path has a NUL byte");
  }
  SocketAddress address;
  address.unix_ = true;
  address.path_ = std::string(path);
  address.inet_ = UnixFamilyOnly();
  return address;
}

SocketAddress SocketAddress::FromSockaddr(const struct sockaddr* address, socklen_t length) {
  if (length < sizeof(sa_family_t) || address->sa_family != AF_UNIX) {
    return SocketAddress(InetAddress::FromSockaddr(address, length));
  }
  SocketAddress result;
  result.unix_ = true;
  result.inet_ = UnixFamilyOnly();
  if (length <= kPathOffset) return result;  // Unnamed.
  const auto* un = reinterpret_cast<const sockaddr_un*>(address);
  size_t bytes = std::min<size_t>(length - kPathOffset, sizeof(un->sun_path));
  if (un->sun_path[0] == '\0') {
    result.path_ = absl::StrCat("@", absl::string_view(un->sun_path + 1, bytes - 1));
  } else {
    result.path_ = std::string(un->sun_path, strnlen(un->sun_path, bytes));
  }
  return result;
}

socklen_t SocketAddress::Fill(sockaddr_storage* out) const {
  std::memset(out, 0, sizeof(*out));
  if (!unix_) {
    std::memcpy(out, inet_.sockaddr(), inet_.length());
    return inet_.length();
  }
  auto* un = reinterpret_cast<sockaddr_un*>(out);
  un->sun_family = AF_UNIX;
  if (is_abstract()) {
    // The name is the bytes after a leading NUL, as long as the length says: no terminator.
    std::memcpy(un->sun_path + 1, path_.data() + 1, path_.size() - 1);
    return static_cast<socklen_t>(kPathOffset + path_.size());
  }
  std::memcpy(un->sun_path, path_.data(), path_.size());
  return static_cast<socklen_t>(kPathOffset + path_.size() + 1);
}

std::string SocketAddress::ToString() const {
  if (!unix_) return inet_.ToString();
  return path_.empty() ? "unix" : path_;
}

}  // namespace gev

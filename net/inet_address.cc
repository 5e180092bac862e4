#include "net/inet_address.h"

#include <arpa/inet.h>
#include <netdb.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace gev {

namespace net_internal {

absl::Status LookupFailure(int rc, absl::string_view host) {
  std::string why = absl::StrCat("cannot resolve \"", host, "\": ",
                                 rc != 0 ? ::gai_strerror(rc) : "no address");
  switch (rc) {
    case EAI_NONAME:  // No such name (NXDOMAIN, nothing in the hosts file).
#ifdef EAI_NODATA
    case EAI_NODATA:  // The name exists, with no address.
#endif
#ifdef EAI_ADDRFAMILY
    case EAI_ADDRFAMILY:  // None of the family asked for (tcp4, tcp6).
#endif
    case 0:
      return absl::NotFoundError(why);
    case EAI_AGAIN:  // The name service did not answer in time: another try may work.
    case EAI_FAIL:
      return absl::UnavailableError(why);
    case EAI_SYSTEM:
      return absl::ErrnoToStatus(errno, why);
    default:
      return absl::InvalidArgumentError(why);
  }
}

}  // namespace net_internal


absl::StatusOr<NetworkType> ParseNetwork(absl::string_view name) {
  if (name == "tcp") return NetworkType::kTcp;
  if (name == "tcp4") return NetworkType::kTcp4;
  if (name == "tcp6") return NetworkType::kTcp6;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown network \"", name, "\" (want tcp, tcp4, tcp6 or unix)"));
}

absl::StatusOr<InetAddress> InetAddress::Parse(absl::string_view host_port, NetworkType network) {
  size_t colon = host_port.rfind(':');
  if (colon == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("address \"", host_port, "\" has no port"));
  }
  absl::string_view host = host_port.substr(0, colon);
  absl::string_view port_text = host_port.substr(colon + 1);
  uint32_t port = 0;
  if (!absl::SimpleAtoi(port_text, &port) || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("bad port in address \"", host_port, "\""));
  }
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
    if (network == NetworkType::kTcp4) {
      return absl::InvalidArgumentError(absl::StrCat("tcp4 cannot use \"", host_port, "\""));
    }
    network = NetworkType::kTcp6;
  }

  InetAddress address;
  if (host.empty()) {
    if (network == NetworkType::kTcp6) {
      auto* v6 = &address.storage_.v6;
      v6->sin6_family = AF_INET6;
      v6->sin6_addr = in6addr_any;
      v6->sin6_port = htons(static_cast<uint16_t>(port));
    } else {
      auto* v4 = &address.storage_.v4;
      v4->sin_family = AF_INET;
      v4->sin_addr.s_addr = htonl(INADDR_ANY);
      v4->sin_port = htons(static_cast<uint16_t>(port));
    }
    return address;
  }

  addrinfo hints{};
  hints.ai_family = network == NetworkType::kTcp4 ? AF_INET
                    : network == NetworkType::kTcp6 ? AF_INET6
                                                : AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  std::string host_text(host);
  std::string port_string = std::to_string(port);
  addrinfo* results = nullptr;
  int rc = ::getaddrinfo(host_text.c_str(), port_string.c_str(), &hints, &results);
  if (rc != 0 || results == nullptr) {
    if (results != nullptr) ::freeaddrinfo(results);
    return net_internal::LookupFailure(rc, host);
  }
  address = FromSockaddr(results->ai_addr, results->ai_addrlen);
  ::freeaddrinfo(results);
  return address;
}

InetAddress InetAddress::FromSockaddr(const struct sockaddr* address, socklen_t length) {
  InetAddress result;
  if (length < sizeof(sa_family_t)) return result;
  int family = address->sa_family;
  if (family == AF_INET || family == AF_INET6) {
    std::memcpy(&result.storage_, address, std::min<size_t>(length, sizeof(result.storage_)));
  } else {
    // A Unix socket's path does not fit; SocketAddress keeps it where it is needed.
    result.storage_.any.sa_family = static_cast<sa_family_t>(family);
  }
  return result;
}

PackedInetAddress::PackedInetAddress(const InetAddress& address)
    : family_(static_cast<sa_family_t>(address.family())) {
  if (family_ == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(address.sockaddr());
    std::memcpy(address_, &v4->sin_addr, sizeof(v4->sin_addr));
    port_ = v4->sin_port;
  } else if (family_ == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(address.sockaddr());
    std::memcpy(address_, &v6->sin6_addr, sizeof(v6->sin6_addr));
    port_ = v6->sin6_port;
    scope_id_ = v6->sin6_scope_id;
  }
}

InetAddress PackedInetAddress::Unpack() const {
  if (family_ == AF_INET) {
    sockaddr_in v4{};
    v4.sin_family = AF_INET;
    std::memcpy(&v4.sin_addr, address_, sizeof(v4.sin_addr));
    v4.sin_port = port_;
    return InetAddress::FromSockaddr(reinterpret_cast<const struct sockaddr*>(&v4), sizeof(v4));
  }
  if (family_ == AF_INET6) {
    sockaddr_in6 v6{};
    v6.sin6_family = AF_INET6;
    std::memcpy(&v6.sin6_addr, address_, sizeof(v6.sin6_addr));
    v6.sin6_port = port_;
    v6.sin6_scope_id = scope_id_;
    return InetAddress::FromSockaddr(reinterpret_cast<const struct sockaddr*>(&v6), sizeof(v6));
  }
  sockaddr other{};
  other.sa_family = family_;
  return InetAddress::FromSockaddr(&other, sizeof(other));
}

InetAddress InetAddress::Loopback(uint16_t port, int family) {
  InetAddress address;
  if (family == AF_INET6) {
    auto* v6 = &address.storage_.v6;
    v6->sin6_family = AF_INET6;
    v6->sin6_addr = in6addr_loopback;
    v6->sin6_port = htons(port);
  } else {
    auto* v4 = &address.storage_.v4;
    v4->sin_family = AF_INET;
    v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    v4->sin_port = htons(port);
  }
  return address;
}

uint16_t InetAddress::port() const {
  if (family() == AF_INET6) return ntohs(storage_.v6.sin6_port);
  if (family() == AF_INET) return ntohs(storage_.v4.sin_port);
  return 0;
}

socklen_t InetAddress::length() const {
  if (family() == AF_INET6) return sizeof(sockaddr_in6);
  if (family() == AF_UNIX) return sizeof(sa_family_t);
  return sizeof(sockaddr_in);
}

std::string InetAddress::ToString() const {
  char text[INET6_ADDRSTRLEN] = "";
  if (family() == AF_INET6) {
    ::inet_ntop(AF_INET6, &storage_.v6.sin6_addr, text,
                sizeof(text));
    return absl::StrCat("[", text, "]:", port());
  }
  if (family() == AF_INET) {
    ::inet_ntop(AF_INET, &storage_.v4.sin_addr, text,
                sizeof(text));
    return absl::StrCat(text, ":", port());
  }
  if (family() == AF_UNIX) return "unix";
  return "(unset)";
}

}  // namespace gev

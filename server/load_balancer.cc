#include "server/load_balancer.h"

#include <netinet/in.h>

#include <algorithm>

#include "absl/hash/hash.h"
#include "absl/strings/string_view.h"

namespace gev {

LoadBalancer RoundRobin() {
  return [next = size_t{0}](const InetAddress&, absl::Span<const size_t> loops) mutable {
    return next++ % loops.size();
  };
}

LoadBalancer LeastConnection() {
  return [](const InetAddress&, absl::Span<const size_t> loops) {
    return static_cast<size_t>(std::min_element(loops.begin(), loops.end()) - loops.begin());
  };
}

LoadBalancer SourceAddrHash() {
  // The host only: one client's connections land on one loop whatever their ports.
  return [](const InetAddress& peer, absl::Span<const size_t> loops) {
    absl::string_view host;
    if (peer.family() == AF_INET6) {
      const auto* v6 = reinterpret_cast<const sockaddr_in6*>(peer.sockaddr());
      host = {reinterpret_cast<const char*>(&v6->sin6_addr), sizeof(v6->sin6_addr)};
    } else {
      const auto* v4 = reinterpret_cast<const sockaddr_in*>(peer.sockaddr());
      host = {reinterpret_cast<const char*>(&v4->sin_addr), sizeof(v4->sin_addr)};
    }
    return absl::HashOf(host) % loops.size();
  };
}

}  // namespace gev

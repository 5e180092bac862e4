// -----------------------------------------------------------------------------
// File: tls/internal/server_state.h
// -----------------------------------------------------------------------------
//
// What a ServerContext shares with its transports, the two structs tls.h declares in it:
//   - `ServerContext::Generation`, one certificate set and what goes with it. Reload makes a new
//     one and replaces the current; a handshake holds the one it started with to its end, so
//     a reload never changes a handshake under way.
//   - `ServerContext::HandshakeCount`, the handshakes under way, over every loop, against
//     ServerConfig::max_handshakes.
//
//   std::shared_ptr<const ServerContext::Generation> generation = context->current();
//   SSL_CTX* ctx = generation->ForName("www.example.com");  // Null: stay with default_ctx.
//
// Thread safety: a Generation does not change once made, and is read from every loop;
// HandshakeCount is atomic.

#ifndef GEV_TLS_INTERNAL_SERVER_STATE_H_
#define GEV_TLS_INTERNAL_SERVER_STATE_H_

#include <openssl/ssl.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "tls/internal/openssl_util.h"
#include "tls/tls.h"

namespace gev::tls {

struct ServerContext::HandshakeCount {
  std::atomic<size_t> in_flight{0};
};

// One certificate set and what goes with it: what Reload replaces.
struct ServerContext::Generation {
  uint64_t number = 0;
  internal::CtxPtr default_ctx;
  std::vector<internal::CtxPtr> sni_ctxs;
  // Name (lower case; "*.example.com" for a wildcard) -> one of the contexts above.
  std::map<std::string, SSL_CTX*, std::less<>> by_name;
  std::string alpn_wire;
  absl::Duration handshake_timeout;
  size_t max_handshakes = 0;
  bool allow_tls12 = true;
  std::shared_ptr<TicketKeys> ticket_keys;  // Kept alive for the contexts' ex_data.

  SSL_CTX* ForName(std::string_view name) const {
    std::string lower = absl::AsciiStrToLower(std::string(name));
    auto exact = by_name.find(lower);
    if (exact != by_name.end()) return exact->second;
    size_t dot = lower.find('.');
    if (dot != std::string::npos) {
      auto wildcard = by_name.find(absl::StrCat("*", lower.substr(dot)));
      if (wildcard != by_name.end()) return wildcard->second;
    }
    return nullptr;
  }
};

}  // namespace gev::tls

#endif  // GEV_TLS_INTERNAL_SERVER_STATE_H_

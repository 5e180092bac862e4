// -----------------------------------------------------------------------------
// File: tls/internal/client_state.h
// -----------------------------------------------------------------------------
//
// `ClientContext::State`, which tls.h declares: what a ClientContext shares with its transports.
// Its SSL_CTX and settings, and its session cache, the last session of each server name,
// which the next connection to that name offers to resume. OpenSSL's new-session callback
// (client_context.cc) keeps sessions; the transport factory takes one for each dial:
//
//   if (SSL_SESSION* session = state->Take(name)) {
//     (void)SSL_set_session(ssl, session);
//     SSL_SESSION_free(session);
//   }
//
// Thread safety: the settings are set before the State is shared, and only read after; Keep
// and Take are thread-safe (clients dial from every loop).

#ifndef GEV_TLS_INTERNAL_CLIENT_STATE_H_
#define GEV_TLS_INTERNAL_CLIENT_STATE_H_

#include <openssl/ssl.h>

#include <cstddef>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/time/time.h"
#include "tls/tls.h"

namespace gev::tls {

// The client's context and the sessions it may resume, by server name.
struct ClientContext::State {
  ~State() {
    for (auto& [name, session] : sessions) SSL_SESSION_free(session);
    SSL_CTX_free(ctx);
  }
  // Most server names whose last session is kept: a client of many servers keeps a bounded
  // map (when full, the first name in order is dropped).
  static constexpr size_t kMaxSessions = 1024;

  SSL_CTX* ctx = nullptr;
  std::string alpn_wire;
  bool verify_peer = true;
  bool resume_sessions = true;
  absl::Duration handshake_timeout;
  std::mutex mutex;
  std::map<std::string, SSL_SESSION*, std::less<>> sessions;  // Guarded by mutex.

  // Takes `session`.
  void Keep(const std::string& name, SSL_SESSION* session) {
    std::lock_guard<std::mutex> lock(mutex);
    auto found = sessions.find(name);
    if (found != sessions.end()) {
      SSL_SESSION_free(found->second);
      found->second = session;
      return;
    }
    if (sessions.size() >= kMaxSessions) {
      SSL_SESSION_free(sessions.begin()->second);
      sessions.erase(sessions.begin());
    }
    sessions.emplace(name, session);
  }

  // A session to offer to `name` (the caller owns it), or null. A TLS 1.3 one is taken out:
  // its ticket is for one connection (RFC 8446 C.4), which gets a new one. The kept sessions
  // are copies no connection uses, so nothing changes them behind the lock (OpenSSL marks a
  // connection's own session unresumable when it ends without close_notify).
  SSL_SESSION* Take(std::string_view name) {
    std::lock_guard<std::mutex> lock(mutex);
    auto found = sessions.find(name);
    if (found == sessions.end()) return nullptr;
    SSL_SESSION* kept = found->second;
    if (!SSL_SESSION_is_resumable(kept)) {
      SSL_SESSION_free(kept);
      sessions.erase(found);
      return nullptr;
    }
    if (SSL_SESSION_get_protocol_version(kept) >= TLS1_3_VERSION) {
      sessions.erase(found);
      return kept;
    }
    return SSL_SESSION_dup(kept);  // Null if out of memory: then a full handshake.
  }
};

}  // namespace gev::tls

#endif  // GEV_TLS_INTERNAL_CLIENT_STATE_H_

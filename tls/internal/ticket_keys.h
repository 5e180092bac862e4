// -----------------------------------------------------------------------------
// File: tls/internal/ticket_keys.h
// -----------------------------------------------------------------------------
//
// `TicketKeys` are the keys a server encrypts its session tickets with: resumption by tickets
// keeps no memory per session on the server. A new key encrypts new tickets every `lifetime`;
// tickets of the one before it are still accepted (and replaced) for one more period.
//
// A ServerContext has one, shared by all of its certificate sets, so that resumption survives a
// Reload. Each of its SSL_CTXs points at it through the ex_data slot TicketKeysIndex(), where
// TicketCallback, the ticket key callback, finds it:
//
//   SSL_CTX_set_ex_data(ctx, internal::TicketKeysIndex(), keys.get());   // keys outlive ctx
//   SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, internal::TicketCallback);
//
// Thread safety: thread-safe (handshakes on every loop; Rotate from any thread).

#ifndef GEV_TLS_INTERNAL_TICKET_KEYS_H_
#define GEV_TLS_INTERNAL_TICKET_KEYS_H_

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <mutex>
#include <optional>

#include "absl/time/time.h"

namespace gev::tls {

// Ticket keys: AES-256-CBC with HMAC-SHA256 (the format OpenSSL's own tickets use), named by
// 16 random bytes so that a ticket finds its key.
class TicketKeys {
 public:
  explicit TicketKeys(absl::Duration lifetime);

  void set_lifetime(absl::Duration lifetime);

  // TicketKeys::Rotate() — a new current key now; the current one becomes the previous.
  void Rotate();

  // TicketKeys::Callback() — OpenSSL's ticket key callback, for this set of keys.
  // `single_use`: a TLS 1.3 handshake, whose clients use a ticket once (RFC 8446 C.4), so a
  // resumed connection gets a new ticket (return 2) or the client's next one is a full
  // handshake.
  int Callback(unsigned char name[16], unsigned char* iv, EVP_CIPHER_CTX* cipher,
               EVP_MAC_CTX* mac, int encrypt, bool single_use);

 private:
  struct Key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
    absl::Time created;
  };

  Key NewKey();
  void RotateLocked(absl::Time now);

  std::mutex mutex_;
  absl::Duration lifetime_;     // Guarded by mutex_.
  Key current_;                 // Guarded by mutex_.
  std::optional<Key> previous_; // Guarded by mutex_.
};

namespace internal {

// The ex_data slot of our SSL_CTXs that points at their ticket keys.
int TicketKeysIndex();

// What SSL_CTX_set_tlsext_ticket_key_evp_cb takes: the TicketKeys of `ssl`'s context decide
// (none there: 0, a full handshake).
int TicketCallback(SSL* ssl, unsigned char name[16], unsigned char* iv, EVP_CIPHER_CTX* cipher,
                   EVP_MAC_CTX* mac, int encrypt);

}  // namespace internal
}  // namespace gev::tls

#endif  // GEV_TLS_INTERNAL_TICKET_KEYS_H_

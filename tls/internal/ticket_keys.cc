#include "tls/internal/ticket_keys.h"

#include <openssl/core_names.h>
#include <openssl/rand.h>

#include <cstdlib>
#include <cstring>

#include "absl/time/clock.h"

namespace gev::tls {

TicketKeys::TicketKeys(absl::Duration lifetime) : lifetime_(lifetime) {
  std::lock_guard<std::mutex> lock(mutex_);
  current_ = NewKey();
}

void TicketKeys::set_lifetime(absl::Duration lifetime) {
  std::lock_guard<std::mutex> lock(mutex_);
  lifetime_ = lifetime;
}

void TicketKeys::Rotate() {
  std::lock_guard<std::mutex> lock(mutex_);
  RotateLocked(absl::Now());
}

int TicketKeys::Callback(unsigned char name[16], unsigned char* iv, EVP_CIPHER_CTX* cipher,
                         EVP_MAC_CTX* mac, int encrypt, bool single_use) {
  std::lock_guard<std::mutex> lock(mutex_);
  absl::Time now = absl::Now();
  if (now - current_.created >= lifetime_) RotateLocked(now);
  const Key* key = nullptr;
  int found = 1;
  if (encrypt) {
    key = &current_;
    std::memcpy(name, key->name, sizeof(key->name));
    if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1) return -1;
  } else if (std::memcmp(name, current_.name, sizeof(current_.name)) == 0) {
    key = &current_;
    if (single_use) found = 2;
  } else if (previous_.has_value() &&
             std::memcmp(name, previous_->name, sizeof(previous_->name)) == 0 &&
             now - current_.created < lifetime_) {
    key = &*previous_;
    found = 2;  // Accepted, and a ticket under the current key replaces it.
  } else {
    return 0;  // Unknown or expired: a full handshake.
  }
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, const_cast<unsigned char*>(key->hmac),
                                        sizeof(key->hmac)),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_end()};
  if (EVP_MAC_CTX_set_params(mac, params) != 1) return -1;
  int ok = encrypt ? EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, key->aes, iv)
                   : EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, key->aes, iv);
  return ok == 1 ? found : -1;
}

TicketKeys::Key TicketKeys::NewKey() {
  Key key;
  // RAND_bytes fails only without an entropy source, when no TLS could work at all; a zero
  // key would then be refused by nothing, so it aborts instead.
  if (RAND_bytes(key.name, sizeof(key.name)) != 1 || RAND_bytes(key.aes, sizeof(key.aes)) != 1 ||
      RAND_bytes(key.hmac, sizeof(key.hmac)) != 1) {
    std::abort();
  }
  key.created = absl::Now();
  return key;
}

void TicketKeys::RotateLocked(absl::Time now) {
  previous_ = current_;
  current_ = NewKey();
  current_.created = now;
}

namespace internal {

int TicketKeysIndex() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

int TicketCallback(SSL* ssl, unsigned char name[16], unsigned char* iv, EVP_CIPHER_CTX* cipher,
                   EVP_MAC_CTX* mac, int encrypt) {
  auto* keys = static_cast<TicketKeys*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl),
                                                            TicketKeysIndex()));
  return keys != nullptr ? keys->Callback(name, iv, cipher, mac, encrypt,
                                          SSL_version(ssl) >= TLS1_3_VERSION)
                         : 0;
}

}  // namespace internal
}  // namespace gev::tls

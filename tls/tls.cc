#include "tls/tls.h"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <string_view>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "eventloop/event_loop.h"

namespace gev::tls {
namespace {

// What OpenSSL's error queue says, reasons only ("wrong version number"), and the queue
// emptied: each connection's errors are its own.
std::string DrainErrors() {
  std::vector<std::string> reasons;
  while (unsigned long error = ERR_get_error()) {
    const char* reason = ERR_reason_error_string(error);
    reasons.push_back(reason != nullptr ? reason : absl::StrCat("error ", error));
  }
  return reasons.empty() ? "unknown error" : absl::StrJoin(reasons, "; ");
}

absl::Status OpenSslError(std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(std::string(what), ": ", DrainErrors()));
}

// Frees an SSL_CTX it holds.
struct CtxDeleter {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
using CtxPtr = std::unique_ptr<SSL_CTX, CtxDeleter>;

struct BioDeleter {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;

BioPtr MemoryBio(const std::string& pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// ALPN protocols in their wire form (each prefixed by its length).
absl::StatusOr<std::string> AlpnWire(const std::vector<std::string>& protocols) {
  std::string wire;
  for (const std::string& protocol : protocols) {
    if (protocol.empty() || protocol.size() > 255) {
      return absl::InvalidArgumentError(
          absl::StrCat("ALPN protocol names are 1 to 255 bytes: \"", protocol, "\""));
    }
    wire.push_back(static_cast<char>(protocol.size()));
    wire.append(protocol);
  }
  return wire;
}

absl::Status LoadCertificate(SSL_CTX* ctx, const CertificateKeyPair& pair) {
  if (!pair.chain_pem.empty()) {
    BioPtr bio = MemoryBio(pair.chain_pem);
    X509* leaf = PEM_read_bio_X509_AUX(bio.get(), nullptr, nullptr, nullptr);
    if (leaf == nullptr) return OpenSslError("certificate PEM");
    int used = SSL_CTX_use_certificate(ctx, leaf);
    X509_free(leaf);
    if (used != 1) return OpenSslError("certificate");
    while (X509* intermediate = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
      if (SSL_CTX_add0_chain_cert(ctx, intermediate) != 1) {
        X509_free(intermediate);
        return OpenSslError("certificate chain");
      }
    }
    ERR_clear_error();  // The end of the PEM stream reads as an error.
  } else if (!pair.chain_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, pair.chain_file.c_str()) != 1) {
      return OpenSslError(absl::StrCat("certificate chain file ", pair.chain_file));
    }
  } else {
    return absl::InvalidArgumentError("no certificate: set chain_file or chain_pem");
  }
  if (!pair.key_pem.empty()) {
    BioPtr bio = MemoryBio(pair.key_pem);
    EVP_PKEY* key = PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr);
    if (key == nullptr) return OpenSslError("private key PEM");
    int used = SSL_CTX_use_PrivateKey(ctx, key);
    EVP_PKEY_free(key);
    if (used != 1) return OpenSslError("private key");
  } else if (!pair.key_file.empty()) {
    if (SSL_CTX_use_PrivateKey_file(ctx, pair.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      return OpenSslError(absl::StrCat("private key file ", pair.key_file));
    }
  } else {
    return absl::InvalidArgumentError("no private key: set key_file or key_pem");
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return OpenSslError("the private key does not match the certificate");
  }
  return absl::OkStatus();
}

// The DNS names a certificate is for: its subjectAltName entries, or its common name when it
// has none (RFC 6125 6.4.4), lower-cased.
std::vector<std::string> CertificateNames(SSL_CTX* ctx) {
  std::vector<std::string> names;
  X509* cert = SSL_CTX_get0_certificate(ctx);
  if (cert == nullptr) return names;
  auto* alt_names = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (alt_names != nullptr) {
    for (int i = 0; i < sk_GENERAL_NAME_num(alt_names); ++i) {
      const GENERAL_NAME* name = sk_GENERAL_NAME_value(alt_names, i);
      if (name->type != GEN_DNS) continue;
      const ASN1_IA5STRING* dns = name->d.dNSName;
      names.push_back(absl::AsciiStrToLower(std::string(
          reinterpret_cast<const char*>(ASN1_STRING_get0_data(dns)),
          static_cast<size_t>(ASN1_STRING_length(dns)))));
    }
    GENERAL_NAMES_free(alt_names);
  }
  if (names.empty()) {
    char common_name[256];
    int length = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName,
                                           common_name, sizeof(common_name));
    if (length > 0) {
      names.push_back(absl::AsciiStrToLower(
          std::string(common_name, static_cast<size_t>(length))));
    }
  }
  return names;
}

// The ex_data slot of our SSL_CTXs that points at their ticket keys.
int TicketKeysIndex() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// Our BIO: reads the connection's socket, and hands what OpenSSL writes to the connection's
// output (gathered and written as any send), so records from many sends leave in one write.
class TlsTransport;

}  // namespace

// Ticket keys: AES-256-CBC with HMAC-SHA256 (the format OpenSSL's own tickets use), named by
// 16 random bytes so that a ticket finds its key.
class TicketKeys {
 public:
  explicit TicketKeys(absl::Duration lifetime) : lifetime_(lifetime) {
    std::lock_guard<std::mutex> lock(mutex_);
    current_ = NewKey();
  }

  void set_lifetime(absl::Duration lifetime) {
    std::lock_guard<std::mutex> lock(mutex_);
    lifetime_ = lifetime;
  }

  void Rotate() {
    std::lock_guard<std::mutex> lock(mutex_);
    RotateLocked(absl::Now());
  }

  // `single_use`: a TLS 1.3 handshake, whose clients use a ticket once (RFC 8446 C.4), so a
  // resumed connection gets a new ticket (return 2) or the client's next one is a full
  // handshake.
  int Callback(unsigned char name[16], unsigned char* iv, EVP_CIPHER_CTX* cipher,
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

 private:
  struct Key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
    absl::Time created;
  };

  Key NewKey() {
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

  void RotateLocked(absl::Time now) {
    previous_ = current_;
    current_ = NewKey();
    current_.created = now;
  }

  std::mutex mutex_;
  absl::Duration lifetime_;     // Guarded by mutex_.
  Key current_;                 // Guarded by mutex_.
  std::optional<Key> previous_; // Guarded by mutex_.
};

struct ServerContext::HandshakeCount {
  std::atomic<size_t> in_flight{0};
};

// One certificate set and what goes with it: what Reload replaces.
struct ServerContext::Generation {
  uint64_t number = 0;
  CtxPtr default_ctx;
  std::vector<CtxPtr> sni_ctxs;
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

namespace {

class TlsTransport final : public Transport {
 public:
  // Takes `ssl`.
  TlsTransport(SSL* ssl, bool client, std::string server_name, absl::Duration handshake_timeout,
               std::shared_ptr<const ServerContext::Generation> generation,
               std::shared_ptr<ClientContext::State> client_state);
  ~TlsTransport() override {
    EndHandshakeCount();
    SSL_free(ssl_);
  }
  // Server: counts this handshake against max_handshakes until it completes or ends.
  void CountHandshake(std::shared_ptr<ServerContext::HandshakeCount> count) {
    handshake_count_ = std::move(count);
  }

  absl::Status Start(TransportIo io) override;
  ReadResult Read(TransportIo io, RingBuffer& input) override;
  absl::Status Write(TransportIo io, std::string_view plaintext) override;
  void Shutdown(TransportIo io) override;
  absl::Duration handshake_timeout() const override { return handshake_timeout_; }
  const char* name() const override { return "TLS"; }

  SSL* ssl() const { return ssl_; }
  bool established() const { return established_; }
  const std::string& server_name() const { return server_name_; }
  const std::shared_ptr<ClientContext::State>& client_state() const { return client_state_; }
  void NoteRenegotiation() { renegotiation_attempted_ = true; }
  bool saw_end_of_stream() const { return saw_end_of_stream_; }

  // The BIO's side.
  int ReadSocket(char* data, int size, BIO* bio);
  int WriteOutput(const char* data, int size);

 private:
  // A failed SSL call's reason, with `what` ("TLS handshake failed").
  absl::Status Failure(int ssl_result, std::string_view what);

  SSL* const ssl_;
  const bool client_;
  const std::string server_name_;
  const absl::Duration handshake_timeout_;
  const std::shared_ptr<const ServerContext::Generation> generation_;  // Server: its SNI map.
  const std::shared_ptr<ClientContext::State> client_state_;           // Client: its sessions.
  std::optional<TransportIo> io_;  // During a call into OpenSSL: where the BIO goes.
  int read_errno_ = 0;
  bool established_ = false;
  bool renegotiation_attempted_ = false;
  bool saw_end_of_stream_ = false;
  bool socket_drained_ = false;  // In this Read(), a read returned less than it asked for.
  std::shared_ptr<ServerContext::HandshakeCount> handshake_count_;  // Until established.

  void EndHandshakeCount() {
    if (handshake_count_ == nullptr) return;
    handshake_count_->in_flight.fetch_sub(1, std::memory_order_relaxed);
    handshake_count_.reset();
  }
};

// The BIO method, made once.
int BioWrite(BIO* bio, const char* data, int size) {
  return static_cast<TlsTransport*>(BIO_get_data(bio))->WriteOutput(data, size);
}

int BioRead(BIO* bio, char* data, int size) {
  return static_cast<TlsTransport*>(BIO_get_data(bio))->ReadSocket(data, size, bio);
}

long BioCtrl(BIO* bio, int command, long arg, void* ptr) {
  (void)arg;
  (void)ptr;
  switch (command) {
    case BIO_CTRL_FLUSH:  // After each flight; our writes are already with the connection.
      return 1;
    case BIO_CTRL_EOF:  // How OpenSSL tells the peer's FIN from an error.
      return static_cast<TlsTransport*>(BIO_get_data(bio))->saw_end_of_stream() ? 1 : 0;
    default:
      return 0;
  }
}

int BioCreate(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

const BIO_METHOD* TransportBioMethod() {
  static BIO_METHOD* const method = [] {
    BIO_METHOD* made = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "gev");
    BIO_meth_set_write(made, BioWrite);
    BIO_meth_set_read(made, BioRead);
    BIO_meth_set_ctrl(made, BioCtrl);
    BIO_meth_set_create(made, BioCreate);
    return made;
  }();
  return method;
}

TlsTransport::TlsTransport(SSL* ssl, bool client, std::string server_name,
                           absl::Duration handshake_timeout,
                           std::shared_ptr<const ServerContext::Generation> generation,
                           std::shared_ptr<ClientContext::State> client_state)
    : ssl_(ssl),
      client_(client),
      server_name_(std::move(server_name)),
      handshake_timeout_(handshake_timeout),
      generation_(std::move(generation)),
      client_state_(std::move(client_state)) {
  SSL_set_app_data(ssl_, this);
  BIO* bio = BIO_new(TransportBioMethod());
  BIO_set_data(bio, this);
  SSL_set_bio(ssl_, bio, bio);  // One BIO both ways; the SSL owns it.
  if (client_) {
    SSL_set_connect_state(ssl_);
  } else {
    SSL_set_accept_state(ssl_);
  }
}

int TlsTransport::ReadSocket(char* data, int size, BIO* bio) {
  BIO_clear_retry_flags(bio);
  if (socket_drained_) {
    BIO_set_retry_read(bio);
    return -1;
  }
  ssize_t n;
  do {
    n = ::read(io_->fd(), data, static_cast<size_t>(size));
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    io_->CountRead(static_cast<size_t>(n));
    // Less than asked for: the socket is empty for now. The next read of this call would only
    // say EAGAIN (a syscall per event for nothing); the poller, level-triggered, reports what
    // arrives later.
    if (n < size) socket_drained_ = true;
    return static_cast<int>(n);
  }
  if (n == 0) {  // The peer's FIN: OpenSSL says whether a close_notify came first.
    saw_end_of_stream_ = true;
    return 0;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    BIO_set_retry_read(bio);
    return -1;
  }
  read_errno_ = errno;
  return -1;
}

int TlsTransport::WriteOutput(const char* data, int size) {
  // A connection closed for writing drops them: nobody will read them. Taken as written, so
  // that OpenSSL's state does not wait for a retry that never comes.
  (void)io_->Write(std::string_view(data, static_cast<size_t>(size)));
  return size;
}

absl::Status TlsTransport::Failure(int ssl_result, std::string_view what) {
  int error = SSL_get_error(ssl_, ssl_result);
  if (error == SSL_ERROR_SYSCALL && read_errno_ != 0) {
    ERR_clear_error();
    return absl::ErrnoToStatus(read_errno_, absl::StrCat(std::string(what), ": read"));
  }
  long verify = client_ ? SSL_get_verify_result(ssl_) : X509_V_OK;
  if (verify != X509_V_OK) {
    ERR_clear_error();
    return absl::UnauthenticatedError(
        absl::StrCat(std::string(what), ": certificate verify failed: ",
                     X509_verify_cert_error_string(verify)));
  }
  return absl::UnavailableError(absl::StrCat(std::string(what), ": ", DrainErrors()));
}

absl::Status TlsTransport::Start(TransportIo io) {
  if (!client_) return absl::OkStatus();  // A server waits for the ClientHello.
  ERR_clear_error();  // As in Write().
  io_ = io;
  int result = SSL_do_handshake(ssl_);  // Writes the ClientHello.
  absl::Status status;
  if (result != 1) {
    int error = SSL_get_error(ssl_, result);
    if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE) {
      status = Failure(result, "TLS handshake failed");
    }
  }
  io_.reset();
  return status;
}

Transport::ReadResult TlsTransport::Read(TransportIo io, RingBuffer& input) {
  // Most plaintext one call delivers: a peer that keeps the socket full does not keep the
  // loop from its other connections.
  constexpr size_t kMaxPlaintextPerRead = 256 * 1024;
  ReadResult result;
  ERR_clear_error();  // As in Write().
  io_ = io;
  socket_drained_ = false;
  if (!established_) {
    int handshake = SSL_do_handshake(ssl_);
    if (handshake != 1) {
      int error = SSL_get_error(ssl_, handshake);
      if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE) {
        if (error == SSL_ERROR_SSL &&
            ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
          ERR_clear_error();
          result.error = absl::UnavailableError("TLS handshake failed: the peer closed");
        } else {
          result.error = Failure(handshake, "TLS handshake failed");
        }
      }
      io_.reset();
      return result;
    }
    established_ = true;
    result.established = true;
    EndHandshakeCount();
  }
  char* scratch = io.loop()->scratch_buffer();
  size_t delivered = 0;
  for (;;) {
    if (renegotiation_attempted_) {
      result.error = absl::UnavailableError("TLS renegotiation refused");
      break;
    }
    if (delivered >= kMaxPlaintextPerRead) {
      result.more = true;
      break;
    }
    size_t n = 0;
    int read = SSL_read_ex(ssl_, scratch, EventLoop::kScratchSize, &n);
    if (read == 1) {
      if (!input.Write(scratch, n)) {
        result.error = absl::ResourceExhaustedError("input buffer limit exceeded");
        break;
      }
      delivered += n;
      continue;
    }
    int error = SSL_get_error(ssl_, read);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) break;
    if (error == SSL_ERROR_ZERO_RETURN) {  // close_notify.
      result.peer_closed = true;
      break;
    }
    if (error == SSL_ERROR_SSL &&
        ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
      ERR_clear_error();
      result.peer_closed = true;
      result.peer_close_reason = absl::UnavailableError(
          "TLS: the peer closed without close_notify (its stream may be truncated)");
      break;
    }
    result.error = Failure(read, "TLS error");
    break;
  }
  // OpenSSL answers a renegotiation request with a warning and waits: a peer that then says
  // nothing must not stay connected.
  if (renegotiation_attempted_ && result.error.ok()) {
    result.error = absl::UnavailableError("TLS renegotiation refused");
  }
  io_.reset();
  return result;
}

absl::Status TlsTransport::Write(TransportIo io, std::string_view plaintext) {
  if (plaintext.empty()) return absl::OkStatus();
  if (!established_) {
    // The connection sends only after on_connect; this would be a bug of its.
    return absl::FailedPreconditionError("TLS: write before the handshake completed");
  }
  // A stale error another call left on this thread's queue would make SSL_get_error misread
  // this call's outcome.
  ERR_clear_error();
  io_ = io;
  size_t written = 0;
  int result = SSL_write_ex(ssl_, plaintext.data(), plaintext.size(), &written);
  absl::Status status = result == 1 ? absl::OkStatus() : Failure(result, "TLS write failed");
  io_.reset();
  return status;
}

void TlsTransport::Shutdown(TransportIo io) {
  if (!established_) return;
  io_ = io;
  // Writes close_notify. 0 (sent, the peer's not yet read) is the expected answer, and a
  // failure leaves nothing to do: the FIN follows either way.
  (void)SSL_shutdown(ssl_);
  ERR_clear_error();
  io_.reset();
}

// Renegotiation: TLS 1.3 has none; a TLS 1.2 peer that sends a handshake record after the
// handshake is asking for one. OpenSSL refuses it with a warning and goes on (with
// SSL_OP_NO_RENEGOTIATION); we end the connection instead, as the issue asks of hostile peers.
void MessageCallback(int write, int version, int content_type, const void* buf, size_t len,
                     SSL* ssl, void* arg) {
  (void)version;
  (void)arg;
  if (write || content_type != SSL3_RT_HEADER || len < 1) return;
  if (static_cast<const unsigned char*>(buf)[0] != SSL3_RT_HANDSHAKE) return;
  if (!SSL_is_init_finished(ssl) || SSL_version(ssl) >= TLS1_3_VERSION) return;
  if (auto* transport = static_cast<TlsTransport*>(SSL_get_app_data(ssl))) {
    transport->NoteRenegotiation();
  }
}

int ServerNameCallback(SSL* ssl, int* alert, void* arg) {
  (void)alert;
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (name == nullptr) return SSL_TLSEXT_ERR_NOACK;
  const auto* generation = static_cast<const ServerContext::Generation*>(arg);
  SSL_CTX* chosen = generation->ForName(name);
  if (chosen != nullptr && chosen != SSL_get_SSL_CTX(ssl)) SSL_set_SSL_CTX(ssl, chosen);
  return SSL_TLSEXT_ERR_OK;
}

int AlpnCallback(SSL* ssl, const unsigned char** out, unsigned char* out_length,
                 const unsigned char* offered, unsigned int offered_length, void* arg) {
  (void)ssl;
  const auto* generation = static_cast<const ServerContext::Generation*>(arg);
  const std::string& ours = generation->alpn_wire;
  unsigned char* selected = nullptr;
  int match = SSL_select_next_proto(
      &selected, out_length, reinterpret_cast<const unsigned char*>(ours.data()),
      static_cast<unsigned int>(ours.size()), offered, offered_length);
  if (match != OPENSSL_NPN_NEGOTIATED) return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

int TicketCallback(SSL* ssl, unsigned char name[16], unsigned char* iv, EVP_CIPHER_CTX* cipher,
                   EVP_MAC_CTX* mac, int encrypt) {
  auto* keys = static_cast<TicketKeys*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl),
                                                            TicketKeysIndex()));
  return keys != nullptr ? keys->Callback(name, iv, cipher, mac, encrypt,
                                          SSL_version(ssl) >= TLS1_3_VERSION)
                         : 0;
}

absl::StatusOr<CtxPtr> NewServerCtx(const ServerConfig& config, const CertificateKeyPair& pair,
                                    ServerContext::Generation* generation) {
  CtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  if (ctx == nullptr) return OpenSslError("SSL_CTX_new");
  SSL_CTX* c = ctx.get();
  SSL_CTX_set_min_proto_version(c, config.allow_tls12 ? TLS1_2_VERSION : TLS1_3_VERSION);
  SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                             SSL_OP_NO_COMPRESSION);
  // Idle connections keep no record buffers; reads take what the socket has, not a header and
  // then a body.
  SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
  // The chain is the PEM's, leaf first: OpenSSL would otherwise try to build one from the
  // trust store in every handshake.
  SSL_CTX_set_mode(c, SSL_MODE_NO_AUTO_CHAIN);
  SSL_CTX_set_read_ahead(c, 1);
  // No server-side session cache: resumption is by tickets, which cost the server no memory
  // per session (a flood of handshakes fills nothing).
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  static const unsigned char kSessionContext[] = "gev";
  SSL_CTX_set_session_id_context(c, kSessionContext, sizeof(kSessionContext) - 1);
  if (config.session_tickets) {
    SSL_CTX_set_ex_data(c, TicketKeysIndex(), generation->ticket_keys.get());
    SSL_CTX_set_tlsext_ticket_key_evp_cb(c, TicketCallback);
  } else {
    SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(c, 0);
  }
  SSL_CTX_set_tlsext_servername_callback(c, ServerNameCallback);
  SSL_CTX_set_tlsext_servername_arg(c, generation);
  if (!generation->alpn_wire.empty()) SSL_CTX_set_alpn_select_cb(c, AlpnCallback, generation);
  if (config.allow_tls12) SSL_CTX_set_msg_callback(c, MessageCallback);
  absl::Status loaded = LoadCertificate(c, pair);
  if (!loaded.ok()) return loaded;
  if (config.configure) {
    absl::Status configured = config.configure(c);
    if (!configured.ok()) return configured;
  }
  return ctx;
}

absl::StatusOr<std::shared_ptr<const ServerContext::Generation>> NewGeneration(
    const ServerConfig& config, std::shared_ptr<TicketKeys> keys, uint64_t number) {
  if (config.handshake_timeout <= absl::ZeroDuration()) {
    // No deadline would let half-open handshakes pile up for ever.
    return absl::InvalidArgumentError("handshake_timeout must be positive");
  }
  if (config.ticket_key_lifetime <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("ticket_key_lifetime must be positive");
  }
  auto generation = std::make_shared<ServerContext::Generation>();
  generation->number = number;
  generation->handshake_timeout = config.handshake_timeout;
  generation->max_handshakes = config.max_handshakes;
  generation->allow_tls12 = config.allow_tls12;
  generation->ticket_keys = std::move(keys);
  absl::StatusOr<std::string> alpn = AlpnWire(config.alpn);
  if (!alpn.ok()) return alpn.status();
  generation->alpn_wire = *std::move(alpn);
  absl::StatusOr<CtxPtr> main = NewServerCtx(config, config.certificate, generation.get());
  if (!main.ok()) return main.status();
  generation->default_ctx = *std::move(main);
  for (const CertificateKeyPair& pair : config.sni_certificates) {
    absl::StatusOr<CtxPtr> ctx = NewServerCtx(config, pair, generation.get());
    if (!ctx.ok()) return ctx.status();
    std::vector<std::string> names = CertificateNames(ctx->get());
    if (names.empty()) {
      return absl::InvalidArgumentError("an SNI certificate names no DNS name");
    }
    for (std::string& name : names) generation->by_name.emplace(std::move(name), ctx->get());
    generation->sni_ctxs.push_back(*std::move(ctx));
  }
  return std::shared_ptr<const ServerContext::Generation>(std::move(generation));
}

class ServerTransportFactory final : public TransportFactory {
 public:
  explicit ServerTransportFactory(std::shared_ptr<ServerContext> context)
      : context_(std::move(context)) {}

  absl::StatusOr<std::unique_ptr<Transport>> NewTransport(
      const TransportContext& where) override {
    (void)where;
    std::shared_ptr<const ServerContext::Generation> generation = context_->current();
    const std::shared_ptr<ServerContext::HandshakeCount>& count = context_->handshakes();
    size_t before = count->in_flight.fetch_add(1, std::memory_order_relaxed);
    if (generation->max_handshakes != 0 && before >= generation->max_handshakes) {
      count->in_flight.fetch_sub(1, std::memory_order_relaxed);
      return absl::ResourceExhaustedError(
          absl::StrCat("TLS: ", generation->max_handshakes, " handshakes already under way"));
    }
    SSL* ssl = SSL_new(generation->default_ctx.get());
    if (ssl == nullptr) {
      count->in_flight.fetch_sub(1, std::memory_order_relaxed);
      return absl::ResourceExhaustedError("TLS: " + DrainErrors());
    }
    absl::Duration timeout = generation->handshake_timeout;
    auto transport = std::make_unique<TlsTransport>(ssl, /*client=*/false, std::string(),
                                                    timeout, std::move(generation), nullptr);
    transport->CountHandshake(count);
    return transport;
  }

 private:
  const std::shared_ptr<ServerContext> context_;
};

}  // namespace

ServerContext::ServerContext(std::shared_ptr<TicketKeys> keys)
    : ticket_keys_(std::move(keys)), handshakes_(std::make_shared<HandshakeCount>()) {}

ServerContext::~ServerContext() = default;

absl::StatusOr<std::shared_ptr<ServerContext>> ServerContext::Create(ServerConfig config) {
  auto keys = std::make_shared<TicketKeys>(std::max(config.ticket_key_lifetime,
                                                    absl::Seconds(1)));
  std::shared_ptr<ServerContext> context(new ServerContext(keys));
  absl::Status loaded = context->Reload(std::move(config));
  if (!loaded.ok()) return loaded;
  return context;
}

absl::Status ServerContext::Reload(ServerConfig config) {
  std::lock_guard<std::mutex> reloading(reload_mutex_);
  return ReloadLocked(std::move(config));
}

absl::Status ServerContext::ReloadLocked(ServerConfig config) {
  uint64_t number;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    number = current_ != nullptr ? current_->number + 1 : 1;
  }
  // Built outside the lock: reading files and keys takes a while, handshakes go on meanwhile.
  absl::StatusOr<std::shared_ptr<const Generation>> generation =
      NewGeneration(config, ticket_keys_, number);
  if (!generation.ok()) return generation.status();
  ticket_keys_->set_lifetime(config.ticket_key_lifetime);
  std::shared_ptr<const Generation> old;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    old = std::exchange(current_, *std::move(generation));
    config_ = std::move(config);
  }
  return absl::OkStatus();  // `old` goes here, or with the last handshake that uses it.
}

absl::Status ServerContext::ReloadFiles() {
  std::lock_guard<std::mutex> reloading(reload_mutex_);
  ServerConfig config;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    config = config_;
  }
  return ReloadLocked(std::move(config));
}

void ServerContext::RotateTicketKeys() { ticket_keys_->Rotate(); }

uint64_t ServerContext::generation() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return current_ != nullptr ? current_->number : 0;
}

std::shared_ptr<const ServerContext::Generation> ServerContext::current() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return current_;
}

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

namespace {

bool IsIpLiteral(const std::string& name) {
  unsigned char address[sizeof(in6_addr)];
  return ::inet_pton(AF_INET, name.c_str(), address) == 1 ||
         ::inet_pton(AF_INET6, name.c_str(), address) == 1;
}

int NewClientSession(SSL* ssl, SSL_SESSION* session) {
  auto* transport = static_cast<TlsTransport*>(SSL_get_app_data(ssl));
  if (transport == nullptr || !transport->client_state()->resume_sessions) return 0;
  // A copy: `session` stays the connection's, and OpenSSL may change it when the connection
  // ends (see Take).
  SSL_SESSION* copy = SSL_SESSION_dup(session);
  if (copy != nullptr) transport->client_state()->Keep(transport->server_name(), copy);
  return 0;  // The connection keeps its reference.
}

class ClientTransportFactory final : public TransportFactory {
 public:
  explicit ClientTransportFactory(std::shared_ptr<ClientContext> context)
      : context_(std::move(context)) {}

  absl::StatusOr<std::unique_ptr<Transport>> NewTransport(
      const TransportContext& where) override {
    const std::shared_ptr<ClientContext::State>& state = context_->state();
    // Client::Create has asked CheckDial already; a factory used without a Client may not have.
    absl::Status dial = CheckDial(where);
    if (!dial.ok()) return dial;
    SSL* ssl = SSL_new(state->ctx);
    if (ssl == nullptr) return absl::ResourceExhaustedError("TLS: " + DrainErrors());
    std::string name(where.server_name);
    bool is_ip = IsIpLiteral(name);
    if (!name.empty() && !is_ip) {
      // SNI, and the name the certificate must carry.
      if (SSL_set_tlsext_host_name(ssl, name.c_str()) != 1 ||
          (state->verify_peer && SSL_set1_host(ssl, name.c_str()) != 1)) {
        SSL_free(ssl);
        return absl::InvalidArgumentError("TLS server name " + name + ": " + DrainErrors());
      }
    } else if (!name.empty() && state->verify_peer) {
      if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str()) != 1) {
        SSL_free(ssl);
        return absl::InvalidArgumentError("TLS server address " + name + ": " + DrainErrors());
      }
    }
    if (state->resume_sessions && !name.empty()) {
      if (SSL_SESSION* session = state->Take(name)) {
        // A session that does not fit (another version, say) is only not resumed.
        (void)SSL_set_session(ssl, session);
        SSL_SESSION_free(session);
      }
    }
    return std::make_unique<TlsTransport>(ssl, /*client=*/true, std::move(name),
                                          state->handshake_timeout, nullptr, state);
  }

  absl::Status CheckDial(const TransportContext& where) const override {
    if (!where.server_name.empty() || !context_->state()->verify_peer) return absl::OkStatus();
    // A Unix socket (or an address with no host) gives no name; a chain checked against none
    // would accept any certificate the CAs ever issued.
    return absl::InvalidArgumentError(
        "TLS: no name to check the server's certificate against: set ClientOptions::server_name");
  }

 private:
  const std::shared_ptr<ClientContext> context_;
};

}  // namespace

ClientContext::~ClientContext() = default;

absl::StatusOr<std::shared_ptr<ClientContext>> ClientContext::Create(ClientConfig config) {
  if (config.handshake_timeout <= absl::ZeroDuration()) {
    // No deadline would let half-open handshakes pile up for ever.
    return absl::InvalidArgumentError("handshake_timeout must be positive");
  }
  auto state = std::make_shared<State>();
  state->ctx = SSL_CTX_new(TLS_client_method());
  if (state->ctx == nullptr) return OpenSslError("SSL_CTX_new");
  SSL_CTX* c = state->ctx;
  absl::StatusOr<std::string> alpn = AlpnWire(config.alpn);
  if (!alpn.ok()) return alpn.status();
  state->alpn_wire = *std::move(alpn);
  state->verify_peer = config.verify_peer;
  state->resume_sessions = config.resume_sessions;
  state->handshake_timeout = config.handshake_timeout;
  SSL_CTX_set_min_proto_version(c, config.allow_tls12 ? TLS1_2_VERSION : TLS1_3_VERSION);
  SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_mode(c, SSL_MODE_NO_AUTO_CHAIN);  // A client certificate's chain is its PEM's.
  SSL_CTX_set_read_ahead(c, 1);
  // A TLS 1.2 server's HelloRequest ends the connection, as a client's renegotiation does.
  if (config.allow_tls12) SSL_CTX_set_msg_callback(c, MessageCallback);
  // SSL_CTX_set_alpn_protos returns 0 on success.
  if (!state->alpn_wire.empty() &&
      SSL_CTX_set_alpn_protos(c, reinterpret_cast<const unsigned char*>(state->alpn_wire.data()),
                              static_cast<unsigned int>(state->alpn_wire.size())) != 0) {
    return OpenSslError("ALPN");
  }
  if (config.verify_peer) {
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, nullptr);
    if (!config.ca_pem.empty()) {
      BioPtr bio = MemoryBio(config.ca_pem);
      X509_STORE* store = SSL_CTX_get_cert_store(c);
      int added = 0;
      while (X509* ca = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
        added += X509_STORE_add_cert(store, ca);
        X509_free(ca);
      }
      ERR_clear_error();  // The end of the PEM stream.
      if (added == 0) return absl::InvalidArgumentError("ca_pem holds no certificate");
    } else if (!config.ca_file.empty()) {
      if (SSL_CTX_load_verify_locations(c, config.ca_file.c_str(), nullptr) != 1) {
        return OpenSslError(absl::StrCat("CA file ", config.ca_file));
      }
    } else if (SSL_CTX_set_default_verify_paths(c) != 1) {
      return OpenSslError("the system's CA certificates");
    }
  } else {
    SSL_CTX_set_verify(c, SSL_VERIFY_NONE, nullptr);
  }
  if (config.resume_sessions) {
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(c, NewClientSession);
  }
  if (!config.certificate.chain_file.empty() || !config.certificate.chain_pem.empty()) {
    absl::Status loaded = LoadCertificate(c, config.certificate);
    if (!loaded.ok()) return loaded;
  }
  if (config.configure) {
    absl::Status configured = config.configure(c);
    if (!configured.ok()) return configured;
  }
  return std::shared_ptr<ClientContext>(new ClientContext(std::move(state)));
}

std::shared_ptr<TransportFactory> ServerTransport(std::shared_ptr<ServerContext> context) {
  return std::make_shared<ServerTransportFactory>(std::move(context));
}

std::shared_ptr<TransportFactory> ClientTransport(std::shared_ptr<ClientContext> context) {
  return std::make_shared<ClientTransportFactory>(std::move(context));
}

ConnectionInfo Info(const Connection& conn) {
  ConnectionInfo info;
  auto* transport = dynamic_cast<TlsTransport*>(TransportOf(conn));
  if (transport == nullptr) return info;
  info.tls = true;
  if (!transport->established()) return info;
  SSL* ssl = transport->ssl();
  info.version = SSL_get_version(ssl);
  if (const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl)) {
    info.cipher = SSL_CIPHER_get_name(cipher);
  }
  const unsigned char* alpn = nullptr;
  unsigned int alpn_length = 0;
  SSL_get0_alpn_selected(ssl, &alpn, &alpn_length);
  if (alpn != nullptr) info.alpn.assign(reinterpret_cast<const char*>(alpn), alpn_length);
  if (const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)) {
    info.server_name = name;
  }
  info.session_reused = SSL_session_reused(ssl) == 1;
  if (X509* peer = SSL_get0_peer_certificate(ssl)) {
    char subject[256];
    if (X509_NAME_oneline(X509_get_subject_name(peer), subject, sizeof(subject)) != nullptr) {
      info.peer_subject = subject;
    }
  }
  return info;
}

}  // namespace gev::tls

// ServerContext: the certificate sets (Generation) a server's handshakes start with, made
// and replaced by Reload, and the transport factory that starts each connection's handshake
// with the current one.

#include "tls/tls.h"

#include <openssl/ssl.h>

#include <algorithm>
#include <atomic>
#include <utility>

#include "absl/strings/str_cat.h"
#include "tls/internal/openssl_util.h"
#include "tls/internal/server_state.h"
#include "tls/internal/ticket_keys.h"
#include "tls/internal/tls_transport.h"

namespace gev::tls {
namespace {

using internal::AlpnWire;
using internal::CertificateNames;
using internal::CtxPtr;
using internal::DrainErrors;
using internal::LoadCertificate;
using internal::MessageCallback;
using internal::OpenSslError;
using internal::TicketCallback;
using internal::TrustCertificates;
using internal::TicketKeysIndex;
using internal::TlsTransport;

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
  if (!config.client_ca_pem.empty() || !config.client_ca_file.empty()) {
    absl::Status trusted =
        TrustCertificates(c, config.client_ca_pem, config.client_ca_file,
                          /*name_to_clients=*/true,
                          config.client_ca_pem.empty() ? "client_ca_file" : "client_ca_pem");
    if (!trusted.ok()) return trusted;
    // A resumed session keeps the certificate its full handshake checked (tickets carry it).
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
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
    // At the cap, the handshake of this loop quiet longest makes way (its count released at
    // once): idle half-open sockets cannot lock real clients out for a whole handshake
    // timeout. Refused only when this loop has none to evict.
    if (generation->max_handshakes != 0 && before >= generation->max_handshakes &&
        !TlsTransport::EvictStalledHandshake(count.get())) {
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

std::shared_ptr<TransportFactory> ServerTransport(std::shared_ptr<ServerContext> context) {
  return std::make_shared<ServerTransportFactory>(std::move(context));
}

}  // namespace gev::tls

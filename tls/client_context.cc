// ClientContext: the client's SSL_CTX, made once from a ClientConfig, and the transport
// factory that starts each dial's handshake with it (SNI, the name to verify, a session to
// resume from the session cache of internal/client_state.h).

#include "tls/tls.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "tls/internal/client_state.h"
#include "tls/internal/openssl_util.h"
#include "tls/internal/tls_transport.h"

namespace gev::tls {
namespace {

using internal::AlpnWire;
using internal::DrainErrors;
using internal::LoadCertificate;
using internal::MessageCallback;
using internal::OpenSslError;
using internal::TlsTransport;
using internal::TrustCertificates;

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
      absl::Status trusted = TrustCertificates(c, config.ca_pem, "", false, "ca_pem");
      if (!trusted.ok()) return trusted;
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

std::shared_ptr<TransportFactory> ClientTransport(std::shared_ptr<ClientContext> context) {
  return std::make_shared<ClientTransportFactory>(std::move(context));
}

}  // namespace gev::tls

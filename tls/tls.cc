#include "tls/tls.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tls/internal/tls_transport.h"

namespace gev::tls {

ConnectionInfo Info(const Connection& conn) {
  ConnectionInfo info;
  auto* transport = dynamic_cast<internal::TlsTransport*>(TransportOf(conn));
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

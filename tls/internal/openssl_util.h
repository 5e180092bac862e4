// -----------------------------------------------------------------------------
// File: tls/internal/openssl_util.h
// -----------------------------------------------------------------------------
//
// What the server and client contexts both need of OpenSSL's C API: its error queue read as a
// reason, owners that free its objects, ALPN lists in their wire form, and a certificate with
// its key put into a context.
//
//   CtxPtr ctx(SSL_CTX_new(TLS_server_method()));
//   if (ctx == nullptr) return OpenSslError("SSL_CTX_new");
//   absl::Status loaded = LoadCertificate(ctx.get(), config.certificate);
//
// Thread safety: any thread. OpenSSL's error queue, which DrainErrors reads and empties, is the
// calling thread's own. LoadCertificate changes its SSL_CTX: give it one no handshake uses yet.

#ifndef GEV_TLS_INTERNAL_OPENSSL_UTIL_H_
#define GEV_TLS_INTERNAL_OPENSSL_UTIL_H_

#include <openssl/bio.h>
#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tls/tls.h"

namespace gev::tls::internal {

// What OpenSSL's error queue says, reasons only ("wrong version number"), and the queue
// emptied: each connection's errors are its own.
std::string DrainErrors();

// A setup step's failure, `what` and then DrainErrors(): InvalidArgument, since what a context
// could not take is the config's (a PEM, a file, a key).
absl::Status OpenSslError(std::string_view what);

// Frees an SSL_CTX it holds.
struct CtxDeleter {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
using CtxPtr = std::unique_ptr<SSL_CTX, CtxDeleter>;

struct BioDeleter {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;

// A read-only BIO over `pem`, which it does not copy: `pem` outlives it.
BioPtr MemoryBio(const std::string& pem);

// ALPN protocols in their wire form (each prefixed by its length).
absl::StatusOr<std::string> AlpnWire(const std::vector<std::string>& protocols);

// `pair`'s chain and key into `ctx` (the in-memory PEM wins over the file), and the key checked
// against the certificate.
absl::Status LoadCertificate(SSL_CTX* ctx, const CertificateKeyPair& pair);

// TrustCertificates() — adds every certificate of the PEM `pem`, or of the PEM file `file`
// when `pem` is empty, to `ctx`'s trust store; with `name_to_clients` also to the list of CAs a
// server names in its certificate request. `what` names the setting in errors
// (InvalidArgument: no certificate, or an unreadable file).
absl::Status TrustCertificates(SSL_CTX* ctx, const std::string& pem, const std::string& file,
                               bool name_to_clients, const char* what);

// The DNS names a certificate is for: its subjectAltName entries, or its common name when it
// has none (RFC 6125 6.4.4), lower-cased.
std::vector<std::string> CertificateNames(SSL_CTX* ctx);

}  // namespace gev::tls::internal

#endif  // GEV_TLS_INTERNAL_OPENSSL_UTIL_H_

#include "tls/internal/openssl_util.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace gev::tls::internal {

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

BioPtr MemoryBio(const std::string& pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

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

absl::Status TrustCertificates(SSL_CTX* ctx, const std::string& pem, const std::string& file,
                               bool name_to_clients, const char* what) {
  BioPtr bio = pem.empty() ? BioPtr(BIO_new_file(file.c_str(), "r")) : MemoryBio(pem);
  if (bio == nullptr) return OpenSslError(absl::StrCat(what, " ", file));
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  int added = 0;
  while (X509* ca = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    added += X509_STORE_add_cert(store, ca);
    if (name_to_clients) SSL_CTX_add_client_CA(ctx, ca);
    X509_free(ca);
  }
  ERR_clear_error();  // The end of the PEM stream.
  if (added == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, pem.empty() ? absl::StrCat(" ", file) : "", " holds no certificate"));
  }
  return absl::OkStatus();
}

}  // namespace gev::tls::internal

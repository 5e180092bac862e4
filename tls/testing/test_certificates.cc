#include "tls/testing/test_certificates.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace gev::tls::testing {
namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "test certificates: %s failed\n", what);
    std::abort();
  }
}

EVP_PKEY* NewKey() {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  Check(key != nullptr, "EC key generation");
  return key;
}

std::string Pem(X509* cert) {
  BIO* bio = BIO_new(BIO_s_mem());
  Check(PEM_write_bio_X509(bio, cert) == 1, "PEM_write_bio_X509");
  char* data = nullptr;
  long length = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(length));
  BIO_free(bio);
  return pem;
}

std::string Pem(EVP_PKEY* key) {
  BIO* bio = BIO_new(BIO_s_mem());
  Check(PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr) == 1,
        "PEM_write_bio_PrivateKey");
  char* data = nullptr;
  long length = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(length));
  BIO_free(bio);
  return pem;
}

void AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* extension = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  Check(extension != nullptr, "X509V3_EXT_conf_nid");
  Check(X509_add_ext(cert, extension, -1) == 1, "X509_add_ext");
  X509_EXTENSION_free(extension);
}

X509* NewCertificate(const std::string& common_name, EVP_PKEY* key, int valid_days,
                     long serial) {
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), serial);
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  long seconds = static_cast<long>(valid_days) * 86400;
  // An expired one: from a month before until `valid_days` (negative) from now.
  if (valid_days < 0) X509_gmtime_adj(X509_getm_notBefore(cert), seconds - 30L * 86400);
  X509_gmtime_adj(X509_getm_notAfter(cert), seconds);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                             0);
  return cert;
}

}  // namespace

struct TestCa::Impl {
  ~Impl() {
    X509_free(cert);
    EVP_PKEY_free(key);
  }
  X509* cert = nullptr;
  EVP_PKEY* key = nullptr;
  mutable long next_serial = 2;
};

TestCa::TestCa(std::unique_ptr<Impl> impl) : impl_(std::move(impl)), pem_(Pem(impl_->cert)) {}
TestCa::TestCa(TestCa&&) noexcept = default;
TestCa& TestCa::operator=(TestCa&&) noexcept = default;
TestCa::~TestCa() = default;

TestCa TestCa::Create(const std::string& common_name) {
  auto impl = std::make_unique<Impl>();
  impl->key = NewKey();
  impl->cert = NewCertificate(common_name, impl->key, 365, 1);
  X509_set_issuer_name(impl->cert, X509_get_subject_name(impl->cert));
  AddExtension(impl->cert, impl->cert, NID_basic_constraints, "critical,CA:TRUE");
  AddExtension(impl->cert, impl->cert, NID_key_usage, "critical,keyCertSign,cRLSign");
  AddExtension(impl->cert, impl->cert, NID_subject_key_identifier, "hash");
  Check(X509_sign(impl->cert, impl->key, EVP_sha256()) > 0, "X509_sign (CA)");
  return TestCa(std::move(impl));
}

CertificateKeyPair TestCa::Issue(const std::string& common_name,
                                 const std::vector<std::string>& dns_names,
                                 const std::vector<std::string>& ip_addresses,
                                 int valid_days) const {
  EVP_PKEY* key = NewKey();
  X509* cert = NewCertificate(common_name, key, valid_days, impl_->next_serial++);
  X509_set_issuer_name(cert, X509_get_subject_name(impl_->cert));
  std::vector<std::string> alt_names;
  for (const std::string& dns : dns_names) alt_names.push_back("DNS:" + dns);
  for (const std::string& ip : ip_addresses) alt_names.push_back("IP:" + ip);
  if (!alt_names.empty()) {
    AddExtension(cert, impl_->cert, NID_subject_alt_name, absl::StrJoin(alt_names, ","));
  }
  AddExtension(cert, impl_->cert, NID_basic_constraints, "critical,CA:FALSE");
  AddExtension(cert, impl_->cert, NID_ext_key_usage, "serverAuth,clientAuth");
  AddExtension(cert, impl_->cert, NID_authority_key_identifier, "keyid:always");
  Check(X509_sign(cert, impl_->key, EVP_sha256()) > 0, "X509_sign (leaf)");
  CertificateKeyPair pair;
  pair.chain_pem = Pem(cert);
  pair.key_pem = Pem(key);
  X509_free(cert);
  EVP_PKEY_free(key);
  return pair;
}

void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
  Check(static_cast<bool>(out), "writing a file");
}

}  // namespace gev::tls::testing

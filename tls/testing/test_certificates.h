// -----------------------------------------------------------------------------
// File: tls/testing/test_certificates.h
// -----------------------------------------------------------------------------
//
// Certificates made when a test runs (no private key is ever committed): a CA, and leaf
// certificates it signs for given DNS names and IP addresses. EC P-256 keys, PEM out.
//
//   gev::tls::testing::TestCa ca = gev::tls::testing::TestCa::Create("test CA");
//   gev::tls::CertificateKeyPair leaf = ca.Issue("localhost", {"localhost"}, {"127.0.0.1"});
//   // ca.pem() is what a client trusts.
//
// Thread safety: a TestCa is used from one thread at a time.

#ifndef GEV_TLS_TESTING_TEST_CERTIFICATES_H_
#define GEV_TLS_TESTING_TEST_CERTIFICATES_H_

#include <memory>
#include <string>
#include <vector>

#include "tls/tls.h"

namespace gev::tls::testing {

class TestCa {
 public:
  // Aborts on failure: a test cannot go on without its certificates.
  static TestCa Create(const std::string& common_name);
  TestCa(TestCa&&) noexcept;
  TestCa& operator=(TestCa&&) noexcept;
  ~TestCa();

  const std::string& pem() const { return pem_; }
  // TestCa::Issue() — a leaf for `dns_names` and `ip_addresses` (subjectAltName), valid from
  // an hour ago for `valid_days` (negative: expired).
  CertificateKeyPair Issue(const std::string& common_name,
                           const std::vector<std::string>& dns_names,
                           const std::vector<std::string>& ip_addresses = {},
                           int valid_days = 30) const;

 private:
  struct Impl;
  explicit TestCa(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::string pem_;
};

// WriteFile() — writes `contents` to `path`; aborts on failure.
void WriteFile(const std::string& path, const std::string& contents);

}  // namespace gev::tls::testing

#endif  // GEV_TLS_TESTING_TEST_CERTIFICATES_H_

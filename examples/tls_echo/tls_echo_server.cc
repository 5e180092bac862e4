// An echo server over TLS: every byte a client sends comes back, encrypted. The certificate
// files are watched and reloaded when they change (new handshakes use the new pair, open
// connections keep theirs), as a renewal tool such as certbot expects.
//
//   openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30
//       -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1
//       -keyout key.pem -out cert.pem                       (one line)
//   tools/bazel run //examples/tls_echo:tls_echo_server -- --port=8443
//       --cert=$PWD/cert.pem --key=$PWD/key.pem              (one line)
//   openssl s_client -connect 127.0.0.1:8443 -CAfile cert.pem

#include <sys/stat.h>

#include <ctime>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "examples/common/serve.h"
#include "server/server.h"
#include "tls/tls.h"

ABSL_FLAG(int, port, 8443, "TCP port to listen on (0: any free port)");
ABSL_FLAG(int, loops, -1, "worker loops (<= 0: one per CPU)");
ABSL_FLAG(bool, reuseport, false, "one SO_REUSEPORT listener per loop instead of one acceptor");
ABSL_FLAG(std::string, cert, "", "PEM certificate chain, leaf first (required)");
ABSL_FLAG(std::string, key, "", "PEM private key of the certificate (required)");
ABSL_FLAG(std::string, client_ca, "",
          "require client certificates issued by a CA in this PEM file (mutual TLS)");
ABSL_FLAG(std::string, alpn, "", "ALPN protocols offered, comma-separated, preferred first");
ABSL_FLAG(bool, tls12, true, "accept TLS 1.2 as well as 1.3");
ABSL_FLAG(absl::Duration, handshake_timeout, absl::Seconds(10), "longest TLS handshake");
ABSL_FLAG(absl::Duration, watch_interval, absl::Seconds(2),
          "how often the certificate files are checked for a change (0: never)");

namespace {

class EchoHandler : public gev::Handler {
 public:
  gev::Reply OnMessage(gev::Connection&, gev::RingBuffer& buffer) override {
    return gev::Reply::FromBuffer(buffer.Length());
  }
  // A failed handshake is no connection (no OnConnect or OnClose): say why, as a server log
  // would.
  void OnTransportError(gev::Connection& conn, const absl::Status& reason) override {
    fprintf(stderr, "TLS handshake with %s failed: %s\n", conn.PeerAddr().ToString().c_str(),
            reason.ToString().c_str());
  }
};

// The files' modification times, to see a renewal.
std::pair<timespec, timespec> ModificationTimes(const std::string& cert, const std::string& key) {
  struct stat cert_stat {};
  struct stat key_stat {};
  // A file that cannot be read now (being replaced) counts as unchanged; the next check sees it.
  if (::stat(cert.c_str(), &cert_stat) != 0 || ::stat(key.c_str(), &key_stat) != 0) return {};
  return {cert_stat.st_mtim, key_stat.st_mtim};
}

bool SameTime(const timespec& a, const timespec& b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "An echo server over TLS. Usage: tls_echo_server --port=8443 --cert=cert.pem --key=key.pem");
  absl::ParseCommandLine(argc, argv);
  gev::tls::ServerConfig config;
  config.certificate.chain_file = absl::GetFlag(FLAGS_cert);
  config.certificate.key_file = absl::GetFlag(FLAGS_key);
  config.client_ca_file = absl::GetFlag(FLAGS_client_ca);
  if (config.certificate.chain_file.empty() || config.certificate.key_file.empty()) {
    return gev::examples::Fail(absl::InvalidArgumentError("--cert and --key are required"));
  }
  if (!absl::GetFlag(FLAGS_alpn).empty()) {
    config.alpn = absl::StrSplit(absl::GetFlag(FLAGS_alpn), ',');
  }
  config.allow_tls12 = absl::GetFlag(FLAGS_tls12);
  config.handshake_timeout = absl::GetFlag(FLAGS_handshake_timeout);
  absl::StatusOr<std::shared_ptr<gev::tls::ServerContext>> context =
      gev::tls::ServerContext::Create(config);
  if (!context.ok()) return gev::examples::Fail(context.status());

  EchoHandler handler;
  auto server = gev::NewServer(
      &handler, gev::Address(gev::examples::AddressForPort(absl::GetFlag(FLAGS_port))),
      gev::NumLoops(absl::GetFlag(FLAGS_loops)), gev::ReusePort(absl::GetFlag(FLAGS_reuseport)),
      gev::WithTransport(gev::tls::ServerTransport(*context)));
  if (!server.ok()) return gev::examples::Fail(server.status());

  absl::Duration interval = absl::GetFlag(FLAGS_watch_interval);
  if (interval > absl::ZeroDuration()) {
    (*server)->RunEvery(interval, [context = *context, cert = config.certificate.chain_file,
                                   key = config.certificate.key_file,
                                   seen = ModificationTimes(config.certificate.chain_file,
                                                            config.certificate.key_file)]() mutable {
      std::pair<timespec, timespec> now = ModificationTimes(cert, key);
      if (now.first.tv_sec == 0 || (SameTime(now.first, seen.first) &&
                                    SameTime(now.second, seen.second))) {
        return;
      }
      absl::Status reloaded = context->ReloadFiles();
      if (reloaded.ok()) {
        seen = now;
        fprintf(stderr, "reloaded %s (certificate set %llu)\n", cert.c_str(),
                static_cast<unsigned long long>(context->generation()));
      } else {
        // The old pair keeps serving; a half-written renewal is tried again at the next check.
        fprintf(stderr, "reload of %s failed, old certificate kept: %s\n", cert.c_str(),
                reloaded.ToString().c_str());
      }
    });
  }
  return gev::examples::ServeUntilSignal(**server);
}

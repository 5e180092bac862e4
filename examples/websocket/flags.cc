#include "examples/websocket/flags.h"

#include <algorithm>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/time/time.h"
#include "examples/common/serve.h"
#include "tls/tls.h"

ABSL_FLAG(int, port, 8080, "TCP port to listen on (0: any free port)");
ABSL_FLAG(int, loops, 1, "worker loops (<= 0: one per CPU)");
ABSL_FLAG(bool, reuseport, false, "one SO_REUSEPORT listener per loop instead of one acceptor");
ABSL_FLAG(bool, deflate, false, "offer permessage-deflate (no context takeover either way)");
ABSL_FLAG(int64_t, max_message_mib, 16, "largest message accepted, in MiB (1009 past it)");
ABSL_FLAG(absl::Duration, ping_interval, absl::Seconds(30), "ping a socket this quiet (0: never)");
ABSL_FLAG(absl::Duration, idle_timeout, absl::Seconds(120), "close a socket this quiet (0: never)");
ABSL_FLAG(int64_t, max_backlog_mib, 16, "drop a socket with more pending output (0: no limit)");
ABSL_FLAG(std::string, tls_cert, "", "serve wss:// with this PEM certificate chain");
ABSL_FLAG(std::string, tls_key, "", "the private key of --tls_cert");

namespace gev::examples {

gev::websocket::Options WebSocketOptionsFromFlags() {
  gev::websocket::Options options;
  options.deflate.enabled = absl::GetFlag(FLAGS_deflate);
  options.max_message = static_cast<uint64_t>(std::max<int64_t>(1, absl::GetFlag(FLAGS_max_message_mib)))
                        << 20;
  options.ping_interval = absl::GetFlag(FLAGS_ping_interval);
  options.idle_timeout = absl::GetFlag(FLAGS_idle_timeout);
  options.max_backlog = static_cast<size_t>(std::max<int64_t>(0, absl::GetFlag(FLAGS_max_backlog_mib)))
                        << 20;
  return options;
}

absl::StatusOr<std::shared_ptr<TransportFactory>> TlsFromFlags() {
  if (absl::GetFlag(FLAGS_tls_cert).empty() && absl::GetFlag(FLAGS_tls_key).empty()) {
    return std::shared_ptr<TransportFactory>();
  }
  gev::tls::ServerConfig config;
  config.certificate.chain_file = absl::GetFlag(FLAGS_tls_cert);
  config.certificate.key_file = absl::GetFlag(FLAGS_tls_key);
  config.alpn = {"http/1.1"};  // WebSocket over TLS is HTTP/1.1's upgrade (RFC 6455).
  absl::StatusOr<std::shared_ptr<gev::tls::ServerContext>> context =
      gev::tls::ServerContext::Create(config);
  if (!context.ok()) return context.status();
  return gev::tls::ServerTransport(*context);
}

int ServeWebSocket(gev::websocket::Service& service) {
  absl::StatusOr<std::shared_ptr<TransportFactory>> tls = TlsFromFlags();
  if (!tls.ok()) return Fail(tls.status());
  int loops = absl::GetFlag(FLAGS_loops);
  if (loops <= 0) loops = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  auto server = gev::NewServer(&service,
                               gev::Address(AddressForPort(absl::GetFlag(FLAGS_port))),
                               gev::NumLoops(loops),
                               gev::ReusePort(absl::GetFlag(FLAGS_reuseport)),
                               gev::WithTransport(*tls));
  if (!server.ok()) return Fail(server.status());
  return ServeUntilSignal(**server);
}

}  // namespace gev::examples

// A TCP proxy: listens, dials the upstream for each connection on that connection's loop, and
// relays both ways with backpressure (see proxy.h). Either side may be TLS: --tls_cert and
// --tls_key terminate TLS from clients, --upstream_tls originates it toward the upstream.
//
//   tools/bazel run //examples/proxy -- --port=7000 --upstream=127.0.0.1:6379 --loops=1
//   tools/bazel run //examples/proxy -- --port=8443 --tls_cert=$PWD/cert.pem
//       --tls_key=$PWD/key.pem --upstream=127.0.0.1:8080            (TLS terminated; one line)
//   tools/bazel run //examples/proxy -- --port=7000 --upstream=example.com:443
//       --upstream_tls                                              (TLS originated; one line)

#include <algorithm>
#include <cstdint>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/time/time.h"
#include "examples/common/serve.h"
#include "examples/proxy/proxy.h"
#include "net/socket_ops.h"
#include "server/server.h"
#include "tls/tls.h"

ABSL_FLAG(int, port, 7000, "TCP port to listen on (0: any free port)");
ABSL_FLAG(std::string, listen_unix, "", "listen on this Unix socket path (or @name) instead");
ABSL_FLAG(std::string, upstream, "127.0.0.1:1833", "where to relay: host:port, or a path");
ABSL_FLAG(std::string, upstream_network, "tcp", "tcp, tcp4, tcp6 or unix");
ABSL_FLAG(int, loops, 1, "worker loops (<= 0: one per CPU)");
ABSL_FLAG(bool, reuseport, false, "one SO_REUSEPORT listener per loop instead of one acceptor");
ABSL_FLAG(int64_t, high_water_mark, 1 << 20,
          "pending output per side past which the other side is not read");
ABSL_FLAG(int, connect_timeout_ms, 5000, "upstream connect timeout");
ABSL_FLAG(std::string, tls_cert, "", "terminate TLS from clients with this PEM chain");
ABSL_FLAG(std::string, tls_key, "", "the private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "with --tls_cert: require client certificates issued by a CA in this PEM file");
ABSL_FLAG(bool, upstream_tls, false, "speak TLS to the upstream (its certificate is verified)");
ABSL_FLAG(std::string, upstream_ca, "",
          "PEM CAs the upstream is verified against (default: the system's)");
ABSL_FLAG(std::string, upstream_server_name, "",
          "name checked in the upstream's certificate and sent as SNI (default: its host)");

ABSL_FLAG(absl::Duration, idle_timeout, absl::ZeroDuration(),
          "close a pair with no byte either way for this long (0: never)");
ABSL_FLAG(int64_t, max_pairs, 0,
          "most pairs open at once; 0: what the descriptor limit leaves (2 a pair)");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "A TCP proxy. Usage: proxy --port=7000 --upstream=127.0.0.1:6379 --loops=1");
  absl::ParseCommandLine(argc, argv);
  gev::examples::TcpProxy::Options options;
  options.upstream = absl::GetFlag(FLAGS_upstream);
  options.upstream_network = absl::GetFlag(FLAGS_upstream_network);
  options.connect_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_connect_timeout_ms));
  options.high_water_mark = static_cast<size_t>(absl::GetFlag(FLAGS_high_water_mark));
  options.idle_timeout = absl::GetFlag(FLAGS_idle_timeout);
  // Raised here (ServeUntilSignal would, later) so that the pairs it leaves room for are known
  // before the server is made. Best effort: a lower limit only means fewer pairs.
  (void)gev::sockets::RaiseOpenFileLimit();
  options.max_pairs = static_cast<size_t>(std::max<int64_t>(0, absl::GetFlag(FLAGS_max_pairs)));
  int loops = absl::GetFlag(FLAGS_loops);
  if (loops <= 0) loops = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (options.max_pairs == 0) {
    options.max_pairs = gev::examples::TcpProxy::MaxPairsForDescriptorLimit(loops);
  }
  if (absl::GetFlag(FLAGS_upstream_tls)) {
    gev::tls::ClientConfig upstream_tls;
    upstream_tls.ca_file = absl::GetFlag(FLAGS_upstream_ca);
    absl::StatusOr<std::shared_ptr<gev::tls::ClientContext>> context =
        gev::tls::ClientContext::Create(upstream_tls);
    if (!context.ok()) return gev::examples::Fail(context.status());
    options.upstream_transport = gev::tls::ClientTransport(*context);
    options.upstream_server_name = absl::GetFlag(FLAGS_upstream_server_name);
    if (options.upstream_network == "unix" && options.upstream_server_name.empty()) {
      // Said at start, not as a reset of every client: a Unix path is no name to verify.
      return gev::examples::Fail(absl::InvalidArgumentError(
          "--upstream_tls over a Unix socket needs --upstream_server_name"));
    }
  }
  std::shared_ptr<gev::TransportFactory> downstream_transport;
  if (!absl::GetFlag(FLAGS_tls_cert).empty() || !absl::GetFlag(FLAGS_tls_key).empty()) {
    gev::tls::ServerConfig terminate;
    terminate.certificate.chain_file = absl::GetFlag(FLAGS_tls_cert);
    terminate.certificate.key_file = absl::GetFlag(FLAGS_tls_key);
    terminate.client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
    absl::StatusOr<std::shared_ptr<gev::tls::ServerContext>> context =
        gev::tls::ServerContext::Create(terminate);
    if (!context.ok()) return gev::examples::Fail(context.status());
    downstream_transport = gev::tls::ServerTransport(*context);
  }
  gev::examples::TcpProxy proxy(options);

  std::string listen_unix = absl::GetFlag(FLAGS_listen_unix);
  auto server = gev::NewServer(
      &proxy,
      listen_unix.empty() ? gev::Network("tcp") : gev::Network("unix"),
      gev::Address(listen_unix.empty()
                       ? gev::examples::AddressForPort(absl::GetFlag(FLAGS_port))
                       : listen_unix),
      gev::NumLoops(absl::GetFlag(FLAGS_loops)), gev::ReusePort(absl::GetFlag(FLAGS_reuseport)),
      gev::HighWaterMark(options.high_water_mark), gev::PauseReadingAtHighWater(false),
      gev::HalfClose(true),
      // Past it, clients wait in the listen backlog instead of being accepted and reset.
      gev::MaxConnections(options.max_pairs == SIZE_MAX ? 0 : options.max_pairs),
      gev::WithTransport(downstream_transport));
  if (!server.ok()) return gev::examples::Fail(server.status());
  return gev::examples::ServeUntilSignal(**server);
}

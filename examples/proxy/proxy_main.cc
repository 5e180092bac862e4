// A TCP proxy: listens, dials the upstream for each connection on that connection's loop, and
// relays both ways with backpressure (see proxy.h).
//
//   tools/bazel run //examples/proxy -- --port=7000 --upstream=127.0.0.1:6379 --loops=1

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/time/time.h"
#include "examples/common/serve.h"
#include "examples/proxy/proxy.h"
#include "server/server.h"

ABSL_FLAG(int, port, 7000, "TCP port to listen on (0: any free port)");
ABSL_FLAG(std::string, listen_unix, "", "listen on this Unix socket path (or @name) instead");
ABSL_FLAG(std::string, upstream, "127.0.0.1:1833", "where to relay: host:port, or a path");
ABSL_FLAG(std::string, upstream_network, "tcp", "tcp, tcp4, tcp6 or unix");
ABSL_FLAG(int, loops, 1, "worker loops (<= 0: one per CPU)");
ABSL_FLAG(bool, reuseport, false, "one SO_REUSEPORT listener per loop instead of one acceptor");
ABSL_FLAG(int64_t, high_water_mark, 1 << 20,
          "pending output per side past which the other side is not read");
ABSL_FLAG(int, connect_timeout_ms, 5000, "upstream connect timeout");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "A TCP proxy. Usage: proxy --port=7000 --upstream=127.0.0.1:6379 --loops=1");
  absl::ParseCommandLine(argc, argv);
  gev::examples::TcpProxy::Options options;
  options.upstream = absl::GetFlag(FLAGS_upstream);
  options.upstream_network = absl::GetFlag(FLAGS_upstream_network);
  options.connect_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_connect_timeout_ms));
  options.high_water_mark = static_cast<size_t>(absl::GetFlag(FLAGS_high_water_mark));
  gev::examples::TcpProxy proxy(options);

  std::string listen_unix = absl::GetFlag(FLAGS_listen_unix);
  auto server = gev::NewServer(
      &proxy,
      listen_unix.empty() ? gev::Network("tcp") : gev::Network("unix"),
      gev::Address(listen_unix.empty()
                       ? gev::examples::AddressForPort(absl::GetFlag(FLAGS_port))
                       : listen_unix),
      gev::NumLoops(absl::GetFlag(FLAGS_loops)), gev::ReusePort(absl::GetFlag(FLAGS_reuseport)),
      gev::HighWaterMark(options.high_water_mark));
  if (!server.ok()) return gev::examples::Fail(server.status());
  return gev::examples::ServeUntilSignal(**server);
}

#include "server/options.h"

#include <utility>

namespace gev {

Option Network(std::string network) {
  return [network = std::move(network)](ServerOptions& o) { o.network = network; };
}
Option Address(std::string address) {
  return [address = std::move(address)](ServerOptions& o) { o.address = address; };
}
Option NumLoops(int loops) {
  return [loops](ServerOptions& o) { o.num_loops = loops; };
}
Option ReusePort(bool on) {
  return [on](ServerOptions& o) { o.reuse_port = on; };
}
Option IdleTime(absl::Duration idle_time) {
  return [idle_time](ServerOptions& o) { o.idle_time = idle_time; };
}
Option CustomProtocol(std::shared_ptr<Protocol> protocol) {
  return [protocol = std::move(protocol)](ServerOptions& o) { o.protocol = protocol; };
}
Option LoadBalance(LoadBalancer balancer) {
  return [balancer = std::move(balancer)](ServerOptions& o) { o.load_balancer = balancer; };
}
Option TCPNoDelay(bool on) {
  return [on](ServerOptions& o) { o.tcp_no_delay = on; };
}
Option TCPKeepAlive(absl::Duration interval) {
  return [interval](ServerOptions& o) { o.tcp_keep_alive = interval; };
}
Option HighWaterMark(size_t bytes) {
  return [bytes](ServerOptions& o) { o.high_water_mark = bytes; };
}
Option MaxInputBytes(size_t bytes) {
  return [bytes](ServerOptions& o) { o.max_input_bytes = bytes; };
}
Option MaxPendingOutput(size_t bytes) {
  return [bytes](ServerOptions& o) { o.max_pending_output = bytes; };
}
Option StopTimeout(absl::Duration timeout) {
  return [timeout](ServerOptions& o) { o.stop_timeout = timeout; };
}

Option WithTransport(std::shared_ptr<TransportFactory> transport) {
  return [transport = std::move(transport)](ServerOptions& o) { o.transport = transport; };
}

Option GatherWrites(bool on) {
  return [on](ServerOptions& o) { o.gather_writes = on; };
}

}  // namespace gev

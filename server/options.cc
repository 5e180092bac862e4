#include "server/options.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "ringbuffer/ring_buffer.h"

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
Option MaxConnections(size_t connections) {
  return [connections](ServerOptions& o) { o.max_connections = connections; };
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
Option PauseReadingAtHighWater(bool on) {
  return [on](ServerOptions& o) { o.pause_reading_at_high_water = on; };
}
Option HalfClose(bool on) {
  return [on](ServerOptions& o) { o.half_close = on; };
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

Option LingerQuiet(absl::Duration quiet) {
  return [quiet](ServerOptions& o) { o.linger_quiet = quiet; };
}

Option WithTransport(std::shared_ptr<TransportFactory> transport) {
  return [transport = std::move(transport)](ServerOptions& o) { o.transport = transport; };
}

Option Listeners(std::vector<int> listening_fds) {
  return [listening_fds = std::move(listening_fds)](ServerOptions& o) { o.listeners = listening_fds; };
}

Option HandoffPath(std::string path) {
  return [path = std::move(path)](ServerOptions& o) { o.handoff_path = path; };
}

Option HandoffRequired(bool required) {
  return [required](ServerOptions& o) { o.handoff_required = required; };
}

Option GatherWrites(bool on) {
  return [on](ServerOptions& o) { o.gather_writes = on; };
}

Option ReadsPerEvent(int reads) {
  return [reads](ServerOptions& o) { o.reads_per_event = reads; };
}

namespace server_internal {

absl::StatusOr<Connection::Options> ConnectionOptionsFor(const ConnectionSettings& settings) {
  if (settings.idle_time < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("IdleTime must not be negative");
  }
  if (settings.tcp_keep_alive < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("TCPKeepAlive must not be negative");
  }
  if (settings.stop_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("StopTimeout must not be negative");
  }
  if (settings.linger_quiet < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("LingerQuiet must not be negative");
  }
  if (settings.high_water_mark == 0) return absl::InvalidArgumentError("HighWaterMark is 0");
  if (settings.max_input_bytes == 0) return absl::InvalidArgumentError("MaxInputBytes is 0");
  if (settings.reads_per_event < 1 || settings.reads_per_event > Connection::kMaxReadsPerEvent) {
    return absl::InvalidArgumentError(absl::StrCat("ReadsPerEvent(", settings.reads_per_event,
                                                   ") is not between 1 and ",
                                                   Connection::kMaxReadsPerEvent));
  }
  size_t max_pending_output = settings.max_pending_output;
  if (max_pending_output == 0) {
    // Room for the mark's backlog and a few reads past it (a read can bring 128 KiB).
    max_pending_output = std::min<size_t>(std::max<size_t>(settings.high_water_mark * 4, 4 << 20),
                                          RingBuffer::kMaxLimit);
  }
  if (max_pending_output > RingBuffer::kMaxLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("MaxPendingOutput(", max_pending_output, ") is more than 2 GiB"));
  }
  if (max_pending_output < settings.high_water_mark) {
    return absl::InvalidArgumentError(absl::StrCat(
        "MaxPendingOutput(", max_pending_output, ") is below HighWaterMark(",
        settings.high_water_mark, "): the mark could never be reached"));
  }
  Connection::Options options;
  options.high_water_mark = settings.high_water_mark;
  options.low_water_mark = settings.high_water_mark / 2;
  options.pause_reading_at_high_water = settings.pause_reading_at_high_water;
  options.half_close = settings.half_close;
  options.max_input_bytes = settings.max_input_bytes;
  options.max_pending_output = max_pending_output;
  options.idle_timeout = settings.idle_time;
  options.error_close_timeout = settings.stop_timeout;
  options.linger_quiet = settings.linger_quiet;
  options.gather_writes = settings.gather_writes;
  options.reads_per_event = settings.reads_per_event;
  return options;
}

}  // namespace server_internal
}  // namespace gev

// -----------------------------------------------------------------------------
// File: server/datagram_server.h
// -----------------------------------------------------------------------------
//
// `gev::DatagramServer` serves UDP on gev's loops: a `DatagramHandler` gets each datagram with
// its peer and answers by returning the reply (a `gev::Reply`, as `OnMessage` does), or sends
// with `SendTo` from any thread. Each loop reads with recvmmsg, up to `batch` datagrams per
// call into buffers it owns (no allocation per datagram), and writes the replies of a batch
// with one sendmmsg. With more than one loop, every loop has its own SO_REUSEPORT socket on the
// port and the kernel spreads peers across them (a peer's datagrams stay on one loop); with
// one loop, one socket. Runs of same-size datagrams to one peer leave as one GSO message
// (`DatagramOptions::gso`, on), and may arrive as one GRO buffer (`gro`, off).
//
//   class Echo : public gev::DatagramHandler {
//     gev::Reply OnDatagram(gev::Datagram& datagram) override {
//       return gev::Reply::FromBuffer(datagram.payload.size());   // the payload, no copy
//     }
//   };
//   Echo echo;
//   auto server = gev::NewDatagramServer(&echo, gev::Network("udp"), gev::Address(":5353"),
//                                        gev::NumLoops(2));
//   gev::ServeUntilSignal(**server);   // server/serve.h
//
// Nothing is dropped without a count: a datagram longer than `max_datagram` arrives cut and goes
// to OnTruncated (not OnDatagram), counted; the kernel's drops for want of receive buffer
// (SO_RXQ_OVFL) are counted; a reply the socket cannot take now (its buffer full) waits, up to
// `max_queued_bytes` per loop, past which it is refused and counted (SendTo returns
// ResourceExhausted); a reply the kernel refuses (too long, unreachable) reaches OnSendError.
// All counts are in Stats().
//
// Thread safety: handler callbacks run on the loop threads (one loop's callbacks never
// overlap; different loops' may). SendTo, Stop and Stats are thread-safe.

#ifndef GEV_SERVER_DATAGRAM_SERVER_H_
#define GEV_SERVER_DATAGRAM_SERVER_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "eventloop/event_loop.h"
#include "net/inet_address.h"
#include "server/options.h"
#include "server/reply.h"

namespace gev {

class DatagramServer;

// One datagram, as the handler sees it. Good for the call only.
struct Datagram {
  std::string_view payload;
  const InetAddress& peer;
  EventLoop& loop;
  size_t loop_index;
  DatagramServer& server;
};

class DatagramHandler {
 public:
  virtual ~DatagramHandler() = default;
  // DatagramHandler::OnLoopStart() — on each loop's thread before its first datagram.
  virtual void OnLoopStart(EventLoop& loop, size_t loop_index) {
    (void)loop;
    (void)loop_index;
  }
  // DatagramHandler::OnDatagram() — a datagram. Returns the reply to its peer (nothing: no
  // reply; Reply::FromBuffer(n): the first n bytes of the payload, sent without a copy).
  virtual Reply OnDatagram(Datagram& datagram) = 0;
  // DatagramHandler::OnTruncated() — a datagram longer than max_datagram: `datagram.payload`
  // holds its first max_datagram bytes, `length` its whole length. Counted; no reply.
  virtual void OnTruncated(Datagram& datagram, size_t length) {
    (void)datagram;
    (void)length;
  }
  // DatagramHandler::OnSendError() — the kernel refused a datagram to `peer` (too long for the
  // path, no route): it is not sent. Counted.
  virtual void OnSendError(const InetAddress& peer, const absl::Status& error) {
    (void)peer;
    (void)error;
  }
};

// What one loop has done. A snapshot, read without stopping anything.
struct DatagramLoopStats {
  uint64_t received = 0;         // Datagrams handed to OnDatagram or OnTruncated.
  uint64_t bytes_received = 0;
  uint64_t sent = 0;             // Datagrams the kernel took.
  uint64_t bytes_sent = 0;
  uint64_t receive_calls = 0;    // recvmmsg calls that returned datagrams.
  uint64_t send_calls = 0;       // sendmmsg calls.
  uint64_t truncated = 0;        // Longer than max_datagram (OnTruncated).
  uint64_t kernel_drops = 0;     // Dropped by the kernel for want of receive buffer.
  uint64_t send_refused = 0;     // Refused by the kernel (OnSendError).
  uint64_t queue_refused = 0;    // Refused with max_queued_bytes waiting.
  uint64_t blocked_flushes = 0;  // Flushes that found the socket's buffer full.
  uint64_t dropped_at_stop = 0;  // Still waiting for room 100 ms after Stop.
  uint64_t gso_messages = 0;     // Sends that carried a run of datagrams (UDP_SEGMENT).
  uint64_t gso_refusals = 0;     // GSO refused by the kernel (then off on that loop).
  uint64_t gro_reads = 0;        // Receives that carried a coalesced run (UDP_GRO).
};

struct DatagramServerStats {
  std::vector<DatagramLoopStats> loops;
  DatagramLoopStats Total() const;
};

struct DatagramOptions {
  // Datagrams per recvmmsg (and at most this many replies per sendmmsg, one per datagram).
  size_t batch = 64;
  // The longest datagram received whole; a longer one is truncated (OnTruncated). Each loop
  // holds batch x max_datagram bytes of receive buffer.
  size_t max_datagram = 2048;
  // Replies and sends waiting for a full socket buffer, per loop, before more are refused.
  size_t max_queued_bytes = 4 << 20;
  // Batches read per readiness event before other descriptors and tasks get their turn.
  size_t batches_per_event = 8;
  // Each socket's kernel buffers (SO_RCVBUF, SO_SNDBUF; 0: the system's default, 208 KiB on
  // most Linux systems). A receive buffer too small for a burst is where the kernel drops
  // datagrams (counted in kernel_drops): at 512 bytes a datagram it holds about 160. Past
  // net.core.rmem_max (wmem_max) only with CAP_NET_ADMIN.
  size_t receive_buffer_bytes = 0;
  size_t send_buffer_bytes = 0;
  // UDP GSO: replies and sends of one batch that go to one peer with one size (the last may
  // be shorter) leave as one UDP_SEGMENT message, up to 64 datagrams: one trip through the
  // stack for them all. The peer sees ordinary datagrams. Where the kernel or the device
  // refuses it, the loop sends them singly from then on (counted in gso_refusals, logged).
  bool gso = true;
  // UDP GRO: the kernel may hand a run of same-size datagrams from one peer (sent with GSO,
  // or coalesced by the NIC) as one buffer, which the loop splits again. The receive slots are
  // then 64 KiB each (batch x 64 KiB per loop) and max_datagram no longer cuts anything. Off
  // by default for that memory; where the kernel lacks it, a warning and plain receives.
  bool gro = false;
};

class DatagramServer {
 public:
  // DatagramServer::Create() — binds (so the port is known and datagrams queue before Start)
  // and creates the loops. `options.network` is "udp", "udp4" or "udp6"; address, num_loops
  // (more than one: SO_REUSEPORT, whatever reuse_port says) apply; the TCP options do not.
  static absl::StatusOr<std::unique_ptr<DatagramServer>> Create(DatagramHandler* handler,
                                                                ServerOptions options,
                                                                DatagramOptions datagram = {});
  DatagramServer(const DatagramServer&) = delete;
  DatagramServer& operator=(const DatagramServer&) = delete;

  // Stops, and if Start is running on another thread, waits for it to return. Not from a
  // callback (a loop thread), whose thread Start joins.
  ~DatagramServer();

  // DatagramServer::Start() — serves until Stop(), then returns OK (at once if Stop came
  // first); if a loop cannot register its socket, the server stops and Start returns why.
  // The loops run on threads of their own; this thread waits.
  absl::Status Start();
  // DatagramServer::Stop() — the loops send what waits for room (for up to 100 ms; the rest
  // is counted in dropped_at_stop) and finish; Start returns. Idempotent. Thread-safe.
  void Stop();

  // DatagramServer::SendTo() — one datagram to `peer`, from any thread: on a loop thread it
  // goes with that loop's batch, from elsewhere through loop `loop_hint % NumLoops()`.
  // InvalidArgument past the largest datagram; FailedPrecondition once stopped. A refusal for
  // a full queue (ResourceExhausted) is known only on the loop: it is counted.
  absl::Status SendTo(std::string_view payload, const InetAddress& peer, size_t loop_hint = 0);

  // The bound address (port 0 resolved). Thread-safe.
  const InetAddress& ListenAddress() const { return listen_address_; }
  size_t NumLoops() const { return loops_.size(); }
  // Loop `i` (< NumLoops()), or null. Thread-safe.
  std::shared_ptr<EventLoop> Loop(size_t i) const;
  // Per-loop counters (see DatagramLoopStats). Thread-safe.
  DatagramServerStats Stats() const;

 private:
  struct LoopState;
  DatagramServer(DatagramHandler* handler, DatagramOptions options);
  // A loop could not start serving: the server stops, and Start returns `status`.
  void FailToStart(const absl::Status& status);

  DatagramHandler* const handler_;
  const DatagramOptions options_;
  InetAddress listen_address_;
  std::vector<std::unique_ptr<LoopState>> loops_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> started_{false};
  std::mutex stopped_mutex_;
  std::condition_variable stopped_cv_;
  bool stop_requested_ = false;  // Guarded by stopped_mutex_.
  bool start_returned_ = false;  // Guarded by stopped_mutex_.
  absl::Status start_error_;     // Guarded by stopped_mutex_.
};

// NewDatagramServer() — as NewServer: a handler and option functions (Network, Address,
// NumLoops).
template <typename... Options>
absl::StatusOr<std::unique_ptr<DatagramServer>> NewDatagramServer(DatagramHandler* handler,
                                                                  Options&&... options) {
  ServerOptions server_options;
  server_options.network = "udp";
  (Option(std::forward<Options>(options))(server_options), ...);
  return DatagramServer::Create(handler, std::move(server_options));
}

}  // namespace gev

#endif  // GEV_SERVER_DATAGRAM_SERVER_H_

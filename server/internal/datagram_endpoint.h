// -----------------------------------------------------------------------------
// File: server/internal/datagram_endpoint.h
// -----------------------------------------------------------------------------
//
// `DatagramEndpoint` is one datagram socket served on one loop: what a `DatagramServer` has
// per loop and a `DatagramClient` has once. It reads batches (recvmmsg), hands each datagram to
// the handler, queues the replies and sends them with one sendmmsg per batch, waits for room
// when the socket's buffer is full (reading paused, write interest on), counts everything, and
// on Finish gives what waits up to 100 ms (none when stopped from a callback) before it
// unregisters. A Unix datagram socket reads on while it waits, up to half its cap (its peer may
// be waiting for it to read; the kernel holds a sender back rather than drop), and an
// unconnected one cannot be
// polled for room (the kernel refuses a send when the receiver's queue is full, but polls the
// sender writable by its own buffer): it waits on a timer, 1 ms doubling to 64 ms, so that a
// slow receiver costs no spinning, and what waits for a receiver that reads nothing for a
// second is dropped (counted, and reported to OnSendError) so that the others' datagrams go. A connected endpoint (a client's)
// also reads the socket's error queue (IP_RECVERR), so that an ICMP error from the peer's host
// reaches OnSendError even when a send took the socket's pending error first.
//
// Not part of the public API. Thread safety: everything but Snapshot() on the loop thread.

#ifndef GEV_SERVER_INTERNAL_DATAGRAM_ENDPOINT_H_
#define GEV_SERVER_INTERNAL_DATAGRAM_ENDPOINT_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "eventloop/event_handler.h"
#include "eventloop/event_loop.h"
#include "net/datagram_io.h"
#include "net/inet_address.h"
#include "net/socket_address.h"
#include "server/datagram_handler.h"

namespace gev::datagram_internal {

// ParseDatagramAddress() — `network` "udp", "udp4" or "udp6" with "host:port", "[v6]:port" or
// ":port" (udp6: the IPv6 any-address; otherwise IPv4's), checked against each other (a host
// name is looked up: this may block); or "unixgram" with a path or "@name" (empty: unnamed).
absl::StatusOr<SocketAddress> ParseDatagramAddress(const std::string& network,
                                                   const std::string& address);
// OpenBoundDatagramSocket() — OpenDatagramSocket or OpenUnixDatagramSocket, as `address` is.
absl::StatusOr<int> OpenBoundDatagramSocket(const SocketAddress& address, bool reuse_port);

// Counters written by one loop thread and read by any: relaxed atomics, added to by their
// writer only.
struct Counter {
  std::atomic<uint64_t> value{0};
  void Add(uint64_t n) {
    value.store(value.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  uint64_t Get() const { return value.load(std::memory_order_relaxed); }
};

class DatagramEndpoint : public EventHandler,
                         public std::enable_shared_from_this<DatagramEndpoint> {
 public:
  // Who the handler is told a datagram came to.
  struct Owner {
    DatagramServer* server = nullptr;
    DatagramClient* client = nullptr;
    size_t index = 0;
  };

  // Takes `fd` (closed with the endpoint). Owned by a shared_ptr: Finish's retries keep it. `connected`: a client's socket, with a peer of its
  // own (replies and sends carry no address) and its error queue read.
  DatagramEndpoint(DatagramHandler* handler, const DatagramOptions& options,
                   std::shared_ptr<EventLoop> loop, int fd, Owner owner, bool connected,
                   InetAddress connected_peer = InetAddress());
  ~DatagramEndpoint() override;
  DatagramEndpoint(const DatagramEndpoint&) = delete;
  DatagramEndpoint& operator=(const DatagramEndpoint&) = delete;

  // Registers the socket with the loop (loop thread).
  absl::Status Register();
  // A datagram to `peer` (null: the connected peer) with bytes the endpoint keeps; sent with
  // the batch when one is being handled, at once otherwise (loop thread).
  void SendOwned(std::string bytes, const sockaddr_storage* peer, socklen_t peer_length);
  // Stop: no more reading; what waits for room gets `tries` x 5 ms, the rest is counted as
  // dropped at stop; then the socket is unregistered and `finished` runs (loop thread).
  void Finish(int tries, std::function<void()> finished);

  void HandleEvent(const PollEvent& event) override;

  bool finished() const { return finished_; }
  const std::shared_ptr<EventLoop>& loop() const { return loop_; }
  int fd() const { return fd_; }
  // Thread-safe.
  DatagramLoopStats Snapshot() const;

 private:
  Interest WantedInterest() const;
  bool ReadsWhileBlocked() const;
  void RetryLater();
  void DropForAStalledReceiver();
  void UpdateInterest();
  void Unregister();
  void ReadBatches();
  void ReadErrors();
  void Handle(const DatagramReader::Datagram& received);
  void Refused(const InetAddress& peer, const absl::Status& why);
  void Flush();

  DatagramHandler* const handler_;
  const DatagramOptions options_;
  const std::shared_ptr<EventLoop> loop_;
  const int fd_;
  const Owner owner_;
  const bool connected_;
  const InetAddress connected_peer_;
  bool registered_ = false;
  Interest registered_interest_ = Interest::kNone;
  // An unconnected Unix socket: waits for room on a timer (see the file comment).
  bool unix_ = false;  // A Unix datagram socket: reads on while it waits for room.
  bool waits_by_timer_ = false;
  uint64_t stalled_since_ms_ = 0;  // Since when the first datagram waits without progress.
  bool retry_pending_ = false;
  int retry_delay_ms_ = 0;
  DatagramReader reader_;
  DatagramWriter writer_;
  // The handler's Reply::View bytes, copied until the batch is flushed.
  std::string arena_;
  bool in_batch_ = false;
  bool finishing_ = false;  // Stop has begun: no more reading.
  bool finished_ = false;   // Stop is done: nothing more is sent.
  uint32_t last_kernel_drops_ = 0;
  uint64_t last_coalesced_reads_ = 0;
  // Written by the loop thread, read by any (Snapshot).
  Counter received_, bytes_received_, sent_, bytes_sent_, receive_calls_, send_calls_, truncated_,
      kernel_drops_, send_refused_, queue_refused_, blocked_flushes_, dropped_at_stop_,
      gso_messages_, gso_refusals_, gro_reads_, icmp_errors_;
};

}  // namespace gev::datagram_internal

#endif  // GEV_SERVER_INTERNAL_DATAGRAM_ENDPOINT_H_

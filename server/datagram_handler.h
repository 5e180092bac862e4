// -----------------------------------------------------------------------------
// File: server/datagram_handler.h
// -----------------------------------------------------------------------------
//
// What a UDP server (`gev::DatagramServer`, server/datagram_server.h) and a UDP client
// (`gev::DatagramClient`, server/datagram_client.h) share: the `DatagramHandler` that serves
// their datagrams, the `Datagram` it is given, the options of a socket's batching and buffers,
// and the per-loop counters. A handler's reply to a datagram goes back to its peer.
//
// Thread safety: a handler's callbacks run on loop threads (one loop's never overlap).

#ifndef GEV_SERVER_DATAGRAM_HANDLER_H_
#define GEV_SERVER_DATAGRAM_HANDLER_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "eventloop/event_loop.h"
#include "net/inet_address.h"
#include "server/reply.h"

namespace gev {

class DatagramServer;
class DatagramClient;

// One datagram, as the handler sees it. Good for the call only.
struct Datagram {
  std::string_view payload;
  const InetAddress& peer;
  EventLoop& loop;
  size_t loop_index;            // 0 on a client.
  DatagramServer* server;       // The server it came to, or null on a client.
  DatagramClient* client;       // The client it came to, or null on a server.
  // From a Unix datagram socket: the sender's path as the kernel gives it (an abstract name
  // after a NUL byte), and `peer` says only the family; for a sender that is not bound both
  // are empty (AF_UNSPEC), and a reply to it goes to OnSendError (FailedPrecondition). Empty
  // for UDP.
  std::string_view peer_path = {};
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
  // path, no route): it is not sent. Counted. On a client (a connected socket) also when the
  // peer's host answered with an ICMP error: Unavailable, "Connection refused" when nothing
  // listens on the peer's port.
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
  uint64_t gso_refusals = 0;     // GSO refused by the kernel (for that width and wider, or all).
  uint64_t gro_reads = 0;        // Receives that carried a coalesced run (UDP_GRO).
  uint64_t icmp_errors = 0;      // A client's: ICMP errors from the peer's host (OnSendError).
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
  // refuses it, the loop sends them singly (counted in gso_refusals, logged): from then on
  // runs that wide and wider if the path is narrower than the segments, all runs otherwise.
  bool gso = true;
  // UDP GRO: the kernel may hand a run of same-size datagrams from one peer (sent with GSO,
  // or coalesced by the NIC) as one buffer, which the loop splits again. The receive slots are
  // then 64 KiB each (batch x 64 KiB per loop) and max_datagram no longer cuts anything. Off
  // by default for that memory; where the kernel lacks it, a warning and plain receives.
  bool gro = false;
};

}  // namespace gev

#endif  // GEV_SERVER_DATAGRAM_HANDLER_H_

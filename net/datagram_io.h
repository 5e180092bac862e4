// -----------------------------------------------------------------------------
// File: net/datagram_io.h
// -----------------------------------------------------------------------------
//
// Batched datagram I/O on one non-blocking UDP (or Unix datagram) socket: `DatagramReader`
// reads up to a batch of datagrams with one recvmmsg(2) into slots it owns (no allocation per
// datagram), and `DatagramWriter` writes the datagrams queued since its last flush with one
// sendmmsg(2). `OpenDatagramSocket` makes a UDP socket: bound, optionally SO_REUSEPORT (one
// per loop), with the kernel's count of datagrams it dropped for want of buffer (SO_RXQ_OVFL)
// turned on; `OpenUnixDatagramSocket` a Unix one.
//
//   absl::StatusOr<int> fd = gev::OpenDatagramSocket(address, /*reuse_port=*/true);
//   gev::DatagramReader reader(/*batch=*/32, /*slot_size=*/65536);
//   gev::DatagramWriter writer(/*max_queued_bytes=*/4 << 20);
//   int n = reader.Read(*fd);                    // > 0: datagrams; 0: none; < 0: -errno
//   for (int i = 0; i < n; ++i) {
//     const gev::DatagramReader::Datagram& d = reader.at(i);
//     writer.Queue(d.peer, d.peer_length, d.payload);   // a view: flush before the next Read
//   }
//   writer.Flush(*fd);                           // one sendmmsg for the batch
//
// A datagram longer than a slot arrives cut (MSG_TRUNC): `truncated` is set and `length`
// says how long it was.
//
// Offloads, where the kernel has them (Linux 4.18 and 5.0): with `set_gso(true)`, runs of
// queued datagrams to one peer of one size (the last may be shorter) go as one message with
// UDP_SEGMENT, which the kernel (or the NIC) cuts into datagrams again: one trip through the
// stack for up to 64. A message the kernel refuses that way is sent again as single datagrams
// (counted in gso_refusals()): refused for its segments' size (a path narrower than them), runs
// of that size and wider go singly from then on (for every peer of this writer); refused
// otherwise (no checksum offload, a kernel without it), GSO is off on that writer. With
// `EnableGro(fd)` the kernel hands over such runs (from a GSO sender, or a NIC that coalesces)
// as one buffer, which Read splits back into datagrams; give such a reader slots of
// kMaxDatagram, or a run that does not fit ends in one truncated datagram holding what is left
// (counted as one). Only on UDP sockets: a Unix datagram socket would ignore UDP_SEGMENT and
// send the run as one datagram.
//
// Views queued with Queue() must stay valid until Flush; what a flush
// leaves unsent (the socket's buffer is full: EAGAIN) the writer copies and keeps, up to
// max_queued_bytes, for the next flush once the socket is writable; past that, Queue refuses
// with ResourceExhausted. A datagram the kernel refuses outright (EMSGSIZE, a peer it cannot
// reach) is dropped from the queue and reported by Flush; on a connected socket, the pending
// ICMP error that a send may take instead is not the datagram's, and it is sent again. (What
// one blocked flush copies is kept whatever the cap, so the writer may hold max_queued_bytes
// plus one batch.)
//
// Thread safety: none; each reader and writer belongs to one loop thread.

#ifndef GEV_NET_DATAGRAM_IO_H_
#define GEV_NET_DATAGRAM_IO_H_

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "net/inet_address.h"
#include "net/socket_address.h"

namespace gev {

// OpenDatagramSocket() — a non-blocking, close-on-exec UDP socket bound to `address` (an
// IPv6 any-address also takes IPv4: dual stack), with SO_RXQ_OVFL on; with `reuse_port`,
// SO_REUSEPORT so that one socket per loop shares the port and the kernel spreads peers
// across them.
absl::StatusOr<int> OpenDatagramSocket(const InetAddress& address, bool reuse_port);

// OpenUnixDatagramSocket() — a non-blocking, close-on-exec Unix datagram socket bound to
// `address`'s path (a stale socket file left by a process that died is replaced; a live one
// is an error) or abstract name ("@name"); an unnamed address binds to an abstract name the
// kernel picks (autobind), so that replies can reach it.
absl::StatusOr<int> OpenUnixDatagramSocket(const SocketAddress& address);

// SetSocketBuffers() — the socket's receive and send buffers (SO_RCVBUF, SO_SNDBUF; 0 leaves
// one as the kernel set it). The kernel counts its own overhead in them (a 512-byte datagram
// takes about 1.3 KiB of a receive buffer) and caps them at net.core.rmem_max and wmem_max,
// which a process with CAP_NET_ADMIN may pass (SO_RCVBUFFORCE); the result is what
// getsockopt says.
absl::Status SetSocketBuffers(int fd, size_t receive_bytes, size_t send_bytes);

// EnableGro() — asks the kernel to coalesce runs of same-size datagrams from one peer
// (UDP_GRO). Unimplemented where the kernel lacks it.
absl::Status EnableGro(int fd);

// The largest payload of one UDP datagram over IPv6 jumbograms aside: 65,535 minus the 8-byte
// UDP header (IPv4 allows 20 bytes less; the kernel refuses what does not fit).
inline constexpr size_t kMaxDatagram = 65527;

class DatagramReader {
 public:
  struct Datagram {
    std::string_view payload;  // The bytes received (a slot's; good until the next Read).
    size_t length = 0;         // The datagram's length: more than payload.size() if truncated.
    bool truncated = false;
    const sockaddr_storage* peer = nullptr;
    socklen_t peer_length = 0;
  };

  // `batch` datagrams per Read, each up to `slot_size` bytes (longer ones arrive cut).
  DatagramReader(size_t batch, size_t slot_size);
  DatagramReader(const DatagramReader&) = delete;
  DatagramReader& operator=(const DatagramReader&) = delete;

  // DatagramReader::Read() — one recvmmsg: the number of datagrams read (0 when none waits),
  // or -errno; with GRO on the socket, more than `batch` when runs arrived coalesced.
  // Invalidates the previous batch's views.
  int Read(int fd);
  const Datagram& at(size_t i) const { return datagrams_[i]; }
  size_t batch() const { return batch_; }
  size_t slot_size() const { return slot_size_; }
  // The kernel's count of datagrams this socket dropped since it was opened (SO_RXQ_OVFL), as
  // of the last Read that carried it.
  uint32_t kernel_drops() const { return kernel_drops_; }
  // Messages read that held a coalesced run of several datagrams (GRO).
  uint64_t coalesced_reads() const { return coalesced_reads_; }

 private:
  void Split(size_t slot, size_t length, size_t segment, const sockaddr_storage* peer,
             socklen_t peer_length);

  const size_t batch_;
  const size_t slot_size_;
  std::unique_ptr<char[]> slots_;
  std::vector<sockaddr_storage> peers_;
  std::vector<iovec> iovecs_;
  std::vector<mmsghdr> headers_;
  // Room for one SO_RXQ_OVFL control message per datagram.
  std::unique_ptr<char[]> control_;
  size_t control_size_ = 0;
  std::vector<Datagram> datagrams_;  // Grows past `batch` only for coalesced runs.
  size_t count_ = 0;
  uint32_t kernel_drops_ = 0;
  uint64_t coalesced_reads_ = 0;
};

class DatagramWriter {
 public:
  // What a flush did: datagrams written, and the first error of a datagram the kernel refused
  // (its datagram dropped from the queue), or OK.
  struct Flushed {
    size_t sent = 0;
    size_t bytes = 0;  // Of the datagrams sent.
    size_t refused = 0;
    absl::Status first_error;
    sockaddr_storage first_error_peer{};  // The peer of the first refused datagram.
    socklen_t first_error_peer_length = 0;
    bool blocked = false;  // The socket's buffer is full: wait until it is writable.
    // GSO was refused in this flush; the run went as single datagrams.
    absl::Status gso_refused;
  };

  explicit DatagramWriter(size_t max_queued_bytes);
  DatagramWriter(const DatagramWriter&) = delete;
  DatagramWriter& operator=(const DatagramWriter&) = delete;

  // DatagramWriter::Queue() — one datagram to `peer` (null: the socket's connected peer) made
  // of `first` and `second` (views that must stay valid until Flush). ResourceExhausted when
  // what is kept from blocked flushes would pass max_queued_bytes; InvalidArgument past
  // kMaxDatagram.
  absl::Status Queue(const sockaddr_storage* peer, socklen_t peer_length, std::string_view first,
                     std::string_view second = {});
  // DatagramWriter::QueueOwned() — the same with bytes the writer keeps (a reply built by the
  // handler, a send from another thread): no copy.
  absl::Status QueueOwned(const sockaddr_storage* peer, socklen_t peer_length, std::string bytes);
  // DatagramWriter::Flush() — writes what is queued, sendmmsg by sendmmsg. On EAGAIN the rest
  // is copied and kept (views no longer needed), and `blocked` is set.
  Flushed Flush(int fd);
  // DatagramWriter::DropTo() — drops what is queued for `peer` (one that does not read);
  // returns how many datagrams.
  size_t DropTo(const sockaddr_storage& peer, socklen_t peer_length);
  // The peer of the first datagram queued (empty() must be false); null for a connected one.
  const sockaddr_storage* first_peer(socklen_t* length) const {
    *length = entries_[head_].peer_length;
    return entries_[head_].has_peer ? &entries_[head_].peer : nullptr;
  }
  // DatagramWriter::Discard() — drops everything queued; returns how many datagrams.
  size_t Discard();
  bool empty() const { return head_ == entries_.size(); }
  // The last flush found the socket's buffer full and datagrams still wait (even empty ones).
  bool blocked() const { return blocked_ && !empty(); }
  size_t queued() const { return entries_.size() - head_; }
  // Bytes kept from blocked flushes.
  size_t kept_bytes() const { return kept_bytes_; }
  // sendmmsg calls made, for the stats.
  uint64_t send_calls() const { return send_calls_; }

  // DatagramWriter::set_gso() — send runs to one peer of one size as one UDP_SEGMENT message.
  // UDP sockets only (see the file comment).
  void set_gso(bool on) { gso_ = on; }
  bool gso() const { return gso_; }
  // Messages sent that carried several datagrams, and GSO refusals (each rules out a segment
  // size and all wider ones, or GSO).
  uint64_t gso_messages() const { return gso_messages_; }
  uint64_t gso_refusals() const { return gso_refusals_; }

 private:
  struct Entry {
    sockaddr_storage peer;
    socklen_t peer_length = 0;
    bool has_peer = false;
    // Views (until Flush), or `owned` when kept or handed over.
    std::string_view pieces[2];
    std::string owned;
    bool is_owned = false;
    size_t length = 0;
  };
  // One message of a sendmmsg: `count` entries from `first`.
  struct Message {
    size_t first = 0;
    size_t count = 0;
  };
  absl::Status Admit(size_t length) const;
  Entry& Append(const sockaddr_storage* peer, socklen_t peer_length);
  // How many entries from `first` (before `end`) go as one message.
  size_t RunLength(size_t first, size_t end) const;
  // Drops `count` entries at the head as refused by `error`, noting the first in `flushed`.
  void Refuse(size_t count, int error, Flushed& flushed);

  const size_t max_queued_bytes_;
  // A queue from head_; emptied (capacity kept) when all of it is sent, so a steady flow of
  // replies allocates nothing.
  std::vector<Entry> entries_;
  size_t head_ = 0;
  size_t kept_bytes_ = 0;
  uint64_t send_calls_ = 0;
  bool gso_ = false;
  uint64_t gso_messages_ = 0;
  uint64_t gso_refusals_ = 0;
  size_t gso_segment_limit_ = kMaxDatagram;  // Runs of wider segments go singly.
  bool blocked_ = false;
  // Scratch for sendmmsg, reused.
  std::vector<mmsghdr> headers_;
  std::vector<iovec> iovecs_;
  std::vector<Message> messages_;
  std::vector<uint64_t> control_;  // One UDP_SEGMENT control message per message, aligned.
};

}  // namespace gev

#endif  // GEV_NET_DATAGRAM_IO_H_

// -----------------------------------------------------------------------------
// File: net/output_queue.h
// -----------------------------------------------------------------------------
//
// `gev::OutputQueue` is the output of one stream that waits for its descriptor, in order: a
// `RingBuffer` (which grows by doubling, and can take over a source buffer's storage: an echo's
// path), and past kRingBytes blocks that never move (a `BlockQueue`, made on first need), so
// that no copy grows with the backlog. It knows nothing of connections: it appends, writes
// with one system call and says what was written; its owner decides what that means (write
// interest, watermarks, closing).
//
//   gev::OutputQueue queue;
//   if (!queue.Append(reply)) { /* no memory: the stream would have a hole */ }
//   gev::OutputQueue::Written written = queue.WriteTo(fd);        // what the socket took
//   written = queue.WriteTo(fd, {header, body});  // the queue, then two pieces, one writev
//
// Thread safety: none. One thread (a connection's loop) uses it.

#ifndef GEV_NET_OUTPUT_QUEUE_H_
#define GEV_NET_OUTPUT_QUEUE_H_

#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <string_view>

#include "absl/types/span.h"
#include "ringbuffer/block_queue.h"
#include "ringbuffer/ring_buffer.h"

namespace gev {

class OutputQueue {
 public:
  // The ring holds up to this much (its doublings copy at most half of it); more goes to
  // blocks.
  static constexpr size_t kRingBytes = 1 << 20;
  // Views of queued bytes per write: the ring's two and 16 blocks (4 MiB).
  static constexpr size_t kMaxQueuedViews = 18;
  // Most pieces one WriteTo() writes after the queue.
  static constexpr size_t kMaxPiecesAfter = 16;

  // What one WriteTo() wrote.
  struct Written {
    // Bytes in all, or -1 with errno set (never EINTR: it is retried; EAGAIN means none).
    ssize_t bytes = 0;
    // Of them, bytes of the pieces given after the queue.
    size_t of_pieces = 0;
  };

  OutputQueue() = default;
  OutputQueue(const OutputQueue&) = delete;
  OutputQueue& operator=(const OutputQueue&) = delete;

  size_t Length() const { return ring_.Length() + (spill_ != nullptr ? spill_->Length() : 0); }
  bool IsEmpty() const { return Length() == 0; }
  // Bytes queued in the ring, the part that can have been gathered (nothing spills until the
  // ring holds kRingBytes).
  size_t RingLength() const { return ring_.Length(); }

  // OutputQueue::Append() — queues `bytes` after what is queued. Returns false, having queued
  // nothing, when no memory could be had.
  bool Append(std::string_view bytes);

  // OutputQueue::TakeFrom() — queues all of `source`'s bytes by taking its storage, without a
  // copy (`source` is left empty). The queue must be empty.
  void TakeFrom(RingBuffer& source);

  // OutputQueue::WriteTo() — one write (writev) to `fd` of the queued bytes, in order, and
  // then of `pieces` (at most kMaxPiecesAfter), which follow the queue only when all of it
  // fits in the call (kMaxQueuedViews): otherwise they are not written. Consumes what it wrote
  // of the queue; the pieces' bytes written are the caller's to account for.
  Written WriteTo(int fd, absl::Span<const std::string_view> pieces = {});
  // OutputQueue::WriteSlicesAfter() — WriteTo() with the two views of a buffer's slices as the
  // pieces: a reply's path, kept lean when nothing is queued (one write(2) of one view).
  Written WriteSlicesAfter(int fd, const RingBuffer::Slices& slices);

  // OutputQueue::Clear() — drops everything queued and gives back the memory that held it.
  void Clear();

 private:
  bool NothingQueued() const { return ring_.IsEmpty() && (spill_ == nullptr || spill_->IsEmpty()); }

  RingBuffer ring_;
  // Output past the ring, after it in order; null until needed (most streams never spill).
  std::unique_ptr<BlockQueue> spill_;
};

}  // namespace gev

#endif  // GEV_NET_OUTPUT_QUEUE_H_

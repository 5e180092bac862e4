#include "net/output_queue.h"

#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "eventloop/check.h"

namespace gev {

bool OutputQueue::Append(std::string_view bytes) {
  if (bytes.empty()) return true;
  bool spilling = spill_ != nullptr && !spill_->IsEmpty();
  // Order holds: the ring's bytes are written first, and nothing goes back to the ring until
  // the blocks have drained. The ring may be larger than kRingBytes when it took over a
  // source's storage.
  if (!spilling && ring_.Length() + bytes.size() <= std::max(kRingBytes, ring_.Capacity())) {
    return ring_.WriteString(bytes);
  }
  if (spill_ == nullptr) spill_ = std::make_unique<BlockQueue>();
  return spill_->Append(bytes);
}

void OutputQueue::TakeFrom(RingBuffer& source) {
  // The ring's bytes would be replaced, not followed: a hole in the stream.
  GEV_CHECK(IsEmpty(), "OutputQueue::TakeFrom() on a queue that holds bytes");
  ring_.TakeFrom(source);
}

namespace {

// One write(2) of one view or one writev(2) of several, EINTR retried.
ssize_t WriteViews(int fd, const iovec* views, size_t count) {
  ssize_t n;
  do {
    // One view, the common case (a reply, a relayed read): write(2) spares the kernel the
    // iovec copy and checks that writev(2) makes.
    n = count == 1 ? ::write(fd, views[0].iov_base, views[0].iov_len)
                   : ::writev(fd, views, static_cast<int>(count));
  } while (n < 0 && errno == EINTR);
  return n;
}

}  // namespace

OutputQueue::Written OutputQueue::WriteTo(int fd, absl::Span<const std::string_view> pieces) {
  iovec views[kMaxQueuedViews + kMaxPiecesAfter];
  size_t count = 0;
  Written written;
  if (NothingQueued()) {
    // Nothing queued, the common case (a reply written at once): the pieces alone.
    for (std::string_view piece : pieces.subspan(0, kMaxPiecesAfter)) {
      if (!piece.empty()) views[count++] = {const_cast<char*>(piece.data()), piece.size()};
    }
    if (count == 0) return written;
    written.bytes = WriteViews(fd, views, count);
    if (written.bytes > 0) written.of_pieces = static_cast<size_t>(written.bytes);
    return written;
  }
  RingBuffer::Slices ring = ring_.PeekAll();
  for (std::string_view part : {ring.first, ring.second}) {
    if (part.empty()) continue;
    views[count++] = {const_cast<char*>(part.data()), part.size()};
  }
  size_t queued = ring.size();  // In the views.
  if (spill_ != nullptr && !spill_->IsEmpty()) {
    size_t filled = spill_->Front(views + count, kMaxQueuedViews - count);
    for (size_t i = count; i < count + filled; ++i) queued += views[i].iov_len;
    count += filled;
  }
  // Pieces go after the queue only when all of it is in this write, or they would overtake it.
  if (queued == Length()) {
    for (std::string_view piece : pieces.subspan(0, kMaxPiecesAfter)) {
      if (!piece.empty()) views[count++] = {const_cast<char*>(piece.data()), piece.size()};
    }
  }
  ssize_t n = WriteViews(fd, views, count);
  written.bytes = n;
  if (n <= 0) return written;
  size_t from_queue = std::min(static_cast<size_t>(n), queued);
  size_t from_ring = std::min(from_queue, ring_.Length());
  ring_.Retrieve(from_ring);
  if (from_queue > from_ring) spill_->Consume(from_queue - from_ring);
  written.of_pieces = static_cast<size_t>(n) - from_queue;
  return written;
}

OutputQueue::Written OutputQueue::WriteSlicesAfter(int fd, const RingBuffer::Slices& slices) {
  if (NothingQueued()) {
    Written written;
    written.bytes = slices.WriteToFd(fd);
    if (written.bytes > 0) written.of_pieces = static_cast<size_t>(written.bytes);
    return written;
  }
  std::string_view pieces[2] = {slices.first, slices.second};
  return WriteTo(fd, absl::Span<const std::string_view>(pieces));
}

void OutputQueue::Clear() {
  ring_.Reset();
  spill_.reset();
}

}  // namespace gev

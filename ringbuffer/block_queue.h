// -----------------------------------------------------------------------------
// File: ringbuffer/block_queue.h
// -----------------------------------------------------------------------------
//
// `gev::BlockQueue` is a FIFO of bytes kept in fixed-size blocks: appending fills the last block
// and then adds new ones; consuming gives each block back as soon as it is drained. What it
// holds is never moved or copied again, so growing costs the same per block however long the
// queue is, and its memory follows its length (at most a block of slack at each end). A
// connection's output spills into one when a peer falls far behind, where a doubling buffer
// would copy the whole backlog while holding it twice.
//
// Blocks come from the kernel (mmap) rather than from malloc, so memory given back is returned
// to the system at once instead of staying resident in the heap. Each thread keeps up to
// kCachedBlocksPerThread drained blocks (8 MiB) for reuse, so a backlog that comes and goes
// (a bulk stream) costs no system call and no page fault: with 8 cached blocks, mapping fresh
// ones cost the 1-loop stream echo ~25% more server CPU per message (tools/echo_compare.sh
// --only=stream1), with 32 none measurable. The queue's links live in the blocks: an empty queue owns nothing and allocates
// nothing.
//
// Example:
//
//   gev::BlockQueue queue;
//   if (!queue.Append(bytes)) return OutOfMemory();   // all of it or nothing
//   iovec views[16];
//   size_t count = queue.Front(views, 16);
//   ssize_t n = ::writev(fd, views, static_cast<int>(count));
//   if (n > 0) queue.Consume(static_cast<size_t>(n));
//
// Thread safety: none; one thread at a time (a connection's loop thread). A queue may move
// between threads; blocks go back to the cache of the thread that drains them.

#ifndef GEV_RINGBUFFER_BLOCK_QUEUE_H_
#define GEV_RINGBUFFER_BLOCK_QUEUE_H_

#if __cplusplus < 201703L
#error "gev needs C++17: compile with -std=c++17 (with Bazel: build --cxxopt=-std=c++17 in .bazelrc)"
#endif

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace gev {

class BlockQueue {
 public:
  // Bytes mapped per block, and the bytes of it that hold data (the rest is the block's links).
  static constexpr size_t kBlockSize = 256 * 1024;
  static constexpr size_t kHeaderSize = 64;
  static constexpr size_t kBytesPerBlock = kBlockSize - kHeaderSize;
  static constexpr size_t kCachedBlocksPerThread = 32;

  BlockQueue() = default;
  ~BlockQueue() { Clear(); }
  BlockQueue(const BlockQueue&) = delete;
  BlockQueue& operator=(const BlockQueue&) = delete;

  size_t Length() const { return length_; }
  bool IsEmpty() const { return length_ == 0; }
  size_t block_count() const { return block_count_; }

  // BlockQueue::Append() — adds `bytes` at the back. Returns false, having added nothing, when
  // the blocks it needs cannot be had.
  bool Append(std::string_view bytes);

  // BlockQueue::Front() — fills up to `max` views with the bytes at the front, in order, one per
  // block; returns how many it filled. Consumes nothing.
  size_t Front(iovec* views, size_t max) const;

  // BlockQueue::Consume() — drops the first min(n, Length()) bytes, giving back drained blocks.
  void Consume(size_t n);

  // BlockQueue::Clear() — drops everything and gives back every block.
  void Clear();

  // Blocks mapped now in the whole process, queued or cached: for tests. Thread-safe.
  static size_t MappedBlocks();

 private:
  // At the start of every block.
  struct Block {
    Block* next;
    uint32_t begin;  // First unconsumed byte of data().
    uint32_t end;    // One past the last byte written.
    char* data() { return reinterpret_cast<char*>(this) + kHeaderSize; }
  };

  Block* head_ = nullptr;
  Block* tail_ = nullptr;
  size_t length_ = 0;
  size_t block_count_ = 0;
};

}  // namespace gev

#endif  // GEV_RINGBUFFER_BLOCK_QUEUE_H_

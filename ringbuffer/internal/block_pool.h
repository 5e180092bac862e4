// -----------------------------------------------------------------------------
// File: ringbuffer/internal/block_pool.h
// -----------------------------------------------------------------------------
//
// The per-thread pool of storage blocks behind `gev::RingBuffer`: one spare block per size class
// taken and handed back inline by the buffer's fast paths, and a bounded array of further blocks
// in ring_buffer.cc. Internal: included by ring_buffer.h for those inline paths, used directly
// only by the buffer's own tests and benchmarks.
//
// Thread safety: every slot is thread_local; nothing here is shared between threads.

#ifndef GEV_RINGBUFFER_INTERNAL_BLOCK_POOL_H_
#define GEV_RINGBUFFER_INTERNAL_BLOCK_POOL_H_

#include <cstddef>
#include <cstdint>

namespace gev {
namespace ringbuffer_internal {

// Blocks of storage recycled per thread, by power-of-two size class from
// RingBuffer::kMinCapacity (class 0) to kLargestPooledBlock. Exposed for tests and benchmarks.
inline constexpr int kSmallestBlockLog2 = 10;  // RingBuffer::kMinCapacity is 1 KiB.
inline constexpr int kSizeClasses = 7;         // 1 KiB .. 64 KiB.
inline constexpr size_t kLargestPooledBlock = size_t{1} << (kSmallestBlockLog2 + kSizeClasses - 1);
// Every block starts on a cache line (so a copy into an empty buffer's block never splits a
// vector store across two lines at its start); a buffer keeps its capacity in the low bits of
// its block's address.
inline constexpr uintptr_t kBlockAlignment = 64;
char* AcquireBlock(size_t capacity);
void ReleaseBlock(char* block, size_t capacity);
// Blocks held by this thread's pool, over all size classes.
size_t PooledBlockCount();

// One spare block per size class: the block of that class a buffer on this thread handed back
// last. It lives in the header so that a buffer taking storage on its first write, or handing
// it back on becoming empty, swaps it inline with one load and one store: no call, and no count
// with a dependent indexed load, as the rest of the pool (in ring_buffer.cc) needs. That matters
// for the smallest class, where almost every message fits, and for the largest, which a stream
// of 64 KiB writes empties and refills every time. Each slot holds kSpareSlotClosed until the
// thread has arranged to free its pooled blocks at exit (nothing may be kept before then, nor
// after that has run), kSpareSlotEmpty when open and empty, and otherwise the block's address.
inline constexpr uintptr_t kSpareSlotClosed = 0;
inline constexpr uintptr_t kSpareSlotEmpty = 1;
inline thread_local uintptr_t spare_blocks[kSizeClasses] = {};

// The size class of a pooled capacity (a power of two from 1 KiB to kLargestPooledBlock).
inline int SizeClass(size_t capacity) { return __builtin_ctzll(capacity) - kSmallestBlockLog2; }

// The size class of the smallest block that holds `n` bytes (n > 0); classes beyond the pooled
// ones (n > kLargestPooledBlock) count on in the same way.
inline int SizeClassFor(size_t n) {
  return n <= (size_t{1} << kSmallestBlockLog2) ? 0
                                                : 64 - kSmallestBlockLog2 - __builtin_clzll(n - 1);
}

// Takes the spare block of a class, or returns nullptr when there is none.
inline char* TakeSpareBlock(int size_class) {
  uintptr_t spare = spare_blocks[size_class];
  if (spare <= kSpareSlotEmpty) return nullptr;
  spare_blocks[size_class] = kSpareSlotEmpty;
  return reinterpret_cast<char*>(spare);
}

// Keeps `block` as its class's spare; false when the slot is closed or full.
inline bool KeepSpareBlock(int size_class, char* block) {
  if (spare_blocks[size_class] != kSpareSlotEmpty) return false;
  spare_blocks[size_class] = reinterpret_cast<uintptr_t>(block);
  return true;
}

}  // namespace ringbuffer_internal

}  // namespace gev

#endif  // GEV_RINGBUFFER_INTERNAL_BLOCK_POOL_H_

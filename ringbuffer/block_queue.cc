#include "ringbuffer/block_queue.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstring>

namespace gev {
namespace {

std::atomic<size_t> mapped_blocks{0};

char* MapBlock() {
  void* block = ::mmap(nullptr, BlockQueue::kBlockSize, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (block == MAP_FAILED) return nullptr;
  mapped_blocks.fetch_add(1, std::memory_order_relaxed);
  return static_cast<char*>(block);
}

void UnmapBlock(char* block) {
  ::munmap(block, BlockQueue::kBlockSize);
  mapped_blocks.fetch_sub(1, std::memory_order_relaxed);
}

// Drained blocks kept by this thread for the next Append, unmapped when the thread exits.
// `closed` after that: a queue destroyed later in the thread's exit unmaps its blocks.
struct BlockCache {
  char* blocks[BlockQueue::kCachedBlocksPerThread];
  size_t count = 0;
  bool closed = false;
  ~BlockCache() {
    for (size_t i = 0; i < count; ++i) UnmapBlock(blocks[i]);
    count = 0;
    closed = true;
  }
};

thread_local BlockCache block_cache;

char* TakeBlock() {
  if (!block_cache.closed && block_cache.count > 0) return block_cache.blocks[--block_cache.count];
  return MapBlock();
}

void GiveBackBlock(char* block) {
  if (!block_cache.closed && block_cache.count < BlockQueue::kCachedBlocksPerThread) {
    block_cache.blocks[block_cache.count++] = block;
    return;
  }
  UnmapBlock(block);
}

}  // namespace

size_t BlockQueue::MappedBlocks() { return mapped_blocks.load(std::memory_order_relaxed); }

bool BlockQueue::Append(std::string_view bytes) {
  if (bytes.empty()) return true;
  size_t room = tail_ == nullptr ? 0 : kBytesPerBlock - tail_->end;
  // Every block the bytes need is taken before any byte is copied: all or nothing. They are
  // chained through their own headers, so taking them allocates nothing else.
  Block* fresh_head = nullptr;
  Block* fresh_tail = nullptr;
  size_t fresh_count = 0;
  if (bytes.size() > room) {
    size_t needed = (bytes.size() - room + kBytesPerBlock - 1) / kBytesPerBlock;
    for (size_t i = 0; i < needed; ++i) {
      char* memory = TakeBlock();
      if (memory == nullptr) {
        while (fresh_head != nullptr) {
          Block* next = fresh_head->next;
          GiveBackBlock(reinterpret_cast<char*>(fresh_head));
          fresh_head = next;
        }
        return false;
      }
      Block* block = reinterpret_cast<Block*>(memory);
      block->next = nullptr;
      block->begin = block->end = 0;
      (fresh_tail == nullptr ? fresh_head : fresh_tail->next) = block;
      fresh_tail = block;
      ++fresh_count;
    }
  }
  length_ += bytes.size();
  if (room > 0) {
    size_t n = std::min(room, bytes.size());
    std::memcpy(tail_->data() + tail_->end, bytes.data(), n);
    tail_->end += static_cast<uint32_t>(n);
    bytes.remove_prefix(n);
  }
  for (Block* block = fresh_head; block != nullptr; block = block->next) {
    size_t n = std::min(kBytesPerBlock, bytes.size());
    std::memcpy(block->data(), bytes.data(), n);
    block->end = static_cast<uint32_t>(n);
    bytes.remove_prefix(n);
  }
  if (fresh_head != nullptr) {
    (tail_ == nullptr ? head_ : tail_->next) = fresh_head;
    tail_ = fresh_tail;
    block_count_ += fresh_count;
  }
  return true;
}

size_t BlockQueue::Front(iovec* views, size_t max) const {
  size_t count = 0;
  for (Block* block = head_; block != nullptr && count < max; block = block->next, ++count) {
    views[count].iov_base = block->data() + block->begin;
    views[count].iov_len = block->end - block->begin;
  }
  return count;
}

void BlockQueue::Consume(size_t n) {
  n = std::min(n, length_);
  length_ -= n;
  while (n > 0) {
    Block* first = head_;
    size_t available = first->end - first->begin;
    if (n < available) {
      first->begin += static_cast<uint32_t>(n);
      return;
    }
    n -= available;
    head_ = first->next;
    if (head_ == nullptr) tail_ = nullptr;
    --block_count_;
    GiveBackBlock(reinterpret_cast<char*>(first));
  }
}

void BlockQueue::Clear() {
  while (head_ != nullptr) {
    Block* next = head_->next;
    GiveBackBlock(reinterpret_cast<char*>(head_));
    head_ = next;
  }
  tail_ = nullptr;
  length_ = 0;
  block_count_ = 0;
}

}  // namespace gev

#include "ringbuffer/block_queue.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace gev {
namespace {

// Drained blocks kept by this thread for the next Append, unmapped when the thread exits.
// `closed` after that: a queue destroyed later in the thread's exit unmaps its blocks.
struct BlockCache {
  char* blocks[BlockQueue::kCachedBlocksPerThread];
  size_t count = 0;
  bool closed = false;
  ~BlockCache() {
    for (size_t i = 0; i < count; ++i) ::munmap(blocks[i], BlockQueue::kBlockSize);
    count = 0;
    closed = true;
  }
};

thread_local BlockCache block_cache;

char* TakeBlock() {
  if (!block_cache.closed && block_cache.count > 0) return block_cache.blocks[--block_cache.count];
  void* block = ::mmap(nullptr, BlockQueue::kBlockSize, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return block == MAP_FAILED ? nullptr : static_cast<char*>(block);
}

void GiveBackBlock(char* block) {
  if (!block_cache.closed && block_cache.count < BlockQueue::kCachedBlocksPerThread) {
    block_cache.blocks[block_cache.count++] = block;
    return;
  }
  ::munmap(block, BlockQueue::kBlockSize);
}

}  // namespace

bool BlockQueue::Append(std::string_view bytes) {
  if (bytes.empty()) return true;
  size_t room = blocks_.empty() ? 0 : kBlockSize - blocks_.back().end;
  // Every block the bytes need is taken before any byte is copied: all or nothing.
  std::vector<char*> fresh;
  if (bytes.size() > room) {
    size_t needed = (bytes.size() - room + kBlockSize - 1) / kBlockSize;
    fresh.reserve(needed);
    for (size_t i = 0; i < needed; ++i) {
      char* block = TakeBlock();
      if (block == nullptr) {
        for (char* taken : fresh) GiveBackBlock(taken);
        return false;
      }
      fresh.push_back(block);
    }
  }
  length_ += bytes.size();
  if (room > 0) {
    Block& last = blocks_.back();
    size_t n = std::min(room, bytes.size());
    std::memcpy(last.data + last.end, bytes.data(), n);
    last.end += n;
    bytes.remove_prefix(n);
  }
  for (char* block : fresh) {
    size_t n = std::min(kBlockSize, bytes.size());
    std::memcpy(block, bytes.data(), n);
    blocks_.push_back(Block{block, 0, n});
    bytes.remove_prefix(n);
  }
  return true;
}

size_t BlockQueue::Front(iovec* views, size_t max) const {
  size_t count = 0;
  for (auto it = blocks_.begin(); it != blocks_.end() && count < max; ++it, ++count) {
    views[count].iov_base = it->data + it->begin;
    views[count].iov_len = it->end - it->begin;
  }
  return count;
}

void BlockQueue::Consume(size_t n) {
  n = std::min(n, length_);
  length_ -= n;
  while (n > 0) {
    Block& first = blocks_.front();
    size_t available = first.end - first.begin;
    if (n < available) {
      first.begin += n;
      return;
    }
    n -= available;
    GiveBackBlock(first.data);
    blocks_.pop_front();
  }
}

void BlockQueue::Clear() {
  for (const Block& block : blocks_) GiveBackBlock(block.data);
  blocks_.clear();
  length_ = 0;
}

}  // namespace gev

#include "ringbuffer/block_queue.h"

#include <sys/uio.h>

#include <algorithm>
#include <random>
#include <string>
#include <thread>

#include "gtest/gtest.h"

namespace gev {
namespace {

std::string Pattern(size_t n, unsigned seed) {
  std::mt19937 random(seed);
  std::string bytes(n, '\0');
  for (char& c : bytes) c = static_cast<char>('a' + random() % 26);
  return bytes;
}

// Everything at the front, as Front() shows it, consumed in steps of `step`.
std::string Drain(BlockQueue& queue, size_t step) {
  std::string out;
  while (!queue.IsEmpty()) {
    iovec views[4];
    size_t count = queue.Front(views, 4);
    EXPECT_GT(count, 0u);
    std::string front;
    for (size_t i = 0; i < count; ++i) {
      front.append(static_cast<const char*>(views[i].iov_base), views[i].iov_len);
    }
    size_t n = std::min(step, front.size());
    out += front.substr(0, n);
    queue.Consume(n);
  }
  return out;
}

TEST(BlockQueueTest, KeepsOrderAcrossBlocksAndPartialConsumes) {
  BlockQueue queue;
  std::string expected;
  for (size_t size : {size_t{1}, size_t{100}, BlockQueue::kBytesPerBlock - 101,
                      BlockQueue::kBytesPerBlock * 2 + 7, size_t{5000}}) {
    std::string bytes = Pattern(size, static_cast<unsigned>(size));
    ASSERT_TRUE(queue.Append(bytes));
    expected += bytes;
  }
  EXPECT_EQ(queue.Length(), expected.size());
  EXPECT_EQ(queue.block_count(), 4u);  // Filled in order: no block is left part-empty behind.
  EXPECT_EQ(Drain(queue, 70001), expected);
  EXPECT_EQ(queue.block_count(), 0u);
}

TEST(BlockQueueTest, AppendsAndConsumesInterleavedLikeASlowSocket) {
  BlockQueue queue;
  std::string expected;
  std::string received;
  std::mt19937 random(3);
  for (int round = 0; round < 200; ++round) {
    std::string bytes = Pattern(random() % 40000, static_cast<unsigned>(round));
    ASSERT_TRUE(queue.Append(bytes));
    expected += bytes;
    iovec views[3];
    size_t count = queue.Front(views, 3);
    size_t take = random() % 30000;
    for (size_t i = 0; i < count && take > 0; ++i) {
      size_t n = std::min(take, views[i].iov_len);
      received.append(static_cast<const char*>(views[i].iov_base), n);
      queue.Consume(n);
      take -= n;
    }
    EXPECT_EQ(queue.Length(), expected.size() - received.size());
    // Memory follows the length: at most one block of slack at each end.
    EXPECT_LE(queue.block_count(), queue.Length() / BlockQueue::kBytesPerBlock + 2);
  }
  received += Drain(queue, 1 << 20);
  EXPECT_TRUE(received == expected);
}

TEST(BlockQueueTest, FrontFillsAtMostTheViewsItIsGiven) {
  BlockQueue queue;
  ASSERT_TRUE(queue.Append(std::string(BlockQueue::kBytesPerBlock * 3, 'x')));
  iovec views[2];
  EXPECT_EQ(queue.Front(views, 2), 2u);
  EXPECT_EQ(views[0].iov_len, BlockQueue::kBytesPerBlock);
  queue.Consume(BlockQueue::kBytesPerBlock + 1);
  EXPECT_EQ(queue.Front(views, 2), 2u);
  EXPECT_EQ(views[0].iov_len, BlockQueue::kBytesPerBlock - 1);
  queue.Clear();
  EXPECT_EQ(queue.Front(views, 2), 0u);
  EXPECT_TRUE(queue.Append(""));
  EXPECT_TRUE(queue.IsEmpty());
}

// Blocks outlive the thread that filled them (a queue drained and destroyed on another thread,
// whose cache then exits with it): every block mapped is unmapped in the end.
TEST(BlockQueueTest, QueuesMayMoveBetweenThreadsAndEveryBlockIsUnmapped) {
  size_t before = BlockQueue::MappedBlocks();
  auto queue = std::make_unique<BlockQueue>();
  std::thread filler([&] {
    ASSERT_TRUE(queue->Append(std::string(12 * BlockQueue::kBytesPerBlock, 'y')));
  });
  filler.join();
  EXPECT_EQ(BlockQueue::MappedBlocks(), before + 12);
  std::thread drainer([&] {
    queue->Consume(BlockQueue::kBytesPerBlock * 2);
    queue.reset();
    // Cached by this thread now (up to its cache's size), the rest unmapped already.
    EXPECT_EQ(BlockQueue::MappedBlocks(),
              before + std::min<size_t>(12, BlockQueue::kCachedBlocksPerThread));
  });
  drainer.join();
  EXPECT_EQ(BlockQueue::MappedBlocks(), before);
}

TEST(BlockQueueTest, AnEmptyQueueOwnsNothing) {
  size_t before = BlockQueue::MappedBlocks();
  BlockQueue queue;
  EXPECT_EQ(queue.block_count(), 0u);
  EXPECT_LE(sizeof(BlockQueue), 32u);
  ASSERT_TRUE(queue.Append("x"));
  queue.Consume(1);
  EXPECT_EQ(queue.block_count(), 0u);
  EXPECT_LE(BlockQueue::MappedBlocks(), before + BlockQueue::kCachedBlocksPerThread);
}

}  // namespace
}  // namespace gev

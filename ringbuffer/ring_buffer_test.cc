#include "ringbuffer/ring_buffer.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <iterator>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace gev {
namespace {

std::string Pattern(size_t n, int seed = 0) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i + seed) % 26);
  return s;
}

// Leaves `buffer` holding `tail` with its bytes wrapped around the end of the storage.
void FillWrapped(RingBuffer& buffer, const std::string& tail) {
  buffer.WriteString(Pattern(RingBuffer::kMinCapacity - 8));
  buffer.WriteString("x");  // Keeps the buffer non-empty, so storage stays put.
  buffer.Retrieve(RingBuffer::kMinCapacity - 8);
  ASSERT_EQ(buffer.Capacity(), RingBuffer::kMinCapacity);
  buffer.WriteString(tail);
  buffer.Retrieve(1);
}

TEST(RingBufferTest, EmptyBufferOwnsNoStorage) {
  RingBuffer buffer;
  EXPECT_TRUE(buffer.IsEmpty());
  EXPECT_FALSE(buffer.IsFull());
  EXPECT_EQ(buffer.Length(), 0u);
  EXPECT_EQ(buffer.Capacity(), 0u);
  EXPECT_TRUE(buffer.PeekAll().empty());
  EXPECT_EQ(buffer.PeekUint8(), std::nullopt);
}

// Every connection has two buffers: their size is part of an idle connection's cost.
TEST(RingBufferTest, IsTwentyFourBytesAndCapacityRidesWithTheBlock) {
  EXPECT_EQ(sizeof(RingBuffer), 24u);
  // Each capacity from the smallest to a few MiB round-trips through the block's low bits.
  for (size_t capacity = RingBuffer::kMinCapacity; capacity <= (size_t{8} << 20); capacity *= 2) {
    RingBuffer buffer;
    std::string bytes(capacity, 'x');
    ASSERT_TRUE(buffer.WriteString(bytes));
    EXPECT_EQ(buffer.Capacity(), capacity);
    EXPECT_TRUE(buffer.IsFull());
    RingBuffer::Slices all = buffer.PeekAll();
    EXPECT_EQ(all.size(), capacity);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(all.first.data()) %
                  ringbuffer_internal::kBlockAlignment, 0u);
    buffer.Retrieve(capacity);
    EXPECT_EQ(buffer.Capacity(), 0u);
  }
}

TEST(RingBufferTest, WriteThenPeekAndRetrieve) {
  RingBuffer buffer;
  ASSERT_TRUE(buffer.WriteString("hello, "));
  ASSERT_TRUE(buffer.WriteString("world"));
  ASSERT_TRUE(buffer.WriteByte('!'));
  EXPECT_EQ(buffer.Length(), 13u);
  EXPECT_EQ(buffer.Capacity(), RingBuffer::kMinCapacity);
  EXPECT_EQ(buffer.Peek(5).ToString(), "hello");
  EXPECT_EQ(buffer.Peek(100).ToString(), "hello, world!");
  EXPECT_TRUE(buffer.PeekAll().second.empty());
  buffer.Retrieve(7);
  EXPECT_EQ(buffer.Bytes(), "world!");
  EXPECT_EQ(buffer.Length(), 6u);
}

TEST(RingBufferTest, StorageIsReleasedWhenEmptied) {
  RingBuffer buffer;
  buffer.WriteString("abc");
  EXPECT_NE(buffer.Capacity(), 0u);
  buffer.RetrieveAll();
  EXPECT_EQ(buffer.Capacity(), 0u);
  buffer.WriteString("abc");
  char out[3];
  EXPECT_EQ(buffer.Read(out, sizeof(out)), 3u);
  EXPECT_EQ(buffer.Capacity(), 0u);
  buffer.WriteString("abc");
  buffer.Reset();
  EXPECT_EQ(buffer.Capacity(), 0u);
  EXPECT_TRUE(buffer.IsEmpty());
}

TEST(RingBufferTest, ReleasedBlocksAreRecycledByThisThread) {
  RingBuffer buffer;
  buffer.WriteString("abc");
  const char* block = buffer.PeekAll().first.data();
  size_t pooled = ringbuffer_internal::PooledBlockCount();
  buffer.RetrieveAll();
  EXPECT_EQ(ringbuffer_internal::PooledBlockCount(), pooled + 1);
  buffer.WriteString("def");  // Takes the same block back from the pool.
  EXPECT_EQ(ringbuffer_internal::PooledBlockCount(), pooled);
  EXPECT_EQ(buffer.PeekAll().first.data(), block);
}

TEST(RingBufferTest, BlocksBeyondTheSpareGoToThePoolAndComeBackInOrder) {
  // Three buffers empty at once: the first block becomes the thread's spare, the others go
  // to the pool behind it; all three come back before anything new is allocated.
  RingBuffer a, b, c;
  a.WriteString("a");
  b.WriteString("b");
  c.WriteString("c");
  const char* blocks[] = {a.PeekAll().first.data(), b.PeekAll().first.data(),
                          c.PeekAll().first.data()};
  size_t pooled = ringbuffer_internal::PooledBlockCount();
  a.RetrieveAll();
  b.RetrieveAll();
  c.RetrieveAll();
  EXPECT_EQ(ringbuffer_internal::PooledBlockCount(), pooled + 3);
  RingBuffer x, y, z;
  x.WriteString("x");  // The spare.
  y.WriteString("y");
  z.WriteString("z");
  EXPECT_EQ(ringbuffer_internal::PooledBlockCount(), pooled);
  std::set<const char*> taken = {x.PeekAll().first.data(), y.PeekAll().first.data(),
                                 z.PeekAll().first.data()};
  EXPECT_EQ(taken, std::set<const char*>(std::begin(blocks), std::end(blocks)));
  EXPECT_EQ(x.Bytes() + y.Bytes() + z.Bytes(), "xyz");
}

TEST(RingBufferTest, EverySizeClassKeepsItsLastBlockAsASpare) {
  // A buffer that empties hands its block to its class's spare slot, and the next empty buffer
  // writing a message of that class takes it straight back (a 64 KiB stream, say). On a fresh
  // thread, so every slot starts empty whatever other tests left behind.
  std::thread worker([] {
    for (size_t n : {size_t{100}, size_t{5000}, ringbuffer_internal::kLargestPooledBlock}) {
      int size_class = ringbuffer_internal::SizeClassFor(n);
      RingBuffer first;
      first.WriteString(Pattern(n));
      ASSERT_EQ(ringbuffer_internal::SizeClass(first.Capacity()), size_class) << n;
      const char* block = first.PeekAll().first.data();
      first.RetrieveAll();
      EXPECT_EQ(ringbuffer_internal::spare_blocks[size_class],
                reinterpret_cast<uintptr_t>(block))
          << n;
      RingBuffer second;
      second.WriteString(Pattern(n, 7));
      EXPECT_EQ(second.PeekAll().first.data(), block) << n;
      EXPECT_EQ(ringbuffer_internal::spare_blocks[size_class],
                ringbuffer_internal::kSpareSlotEmpty)
          << n;
      EXPECT_EQ(second.Bytes(), Pattern(n, 7));
    }
  });
  worker.join();
}

TEST(RingBufferTest, ThePoolKeepsABoundedNumberOfBlocksPerClass) {
  // 256 KiB per class, its spare included: 256 blocks of 1 KiB, 4 of 64 KiB.
  std::thread worker([] {
    std::vector<RingBuffer> small(300), large(10);
    for (RingBuffer& buffer : small) buffer.WriteString("x");
    for (RingBuffer& buffer : large) buffer.WriteString(Pattern(40000));
    for (RingBuffer& buffer : small) buffer.RetrieveAll();
    EXPECT_EQ(ringbuffer_internal::PooledBlockCount(), 256u);
    for (RingBuffer& buffer : large) buffer.RetrieveAll();
    EXPECT_EQ(ringbuffer_internal::PooledBlockCount(), 260u);
  });
  worker.join();
}

// A thread's pooled blocks, the spare included, are freed when it exits (LeakSanitizer, in the
// asan configuration, fails the test otherwise), and a buffer destroyed after that, during
// the same exit, frees its block instead of pooling it.
TEST(RingBufferTest, AnExitingThreadFreesItsPooledBlocks) {
  struct LateBuffer {
    RingBuffer buffer;
  };
  std::thread worker([] {
    // Constructed before the thread pools anything, so destroyed after its pool is freed.
    static thread_local LateBuffer late;
    late.buffer.WriteString(Pattern(3 * RingBuffer::kMinCapacity));  // A larger class.
    RingBuffer spare_owner;
    spare_owner.WriteString("spare");
    spare_owner.RetrieveAll();
    RingBuffer pooled;
    pooled.WriteString(Pattern(5000));
    pooled.RetrieveAll();
    EXPECT_EQ(ringbuffer_internal::PooledBlockCount(), 2u);
  });
  worker.join();
}

TEST(RingBufferTest, ShortWritesAreCopiedWholeAtEveryOffset) {
  // Writes of 0 to 40 bytes land at every position of a block's last 48 bytes, so the copy
  // is checked at each size class of the inline copy, and across the wrap.
  for (size_t n = 0; n <= 40; ++n) {
    for (size_t offset = RingBuffer::kMinCapacity - 48; offset < RingBuffer::kMinCapacity;
         ++offset) {
      RingBuffer buffer;
      buffer.WriteString(Pattern(offset));
      buffer.WriteByte('#');
      buffer.Retrieve(offset);
      std::string message = Pattern(n, static_cast<int>(offset + n));
      ASSERT_TRUE(buffer.WriteString(message));
      ASSERT_EQ(buffer.Bytes(), "#" + message) << "n=" << n << " offset=" << offset;
    }
  }
}

TEST(RingBufferTest, BlocksStartOnACacheLineAndCapacitiesArePowersOfTwo) {
  for (size_t n : {size_t{1}, RingBuffer::kMinCapacity, RingBuffer::kMinCapacity + 1,
                   size_t{4096}, size_t{4097}, size_t{100000}}) {
    for (int round = 0; round < 2; ++round) {  // A new block, then one back from the pool.
      RingBuffer buffer;
      buffer.WriteString(Pattern(n));
      size_t expected = RingBuffer::kMinCapacity;
      while (expected < n) expected *= 2;
      EXPECT_EQ(buffer.Capacity(), expected) << n;
      EXPECT_EQ(reinterpret_cast<uintptr_t>(buffer.PeekAll().first.data()) % 64, 0u) << n;
    }
  }
}

TEST(RingBufferTest, PeekReturnsTwoSlicesWhenDataWraps) {
  RingBuffer buffer;
  FillWrapped(buffer, Pattern(20, 3));
  RingBuffer::Slices slices = buffer.PeekAll();
  EXPECT_EQ(slices.first.size(), 7u);  // 8 bytes before the end, one was the 'x'.
  EXPECT_EQ(slices.second.size(), 13u);
  EXPECT_EQ(slices.ToString(), Pattern(20, 3));
  EXPECT_EQ(buffer.Peek(9).ToString(), Pattern(9, 3));
  EXPECT_EQ(buffer.Peek(5).second.size(), 0u);
}

TEST(RingBufferTest, FullBufferReportsFullAndGrowsOnNextWrite) {
  RingBuffer buffer;
  buffer.WriteString(Pattern(RingBuffer::kMinCapacity));
  EXPECT_TRUE(buffer.IsFull());
  buffer.WriteByte('!');
  EXPECT_FALSE(buffer.IsFull());
  EXPECT_EQ(buffer.Capacity(), 2 * RingBuffer::kMinCapacity);
  EXPECT_EQ(buffer.Bytes(), Pattern(RingBuffer::kMinCapacity) + "!");
}

TEST(RingBufferTest, GrowthAcrossTheWrapKeepsOrder) {
  RingBuffer buffer;
  FillWrapped(buffer, Pattern(100, 1));
  std::string more = Pattern(5000, 2);
  buffer.WriteString(more);
  EXPECT_EQ(buffer.Capacity(), 8192u);  // Doubles to the next power of two that fits.
  EXPECT_EQ(buffer.Bytes(), Pattern(100, 1) + more);
  EXPECT_TRUE(buffer.PeekAll().second.empty());  // Growth linearizes.
}

TEST(RingBufferTest, LimitRefusesWritesBeyondIt) {
  RingBuffer buffer;
  buffer.set_limit(10);
  EXPECT_TRUE(buffer.WriteString("0123456789"));
  EXPECT_FALSE(buffer.WriteByte('x'));
  EXPECT_FALSE(buffer.WriteString("abc"));
  EXPECT_EQ(buffer.Bytes(), "0123456789");
  buffer.Retrieve(3);
  EXPECT_TRUE(buffer.WriteString("abc"));
  EXPECT_EQ(buffer.Bytes(), "3456789abc");
}

TEST(RingBufferTest, ReadCopiesAndConsumes) {
  RingBuffer buffer;
  FillWrapped(buffer, "wrapped-bytes-here");
  char out[8];
  EXPECT_EQ(buffer.Read(out, sizeof(out)), 8u);
  EXPECT_EQ(std::string(out, 8), "wrapped-");
  EXPECT_EQ(buffer.Bytes(), "bytes-here");
  EXPECT_EQ(buffer.ReadByte(), 'b');
  char rest[100];
  EXPECT_EQ(buffer.Read(rest, sizeof(rest)), 9u);
  EXPECT_EQ(buffer.ReadByte(), std::nullopt);
}

TEST(RingBufferTest, BigEndianPeeksAcrossTheWrap) {
  RingBuffer buffer;
  std::string bytes = {'\x01', '\x02', '\x03', '\x04', '\x05', '\x06', '\x07', '\x08', '\xff'};
  FillWrapped(buffer, bytes);  // The first 7 bytes sit before the end, the rest after.
  EXPECT_EQ(buffer.PeekUint8(), 0x01u);
  EXPECT_EQ(buffer.PeekUint16(), 0x0102u);
  EXPECT_EQ(buffer.PeekUint32(), 0x01020304u);
  EXPECT_EQ(buffer.PeekUint64(), 0x0102030405060708ull);
  EXPECT_EQ(buffer.Length(), 9u);  // Peeks consume nothing.
  buffer.Retrieve(5);
  EXPECT_EQ(buffer.PeekUint32(), 0x060708ffu);
  EXPECT_EQ(buffer.PeekUint64(), std::nullopt);
}

TEST(RingBufferTest, VirtualReadRevertLeavesDataInPlace) {
  RingBuffer buffer;
  buffer.WriteString("headerbody");
  EXPECT_EQ(buffer.VirtualRead(6).ToString(), "header");
  EXPECT_EQ(buffer.VirtualLength(), 4u);
  EXPECT_EQ(buffer.Length(), 10u);
  EXPECT_EQ(buffer.VirtualRead(100).ToString(), "body");
  EXPECT_EQ(buffer.VirtualLength(), 0u);
  buffer.VirtualRevert();
  EXPECT_EQ(buffer.VirtualLength(), 10u);
  EXPECT_EQ(buffer.Bytes(), "headerbody");
}

TEST(RingBufferTest, VirtualFlushCommitsTheVirtualReads) {
  RingBuffer buffer;
  FillWrapped(buffer, "header|body");
  EXPECT_EQ(buffer.VirtualRead(7).ToString(), "header|");
  buffer.VirtualFlush();
  EXPECT_EQ(buffer.Bytes(), "body");
  EXPECT_EQ(buffer.VirtualLength(), 4u);
}

TEST(RingBufferTest, ConsumingResetsTheVirtualPosition) {
  RingBuffer buffer;
  buffer.WriteString("abcdef");
  buffer.VirtualRead(4);
  buffer.Retrieve(1);
  EXPECT_EQ(buffer.VirtualLength(), 5u);
  EXPECT_EQ(buffer.VirtualRead(2).ToString(), "bc");
}

TEST(RingBufferTest, MoveTransfersContents) {
  RingBuffer a;
  a.WriteString("moved");
  RingBuffer b(std::move(a));
  EXPECT_EQ(b.Bytes(), "moved");
  EXPECT_EQ(a.Capacity(), 0u);  // NOLINT(bugprone-use-after-move): moved-from is empty.
  RingBuffer c;
  c.WriteString("old");
  c = std::move(b);
  EXPECT_EQ(c.Bytes(), "moved");
}

class SocketPairTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds_), 0);
  }
  void TearDown() override {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  std::string Drain(int fd) {
    std::string out;
    char chunk[65536];
    ssize_t n;
    while ((n = ::read(fd, chunk, sizeof(chunk))) > 0) out.append(chunk, static_cast<size_t>(n));
    return out;
  }
  int fds_[2];
};

// With kDirectReadBytes of room a read goes to the storage alone (a burst lands in a pooled
// block, no copy out of scratch), and says what it asked for; with less, the scratch buffer
// joins in so that the read is not kept small.
TEST_F(SocketPairTest, ABufferWithRoomReadsIntoItsStorageAloneAndSaysWhatItAskedFor) {
  const std::string data = Pattern(150000, 6);
  ASSERT_EQ(::write(fds_[1], data.data(), data.size()), static_cast<ssize_t>(data.size()));
  RingBuffer buffer;
  std::vector<char> scratch(RingBuffer::kReadScratchSize);
  size_t offered = 0;
  const size_t block = ringbuffer_internal::kLargestPooledBlock;
  ASSERT_EQ(buffer.ReadFromFd(fds_[0], scratch.data(), scratch.size(), &offered),
            static_cast<ssize_t>(block));
  EXPECT_EQ(offered, block);
  EXPECT_EQ(buffer.Capacity(), block);
  std::string got = buffer.Bytes();
  buffer.Retrieve(10000);  // 10,000 bytes of room: under kDirectReadBytes.
  ASSERT_LT(size_t{10000}, RingBuffer::kDirectReadBytes);
  ssize_t n = buffer.ReadFromFd(fds_[0], scratch.data(), scratch.size(), &offered);
  EXPECT_EQ(offered, 10000 + scratch.size());
  EXPECT_EQ(n, static_cast<ssize_t>(offered));
  got += buffer.Bytes().substr(block - 10000);
  got += Drain(fds_[0]);
  EXPECT_TRUE(got == data);
}

TEST_F(SocketPairTest, ReadFromFdTakesABurstLargerThanTheFreeSpace) {
  std::string burst = Pattern(40000, 5);
  ASSERT_EQ(::write(fds_[1], burst.data(), burst.size()), static_cast<ssize_t>(burst.size()));
  RingBuffer buffer;
  buffer.WriteString("prefix");  // Storage exists, with far less room than the burst.
  EXPECT_EQ(buffer.ReadFromFd(fds_[0]), static_cast<ssize_t>(burst.size()));
  EXPECT_EQ(buffer.Bytes(), "prefix" + burst);
  EXPECT_EQ(buffer.ReadFromFd(fds_[0]), -1);
  EXPECT_EQ(errno, EAGAIN);
}

TEST_F(SocketPairTest, ReadFromFdFillsBothFreeSegmentsOfAWrappedBuffer) {
  RingBuffer buffer;
  buffer.WriteString(Pattern(600));
  buffer.Retrieve(500);  // Read position mid-storage, so free space spans the end.
  std::string data = Pattern(900, 9);
  ASSERT_EQ(::write(fds_[1], data.data(), data.size()), 900);
  char scratch[16];
  EXPECT_EQ(buffer.ReadFromFd(fds_[0], scratch, sizeof(scratch)), 900);
  EXPECT_EQ(buffer.Capacity(), RingBuffer::kMinCapacity);  // Fitted without growth.
  EXPECT_EQ(buffer.Bytes(), Pattern(600).substr(500) + data);
}

TEST_F(SocketPairTest, ReadFromFdHonoursTheLimit) {
  std::string data = Pattern(5000);
  ASSERT_EQ(::write(fds_[1], data.data(), data.size()), 5000);
  RingBuffer buffer;
  buffer.set_limit(3000);
  EXPECT_EQ(buffer.ReadFromFd(fds_[0]), 3000);
  EXPECT_EQ(buffer.ReadFromFd(fds_[0]), -1);
  EXPECT_EQ(errno, ENOBUFS);
  buffer.Retrieve(3000);
  EXPECT_EQ(buffer.ReadFromFd(fds_[0]), 2000);
  EXPECT_EQ(buffer.Bytes(), data.substr(3000));
}

TEST_F(SocketPairTest, ReadFromFdReportsEndOfFile) {
  ::shutdown(fds_[1], SHUT_WR);
  RingBuffer buffer;
  EXPECT_EQ(buffer.ReadFromFd(fds_[0]), 0);
  EXPECT_EQ(buffer.Capacity(), 0u);
}

TEST_F(SocketPairTest, WriteToFdSendsBothSegments) {
  RingBuffer buffer;
  FillWrapped(buffer, Pattern(50, 4));
  ASSERT_FALSE(buffer.PeekAll().second.empty());
  EXPECT_EQ(buffer.WriteToFd(fds_[0]), 50);
  EXPECT_TRUE(buffer.IsEmpty());
  EXPECT_EQ(Drain(fds_[1]), Pattern(50, 4));
}

TEST_F(SocketPairTest, ShortWriteKeepsTheUnsentTail) {
  int size = 4096;
  ASSERT_EQ(::setsockopt(fds_[0], SOL_SOCKET, SO_SNDBUF, &size, sizeof(size)), 0);
  std::string data = Pattern(1 << 20, 6);
  RingBuffer buffer;
  buffer.WriteString(data);
  std::string received;
  int rounds = 0;
  while (!buffer.IsEmpty() && rounds++ < 100000) {
    ssize_t n = buffer.WriteToFd(fds_[0]);
    if (n < 0) {
      ASSERT_EQ(errno, EAGAIN);
    }
    received += Drain(fds_[1]);
  }
  received += Drain(fds_[1]);
  EXPECT_GT(rounds, 1);  // The socket really did take it in pieces.
  EXPECT_EQ(received, data);
}

TEST_F(SocketPairTest, WriteToFdOnEmptyBufferWritesNothing) {
  RingBuffer buffer;
  EXPECT_EQ(buffer.WriteToFd(fds_[0]), 0);
  EXPECT_EQ(Drain(fds_[1]), "");
}

TEST_F(SocketPairTest, AnEmptyBufferReadsStraightIntoAPooledBlock) {
  std::string data = Pattern(3000, 4);
  ASSERT_EQ(::write(fds_[1], data.data(), data.size()), 3000);
  RingBuffer buffer;
  char scratch[16];  // Too small to have taken the bytes: they went to storage directly.
  EXPECT_EQ(buffer.ReadFromFd(fds_[0], scratch, sizeof(scratch)), 3000);
  EXPECT_EQ(buffer.Capacity(), ringbuffer_internal::kLargestPooledBlock);
  EXPECT_EQ(buffer.Bytes(), data);
  EXPECT_EQ(buffer.ReadFromFd(fds_[0]), -1);  // EAGAIN on an empty buffer owns nothing.
  buffer.RetrieveAll();
  EXPECT_EQ(buffer.ReadFromFd(fds_[0]), -1);
  EXPECT_EQ(errno, EAGAIN);
  EXPECT_EQ(buffer.Capacity(), 0u);
}

TEST(RingBufferTest, ShrinkToFitMovesFewBytesToASmallBlock) {
  RingBuffer buffer;
  buffer.WriteString(Pattern(40000));
  buffer.Retrieve(39900);  // 100 bytes left in 64 KiB.
  buffer.VirtualRead(10);
  buffer.ShrinkToFit();
  EXPECT_EQ(buffer.Capacity(), RingBuffer::kMinCapacity);
  EXPECT_EQ(buffer.Bytes(), Pattern(40000).substr(39900));
  EXPECT_EQ(buffer.VirtualLength(), 90u);  // The virtual position survives the move.
  buffer.WriteString(Pattern(2000));
  buffer.ShrinkToFit();  // More than a quarter full: stays.
  EXPECT_EQ(buffer.Capacity(), 4096u);
}

TEST(RingBufferTest, TakeFromMovesStorageWithoutCopying) {
  RingBuffer source;
  source.WriteString("abcdef");
  source.Retrieve(2);
  const char* bytes = source.PeekAll().first.data();
  RingBuffer target;
  target.set_limit(100);
  target.TakeFrom(source);
  EXPECT_EQ(target.Bytes(), "cdef");
  EXPECT_EQ(target.PeekAll().first.data(), bytes);  // Same storage.
  EXPECT_EQ(target.limit(), 100u);
  EXPECT_TRUE(source.IsEmpty());
  EXPECT_EQ(source.Capacity(), 0u);
}

TEST(RingBufferTest, LimitIsClampedToTheLargestPositionKept) {
  RingBuffer buffer;
  EXPECT_EQ(buffer.limit(), RingBuffer::kMaxLimit);
  buffer.set_limit(SIZE_MAX);
  EXPECT_EQ(buffer.limit(), RingBuffer::kMaxLimit);
  buffer.set_limit(100);
  EXPECT_EQ(buffer.limit(), 100u);
}

// A 1 KiB buffer whose readable bytes are `text`, starting `offset_from_end` bytes before the
// end of its storage (so they wrap when longer than that).
void FillWrapped(RingBuffer& buffer, std::string_view text, size_t offset_from_end) {
  ASSERT_LE(text.size(), RingBuffer::kMinCapacity);
  const size_t start = RingBuffer::kMinCapacity - offset_from_end;
  ASSERT_TRUE(buffer.WriteString(std::string(start, '-')));
  buffer.Retrieve(start - 1);  // Not emptied: emptying would release the storage.
  ASSERT_TRUE(buffer.WriteString(text));
  buffer.Retrieve(1);
  ASSERT_EQ(buffer.Capacity(), RingBuffer::kMinCapacity);
  ASSERT_EQ(buffer.Bytes(), text);
}

TEST(RingBufferTest, FindSeesBytesAndStringsAcrossTheWrap) {
  RingBuffer buffer;
  FillWrapped(buffer, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 15);  // The CRLF straddles the end.
  ASSERT_FALSE(buffer.Peek(buffer.Length()).second.empty());
  EXPECT_EQ(buffer.Find('\r'), 14u);
  EXPECT_EQ(buffer.Find("\r\n"), 14u);
  EXPECT_EQ(buffer.Find("\r\n", 15), 23u);
  EXPECT_EQ(buffer.Find("\r\n\r\n"), 23u);
  EXPECT_EQ(buffer.Find("Host"), 16u);
  EXPECT_EQ(buffer.Find('z'), RingBuffer::npos);
  EXPECT_EQ(buffer.Find("\r\n\r\n\r"), RingBuffer::npos);
  EXPECT_EQ(buffer.Find('G', 1), RingBuffer::npos);
  EXPECT_EQ(buffer.Find("GET", buffer.Length()), RingBuffer::npos);
  EXPECT_EQ(buffer.Find(""), RingBuffer::npos);
  EXPECT_EQ(buffer.At(14), '\r');
  EXPECT_EQ(buffer.At(15), '\n');
}

TEST(RingBufferTest, FindMatchesAStringModelAtEveryWrapPoint) {
  const std::string text = "ab\r\nabc\r\n\r\naab$3\r\nfoo\r\nabcab";
  const std::vector<std::string> needles = {"\r\n", "ab", "abc", "\r\n\r\n", "aab", "$3\r\nfoo",
                                            "b", "cab", "x", "abcabc"};
  for (size_t offset = 1; offset <= text.size(); ++offset) {
    RingBuffer buffer;
    FillWrapped(buffer, text, offset);
    for (const std::string& needle : needles) {
      for (size_t from = 0; from <= text.size(); ++from) {
        size_t want = text.find(needle, from);
        EXPECT_EQ(buffer.Find(needle, from), want == std::string::npos ? RingBuffer::npos : want)
            << "offset " << offset << " needle " << needle << " from " << from;
      }
    }
    for (char c : std::string("a\r$fz")) {
      size_t want = text.find(c);
      EXPECT_EQ(buffer.Find(c), want == std::string::npos ? RingBuffer::npos : want);
    }
  }
}

TEST(RingBufferTest, ContiguousCopiesOnlyWhenTheBytesWrap) {
  RingBuffer buffer;
  FillWrapped(buffer, "0123456789", 4);
  char scratch[16];
  std::string_view whole = buffer.Contiguous(10, scratch, sizeof(scratch));
  EXPECT_EQ(whole, "0123456789");
  EXPECT_EQ(whole.data(), scratch);
  std::string_view head = buffer.Contiguous(3, scratch, sizeof(scratch));
  EXPECT_EQ(head, "012");
  EXPECT_NE(head.data(), scratch);  // In the storage: no copy.
  EXPECT_EQ(buffer.Contiguous(100, scratch, 6), "012345");  // Scratch-bounded.
  std::string owned;
  EXPECT_EQ(buffer.Contiguous(8, &owned), "01234567");
  EXPECT_EQ(owned, "01234567");
  EXPECT_EQ(buffer.Length(), 10u);  // Nothing consumed.
}

}  // namespace
}  // namespace gev

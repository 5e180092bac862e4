// OutputQueue without sockets: writes go to non-blocking pipes, read back in the test.

#include "net/output_queue.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "net/testing/loopback_client.h"

namespace gev {
namespace {

using ::gev::testing::Pattern;

// A non-blocking pipe; its capacity set to `capacity` bytes when positive (Linux rounds it up
// to a page).
struct Pipe {
  explicit Pipe(int capacity = 0) {
    EXPECT_EQ(::pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
#ifdef F_SETPIPE_SZ
    if (capacity > 0) {
      EXPECT_GT(::fcntl(fds[1], F_SETPIPE_SZ, capacity), 0);
    }
#endif
  }
  ~Pipe() {
    for (int fd : fds) {
      if (fd >= 0) ::close(fd);
    }
  }
  int read_end() const { return fds[0]; }
  int write_end() const { return fds[1]; }
  // Everything readable now.
  std::string Drain() {
    std::string out;
    char buffer[65536];
    ssize_t n;
    while ((n = ::read(fds[0], buffer, sizeof(buffer))) > 0) out.append(buffer, n);
    return out;
  }
  int fds[2] = {-1, -1};
};

// Writes `queue` (and `pieces` the first time they fit) into `pipe` until the queue is empty,
// reading the pipe between writes; returns what came out.
std::string WriteOut(OutputQueue& queue, Pipe& pipe, std::vector<std::string_view> pieces = {}) {
  std::string out;
  for (int round = 0; round < 100000 && (!queue.IsEmpty() || !pieces.empty()); ++round) {
    OutputQueue::Written written = queue.WriteTo(pipe.write_end(), pieces);
    EXPECT_TRUE(written.bytes >= 0 || errno == EAGAIN) << std::strerror(errno);
    size_t of_pieces = written.of_pieces;
    // Pieces written in part stay, less what was written, for the next call (as a caller
    // buffers them).
    std::vector<std::string_view> left;
    for (std::string_view piece : pieces) {
      size_t skip = std::min(of_pieces, piece.size());
      of_pieces -= skip;
      if (skip < piece.size()) left.push_back(piece.substr(skip));
    }
    pieces = left;
    out += pipe.Drain();
  }
  return out;
}

TEST(OutputQueueTest, KeepsOrderAcrossTheRingAndTheBlocks) {
  OutputQueue queue;
  std::string expected;
  size_t blocks_before = BlockQueue::MappedBlocks();
  // Past kRingBytes, so that the rest spills into blocks; sizes that straddle everything.
  for (int i = 0; expected.size() < 3 * OutputQueue::kRingBytes; ++i) {
    std::string piece = Pattern(1 + (i * 7919) % 70000, i);
    ASSERT_TRUE(queue.Append(piece));
    expected += piece;
    ASSERT_EQ(queue.Length(), expected.size());
  }
  EXPECT_LE(queue.RingLength(), OutputQueue::kRingBytes);
  EXPECT_GT(BlockQueue::MappedBlocks(), blocks_before) << "nothing spilled into blocks";
  Pipe pipe;
  std::string out = WriteOut(queue, pipe);
  EXPECT_EQ(out.size(), expected.size());
  EXPECT_TRUE(out == expected) << "bytes reordered or lost";
  EXPECT_EQ(queue.Length(), 0u);
}

TEST(OutputQueueTest, AppendsAfterASpillGoToTheBlocksUntilTheyDrain) {
  OutputQueue queue;
  std::string expected = Pattern(OutputQueue::kRingBytes + 10, 1);
  ASSERT_TRUE(queue.Append(expected));
  // The ring would have room for this after a partial write; it must wait behind the blocks.
  Pipe pipe(4096);
  OutputQueue::Written written = queue.WriteTo(pipe.write_end());
  ASSERT_GT(written.bytes, 0);
  std::string out = pipe.Drain();
  ASSERT_TRUE(queue.Append("tail"));
  expected += "tail";
  out += WriteOut(queue, pipe);
  EXPECT_TRUE(out == expected);
}

TEST(OutputQueueTest, PiecesFollowTheQueueInOneWriteWhenAllOfItFits) {
  OutputQueue queue;
  ASSERT_TRUE(queue.Append("gathered;"));
  Pipe pipe;
  std::string header = "header;", body = Pattern(30000, 2);
  OutputQueue::Written written = queue.WriteTo(pipe.write_end(), {header, "", body});
  ASSERT_EQ(written.bytes, static_cast<ssize_t>(9 + header.size() + body.size()));
  EXPECT_EQ(written.of_pieces, header.size() + body.size());
  EXPECT_EQ(queue.Length(), 0u);
  EXPECT_TRUE(pipe.Drain() == "gathered;" + header + body);
}

TEST(OutputQueueTest, PiecesNeverOvertakeAQueueLongerThanOneWrite) {
  OutputQueue queue;
  // More blocks than one write takes (kMaxQueuedViews): the queue goes first, the piece waits.
  std::string queued = Pattern(OutputQueue::kRingBytes + 20 * BlockQueue::kBytesPerBlock, 3);
  ASSERT_TRUE(queue.Append(queued));
  Pipe pipe(1 << 20);
  std::string out;
  size_t piece_written = 0;
  for (int round = 0; round < 10000 && piece_written == 0; ++round) {
    size_t before = queue.Length();
    OutputQueue::Written written = queue.WriteTo(pipe.write_end(), {"piece"});
    if (written.of_pieces > 0) {
      // Only in a write that took the whole queue before it.
      EXPECT_EQ(static_cast<size_t>(written.bytes), before + written.of_pieces);
      piece_written = written.of_pieces;
    }
    out += pipe.Drain();
  }
  ASSERT_GT(piece_written, 0u);
  EXPECT_TRUE(out == queued + std::string("piece").substr(0, piece_written));
}

// The slices form: a lone write of the slices when nothing is queued, the queue first otherwise.
TEST(OutputQueueTest, SlicesFollowTheQueueAndGoAloneWhenNothingIsQueued) {
  RingBuffer source;
  ASSERT_TRUE(source.WriteString("reply"));
  OutputQueue queue;
  Pipe pipe;
  OutputQueue::Written alone = queue.WriteSlicesAfter(pipe.write_end(), source.PeekAll());
  EXPECT_EQ(alone.bytes, 5);
  EXPECT_EQ(alone.of_pieces, 5u);
  EXPECT_EQ(pipe.Drain(), "reply");
  ASSERT_TRUE(queue.Append("gathered;"));
  OutputQueue::Written after = queue.WriteSlicesAfter(pipe.write_end(), source.PeekAll());
  EXPECT_EQ(after.bytes, 14);
  EXPECT_EQ(after.of_pieces, 5u);
  EXPECT_EQ(queue.Length(), 0u);
  EXPECT_EQ(pipe.Drain(), "gathered;reply");
}

TEST(OutputQueueTest, AShortWriteConsumesOnlyWhatWasWritten) {
  OutputQueue queue;
  std::string gathered = Pattern(3000, 4), piece = Pattern(20000, 5);
  ASSERT_TRUE(queue.Append(gathered));
  Pipe pipe(4096);
  OutputQueue::Written written = queue.WriteTo(pipe.write_end(), {piece});
  ASSERT_GT(written.bytes, 3000);
  ASSERT_LT(written.bytes, 23000);
  EXPECT_EQ(queue.Length(), 0u);
  EXPECT_EQ(written.of_pieces, static_cast<size_t>(written.bytes) - 3000);
  std::string out = pipe.Drain();
  // The caller queues the rest of the piece, as a connection does.
  ASSERT_TRUE(queue.Append(std::string_view(piece).substr(written.of_pieces)));
  out += WriteOut(queue, pipe);
  EXPECT_TRUE(out == gathered + piece);
}

TEST(OutputQueueTest, AFullDescriptorTakesNothingAndConsumesNothing) {
  OutputQueue queue;
  Pipe pipe(4096);
  std::string filler(1 << 20, 'f');
  while (::write(pipe.write_end(), filler.data(), filler.size()) > 0) {
  }
  ASSERT_TRUE(queue.Append("waiting"));
  OutputQueue::Written written = queue.WriteTo(pipe.write_end(), {"and this"});
  EXPECT_EQ(written.bytes, -1);
  EXPECT_EQ(errno, EAGAIN);
  EXPECT_EQ(written.of_pieces, 0u);
  EXPECT_EQ(queue.Length(), 7u);
}

TEST(OutputQueueTest, AWriteErrorIsReturnedWithItsErrno) {
  ::signal(SIGPIPE, SIG_IGN);
  OutputQueue queue;
  Pipe pipe;
  ::close(pipe.fds[0]);
  pipe.fds[0] = -1;
  ASSERT_TRUE(queue.Append("to nobody"));
  OutputQueue::Written written = queue.WriteTo(pipe.write_end());
  EXPECT_EQ(written.bytes, -1);
  EXPECT_EQ(errno, EPIPE);
  EXPECT_EQ(queue.Length(), 9u);
}

TEST(OutputQueueTest, TakesASourceBuffersBytesWithoutLeavingThemThere) {
  RingBuffer source;
  std::string bytes = Pattern(100000, 6);
  ASSERT_TRUE(source.WriteString(bytes));
  OutputQueue queue;
  queue.TakeFrom(source);
  EXPECT_TRUE(source.IsEmpty());
  EXPECT_EQ(queue.Length(), bytes.size());
  // A ring larger than kRingBytes after taking a large source still takes appends in place.
  ASSERT_TRUE(queue.Append("more"));
  Pipe pipe;
  OutputQueue::Written first = queue.WriteTo(pipe.write_end());
  ASSERT_GT(first.bytes, 0);
  std::string out = pipe.Drain();
  out += WriteOut(queue, pipe);
  EXPECT_TRUE(out == bytes + "more");
}

TEST(OutputQueueDeathTest, TakingASourceOverQueuedBytesIsAProgrammerError) {
  RingBuffer source;
  ASSERT_TRUE(source.WriteString("second"));
  OutputQueue queue;
  ASSERT_TRUE(queue.Append("first"));
  EXPECT_DEATH(queue.TakeFrom(source), "queue that holds bytes");
}

TEST(OutputQueueTest, ClearDropsEverythingAndGivesTheBlocksBack) {
  OutputQueue queue;
  ASSERT_TRUE(queue.Append(Pattern(OutputQueue::kRingBytes + 40 * BlockQueue::kBytesPerBlock, 7)));
  EXPECT_GE(BlockQueue::MappedBlocks(), 40u);
  queue.Clear();
  EXPECT_EQ(queue.Length(), 0u);
  EXPECT_TRUE(queue.IsEmpty());
  // Nothing else in this process holds blocks: each one still mapped is in this thread's small
  // cache of free blocks.
  EXPECT_LE(BlockQueue::MappedBlocks(), BlockQueue::kCachedBlocksPerThread);
  ASSERT_TRUE(queue.Append("again"));
  EXPECT_EQ(queue.Length(), 5u);
}

TEST(OutputQueueTest, NothingQueuedAndNoPiecesWritesNothing) {
  OutputQueue queue;
  Pipe pipe;
  OutputQueue::Written written = queue.WriteTo(pipe.write_end());
  EXPECT_EQ(written.bytes, 0);
  EXPECT_EQ(pipe.Drain(), "");
}

}  // namespace
}  // namespace gev

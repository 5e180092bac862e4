// Write + Peek + Retrieve cycles through gev::RingBuffer and two baselines:
//   - VectorBuffer: std::vector<char>, append at the back, erase from the front;
//   - LinearBuffer: muduo's Buffer shape, one vector with read and write indices that moves the
//     readable bytes to the front (or grows) when the tail runs out.
// "Drain" empties the buffer every cycle (an echo server's steady state); "Backlog" keeps about
// three messages queued so the buffers must wrap, compact or shift.
//
// A cycle costs a few nanoseconds, and three things that are not the buffer's own code moved the
// results by more than the differences being measured; each is held the same for all buffers:
//   - Where the message comes from. Each cycle copies from the next of 512 places spread over
//     4 KiB: with one fixed source, whether the copy ran into the CPU's false store-to-load
//     aliasing (addresses equal modulo 4 KiB) was an accident of heap layout (3.6 or 7.3 ns for
//     the same code at 512 B).
//   - Where the buffer object and the loop's locals sit. Loads of a buffer's fields right after
//     the copy's stores alias the same way, so the stack address decided it: one binary measured
//     3.5-4.8 ns (linear) and 4.0-6.2 ns (ring) at 512 B depending only on the size of the
//     environment. Cycles therefore run in batches, each in a stack frame moved 64 bytes further
//     along a 4 KiB cycle with a fresh buffer in it, so every buffer is measured over the same 64
//     placements.
//   - How the views leave Peek. Every buffer hands its reader a pointer and a size per view as
//     scalars; DoNotOptimize on a two-view struct would store it to memory while a baseline's
//     lone pointer stayed in a register.
//
//   tools/bazel run --config=opt //ringbuffer:ring_buffer_benchmark

#include <alloca.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "ringbuffer/ring_buffer.h"

namespace gev {
namespace {

// The reader's side of a Peek: one view's address and size, kept as scalars.
inline void Use(const char* data, size_t size) {
  benchmark::DoNotOptimize(data);
  benchmark::DoNotOptimize(size);
}

class VectorBuffer {
 public:
  void Write(const char* data, size_t n) { bytes_.insert(bytes_.end(), data, data + n); }
  void PeekAndUse() const { Use(bytes_.data(), bytes_.size()); }
  size_t Length() const { return bytes_.size(); }
  void Retrieve(size_t n) { bytes_.erase(bytes_.begin(), bytes_.begin() + n); }

 private:
  std::vector<char> bytes_;
};

class LinearBuffer {
 public:
  static constexpr size_t kCheapPrepend = 8;
  static constexpr size_t kInitialSize = 1024;

  LinearBuffer() : bytes_(kCheapPrepend + kInitialSize) {}

  void Write(const char* data, size_t n) {
    if (bytes_.size() - write_ < n) MakeSpace(n);
    std::memcpy(bytes_.data() + write_, data, n);
    write_ += n;
  }
  void PeekAndUse() const { Use(bytes_.data() + read_, Length()); }
  size_t Length() const { return write_ - read_; }
  void Retrieve(size_t n) {
    if (n < Length()) {
      read_ += n;
    } else {
      read_ = write_ = kCheapPrepend;
    }
  }

 private:
  void MakeSpace(size_t n) {
    if (bytes_.size() - write_ + read_ < n + kCheapPrepend) {
      bytes_.resize(write_ + n);
    } else {
      size_t readable = Length();
      std::memmove(bytes_.data() + kCheapPrepend, bytes_.data() + read_, readable);
      read_ = kCheapPrepend;
      write_ = read_ + readable;
    }
  }

  std::vector<char> bytes_;
  size_t read_ = kCheapPrepend;
  size_t write_ = kCheapPrepend;
};

// The message, at 8-byte-aligned offsets that step through a 4 KiB window, 512 in turn.
class MessageWindow {
 public:
  static constexpr size_t kWindow = 4096;

  // Where the next message starts; a value, so each batch keeps it in its own frame.
  struct Cursor {
    static constexpr size_t kStep = 72;  // gcd(72, 4096) = 8: every multiple of 8 comes up.

    const char* Next() {
      offset += kStep;
      if (offset >= kWindow) offset -= kWindow;
      return window + offset;
    }

    const char* window;
    size_t size;
    size_t offset;
  };

  explicit MessageWindow(size_t size) : bytes_(kWindow + size, 'm') {}

  Cursor Begin() const { return {bytes_.data(), bytes_.size() - kWindow, 0}; }

 private:
  std::string bytes_;
};

struct RingAdapter {
  void Write(const char* data, size_t n) { buffer.Write(data, n); }
  void PeekAndUse() const {
    RingBuffer::Slices readable = buffer.PeekAll();
    Use(readable.first.data(), readable.first.size());
    Use(readable.second.data(), readable.second.size());
  }
  size_t Length() const { return buffer.Length(); }
  void Retrieve(size_t n) { buffer.Retrieve(n); }
  RingBuffer buffer;
};

constexpr int kCyclesPerBatch = 4096;
constexpr size_t kPlacementStep = 64;
constexpr size_t kPlacementCycle = 4096;

// A batch's buffer and locals live in its own frame, so they move with it (see RunShifted).
template <typename Buffer>
__attribute__((noinline)) void DrainBatch(MessageWindow::Cursor& cursor) {
  MessageWindow::Cursor message = cursor;
  Buffer buffer;
  for (int i = 0; i < kCyclesPerBatch; ++i) {
    buffer.Write(message.Next(), message.size);
    buffer.PeekAndUse();
    buffer.Retrieve(buffer.Length());
  }
  cursor = message;
}

template <typename Buffer>
__attribute__((noinline)) void BacklogBatch(MessageWindow::Cursor& cursor) {
  MessageWindow::Cursor message = cursor;
  Buffer buffer;
  for (int i = 0; i < 3; ++i) buffer.Write(message.Next(), message.size);
  for (int i = 0; i < kCyclesPerBatch; ++i) {
    buffer.Write(message.Next(), message.size);
    buffer.PeekAndUse();
    buffer.Retrieve(message.size);
  }
  cursor = message;
}

using Batch = void (*)(MessageWindow::Cursor&);

// Runs `batch` with its frame `shift` bytes further down the stack; a call of its own, so the
// alloca is undone when it returns.
__attribute__((noinline)) void RunShifted(Batch batch, MessageWindow::Cursor& cursor,
                                          size_t shift) {
  void* padding = alloca(shift + 1);
  benchmark::DoNotOptimize(padding);
  batch(cursor);
}

void RunPlaced(benchmark::State& state, Batch batch) {
  MessageWindow window(static_cast<size_t>(state.range(0)));
  MessageWindow::Cursor cursor = window.Begin();
  size_t shift = 0;
  while (state.KeepRunningBatch(kCyclesPerBatch)) {
    RunShifted(batch, cursor, shift);
    shift = (shift + kPlacementStep) % kPlacementCycle;
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}

template <typename Buffer>
void BM_Drain(benchmark::State& state) {
  RunPlaced(state, &DrainBatch<Buffer>);
}

template <typename Buffer>
void BM_Backlog(benchmark::State& state) {
  RunPlaced(state, &BacklogBatch<Buffer>);
}

#define GEV_BUFFER_BENCHMARKS(kind)                                              \
  BENCHMARK_TEMPLATE(kind, RingAdapter)->Arg(16)->Arg(512)->Arg(64 << 10);     \
  BENCHMARK_TEMPLATE(kind, VectorBuffer)->Arg(16)->Arg(512)->Arg(64 << 10);    \
  BENCHMARK_TEMPLATE(kind, LinearBuffer)->Arg(16)->Arg(512)->Arg(64 << 10)

GEV_BUFFER_BENCHMARKS(BM_Drain);
GEV_BUFFER_BENCHMARKS(BM_Backlog);

}  // namespace
}  // namespace gev

BENCHMARK_MAIN();

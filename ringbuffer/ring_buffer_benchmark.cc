// Write + Peek + Retrieve cycles through gev::RingBuffer and two baselines:
//   - VectorBuffer: std::vector<char>, append at the back, erase from the front;
//   - LinearBuffer: muduo's Buffer shape, one vector with read and write indices that moves the
//     readable bytes to the front (or grows) when the tail runs out.
// "Drain" empties the buffer every cycle (an echo server's steady state); "Backlog" keeps about
// three messages queued so the buffers must wrap, compact or shift.
// Each cycle copies its message from the next of 512 places spread over 4 KiB. Whether a copy
// runs into the CPU's false store-to-load aliasing (addresses equal modulo 4 KiB) depends on
// where the source sits relative to the buffer's storage; with one fixed source that was an
// accident of heap layout, and the same code measured 3.6 or 7.3 ns at 512 B between builds.
//
//   tools/bazel run -c opt //ringbuffer:ring_buffer_benchmark

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "ringbuffer/ring_buffer.h"

namespace gev {
namespace {

class VectorBuffer {
 public:
  void Write(const char* data, size_t n) { bytes_.insert(bytes_.end(), data, data + n); }
  const char* Peek() const { return bytes_.data(); }
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
  const char* Peek() const { return bytes_.data() + read_; }
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
class MessageSource {
 public:
  static constexpr size_t kWindow = 4096;
  static constexpr size_t kStep = 72;  // gcd(72, 4096) = 8: every multiple of 8 comes up.

  explicit MessageSource(size_t size) : size_(size), bytes_(kWindow + size, 'm') {}

  const char* Next() {
    offset_ += kStep;
    if (offset_ >= kWindow) offset_ -= kWindow;
    return bytes_.data() + offset_;
  }
  size_t size() const { return size_; }

 private:
  size_t size_;
  std::string bytes_;
  size_t offset_ = 0;
};

struct RingAdapter {
  void Write(const char* data, size_t n) { buffer.Write(data, n); }
  RingBuffer::Slices Peek() const { return buffer.PeekAll(); }
  size_t Length() const { return buffer.Length(); }
  void Retrieve(size_t n) { buffer.Retrieve(n); }
  RingBuffer buffer;
};

template <typename Buffer>
void BM_Drain(benchmark::State& state) {
  MessageSource message(static_cast<size_t>(state.range(0)));
  Buffer buffer;
  for (auto _ : state) {
    buffer.Write(message.Next(), message.size());
    auto view = buffer.Peek();
    benchmark::DoNotOptimize(view);
    buffer.Retrieve(buffer.Length());
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}

template <typename Buffer>
void BM_Backlog(benchmark::State& state) {
  MessageSource message(static_cast<size_t>(state.range(0)));
  Buffer buffer;
  for (int i = 0; i < 3; ++i) buffer.Write(message.Next(), message.size());
  for (auto _ : state) {
    buffer.Write(message.Next(), message.size());
    auto view = buffer.Peek();
    benchmark::DoNotOptimize(view);
    buffer.Retrieve(message.size());
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
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

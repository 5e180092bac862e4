// Write + Peek + Retrieve cycles through gev::RingBuffer and two baselines:
//   - VectorBuffer: std::vector<char>, append at the back, erase from the front;
//   - LinearBuffer: muduo's Buffer shape, one vector with read and write indices that moves the
//     readable bytes to the front (or grows) when the tail runs out.
// "Drain" empties the buffer every cycle (an echo server's steady state); "Backlog" keeps about
// three messages queued so the buffers must wrap, compact or shift.
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

struct RingAdapter {
  void Write(const char* data, size_t n) { buffer.Write(data, n); }
  RingBuffer::Slices Peek() const { return buffer.PeekAll(); }
  size_t Length() const { return buffer.Length(); }
  void Retrieve(size_t n) { buffer.Retrieve(n); }
  RingBuffer buffer;
};

template <typename Buffer>
void BM_Drain(benchmark::State& state) {
  std::string message(static_cast<size_t>(state.range(0)), 'm');
  Buffer buffer;
  for (auto _ : state) {
    buffer.Write(message.data(), message.size());
    auto view = buffer.Peek();
    benchmark::DoNotOptimize(view);
    buffer.Retrieve(buffer.Length());
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}

template <typename Buffer>
void BM_Backlog(benchmark::State& state) {
  std::string message(static_cast<size_t>(state.range(0)), 'm');
  Buffer buffer;
  for (int i = 0; i < 3; ++i) buffer.Write(message.data(), message.size());
  for (auto _ : state) {
    buffer.Write(message.data(), message.size());
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

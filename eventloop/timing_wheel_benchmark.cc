// gev::TimingWheel against a std::priority_queue timer queue (the usual baseline: a binary heap
// of (due, id) with lazy cancellation through a hash set of cancelled ids).
//   - ScheduleCancel: schedule 1,000,000 timers with random delays up to ~17 minutes, then
//     cancel them all (an idle-timeout workload: most timers never fire).
//   - Fire: schedule N timers with delays up to 100 s and advance time until all have fired;
//     reported per timer.
//
//   tools/bazel run --config=opt //eventloop:timing_wheel_benchmark

#include <cstdint>
#include <queue>
#include <random>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "benchmark/benchmark.h"
#include "eventloop/timing_wheel.h"

namespace gev {
namespace {

constexpr int kScheduleCancelTimers = 1000000;

class HeapTimers {
 public:
  void Schedule(uint64_t id, uint64_t due, absl::AnyInvocable<void()> callback) {
    heap_.push({due, id});
    callbacks_.emplace_back(std::move(callback));
  }
  void Cancel(uint64_t id) { cancelled_.insert(id); }
  size_t Advance(uint64_t now) {
    size_t fired = 0;
    while (!heap_.empty() && heap_.top().first <= now) {
      uint64_t id = heap_.top().second;
      heap_.pop();
      if (cancelled_.erase(id) > 0) continue;
      callbacks_[id]();
      ++fired;
    }
    return fired;
  }
  bool empty() const { return heap_.empty(); }
  uint64_t next_due() const { return heap_.top().first; }

 private:
  using Entry = std::pair<uint64_t, uint64_t>;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap_;
  absl::flat_hash_set<uint64_t> cancelled_;
  std::vector<absl::AnyInvocable<void()>> callbacks_;
};

std::vector<uint64_t> RandomDelays(int n, uint64_t max_delay) {
  std::mt19937_64 rng(42);
  std::vector<uint64_t> delays(static_cast<size_t>(n));
  for (uint64_t& delay : delays) delay = 1 + rng() % max_delay;
  return delays;
}

void BM_ScheduleCancel_TimingWheel(benchmark::State& state) {
  std::vector<uint64_t> delays = RandomDelays(kScheduleCancelTimers, 1000000);
  for (auto _ : state) {
    TimingWheel wheel(0);
    for (int i = 0; i < kScheduleCancelTimers; ++i) {
      wheel.Schedule(static_cast<uint64_t>(i) + 1, delays[static_cast<size_t>(i)], 0, [] {});
    }
    for (int i = 0; i < kScheduleCancelTimers; ++i) wheel.Cancel(static_cast<uint64_t>(i) + 1);
    benchmark::DoNotOptimize(wheel.size());
  }
  state.SetItemsProcessed(state.iterations() * kScheduleCancelTimers);
}
BENCHMARK(BM_ScheduleCancel_TimingWheel)->Unit(benchmark::kMillisecond);

void BM_ScheduleCancel_PriorityQueue(benchmark::State& state) {
  std::vector<uint64_t> delays = RandomDelays(kScheduleCancelTimers, 1000000);
  for (auto _ : state) {
    HeapTimers timers;
    for (int i = 0; i < kScheduleCancelTimers; ++i) {
      timers.Schedule(static_cast<uint64_t>(i), delays[static_cast<size_t>(i)], [] {});
    }
    for (int i = 0; i < kScheduleCancelTimers; ++i) timers.Cancel(static_cast<uint64_t>(i));
    // The heap still holds every cancelled entry: draining it is part of cancellation's cost.
    timers.Advance(UINT64_MAX);
    benchmark::DoNotOptimize(timers.empty());
  }
  state.SetItemsProcessed(state.iterations() * kScheduleCancelTimers);
}
BENCHMARK(BM_ScheduleCancel_PriorityQueue)->Unit(benchmark::kMillisecond);

void BM_Fire_TimingWheel(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  std::vector<uint64_t> delays = RandomDelays(n, 100000);
  int64_t fired = 0;
  for (auto _ : state) {
    TimingWheel wheel(0);
    for (int i = 0; i < n; ++i) {
      wheel.Schedule(static_cast<uint64_t>(i) + 1, delays[static_cast<size_t>(i)], 0,
                     [&fired] { ++fired; });
    }
    uint64_t now = 0;
    while (wheel.size() > 0) {
      now += static_cast<uint64_t>(wheel.NextTimeoutMs(now));
      wheel.Advance(now);
    }
  }
  benchmark::DoNotOptimize(fired);
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_Fire_TimingWheel)->Arg(1000)->Arg(100000);

void BM_Fire_PriorityQueue(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  std::vector<uint64_t> delays = RandomDelays(n, 100000);
  int64_t fired = 0;
  for (auto _ : state) {
    HeapTimers timers;
    for (int i = 0; i < n; ++i) {
      timers.Schedule(static_cast<uint64_t>(i), delays[static_cast<size_t>(i)],
                      [&fired] { ++fired; });
    }
    while (!timers.empty()) timers.Advance(timers.next_due());
  }
  benchmark::DoNotOptimize(fired);
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_Fire_PriorityQueue)->Arg(1000)->Arg(100000);

}  // namespace
}  // namespace gev

BENCHMARK_MAIN();

// Cross-thread posting into one EventLoop from 1 and 4 producer threads: tasks per second, and
// how many wakeup system calls the loop needed per 1,000 tasks (the coalescing at work).
//
//   tools/bazel run --config=opt //eventloop:eventloop_benchmark

#include <atomic>
#include <thread>
#include <vector>

#include "benchmark/benchmark.h"
#include "eventloop/event_loop.h"

namespace gev {
namespace {

void BM_CrossThreadPost(benchmark::State& state) {
  const int producers = static_cast<int>(state.range(0));
  constexpr int kTasksPerRound = 100000;
  auto created = EventLoop::Create();
  if (!created.ok()) {
    state.SkipWithError("EventLoop::Create failed");
    return;
  }
  EventLoop& loop = **created;
  std::thread runner([&loop] { loop.Run(); });
  std::atomic<int64_t> done{0};
  int64_t expected = 0;
  uint64_t wakeups_before = loop.wakeup_count();

  for (auto _ : state) {
    expected += kTasksPerRound;
    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p) {
      threads.emplace_back([&loop, &done, producers] {
        for (int i = 0; i < kTasksPerRound / producers; ++i) {
          loop.QueueInLoop([&done] { done.fetch_add(1, std::memory_order_relaxed); });
        }
      });
    }
    for (auto& thread : threads) thread.join();
    while (done.load(std::memory_order_relaxed) < expected) std::this_thread::yield();
  }

  uint64_t wakeups = loop.wakeup_count() - wakeups_before;
  loop.Stop();
  runner.join();
  state.SetItemsProcessed(expected);
  state.counters["wakeups_per_1000_tasks"] =
      benchmark::Counter(1000.0 * static_cast<double>(wakeups) / static_cast<double>(expected));
}
BENCHMARK(BM_CrossThreadPost)->Arg(1)->Arg(4)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace gev

BENCHMARK_MAIN();

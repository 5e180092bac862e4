#include "eventloop/event_loop.h"

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace gev {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

std::unique_ptr<EventLoop> NewLoop() {
  auto loop = EventLoop::Create();
  EXPECT_TRUE(loop.ok()) << loop.status();
  return std::move(*loop);
}

// Runs a loop on its own thread for the test's duration.
class LoopThread {
 public:
  LoopThread() : loop_(NewLoop()), thread_([this] { loop_->Run(); }) {
    // Wait until Run() has recorded its thread.
    std::promise<void> started;
    loop_->QueueInLoop([&started] { started.set_value(); });
    started.get_future().wait();
  }
  ~LoopThread() {
    loop_->Stop();
    thread_.join();
  }
  EventLoop& loop() { return *loop_; }

  // Runs `f` on the loop thread and waits for it.
  template <typename F>
  void RunAndWait(F f) {
    std::promise<void> done;
    loop_->QueueInLoop([&] {
      f();
      done.set_value();
    });
    done.get_future().wait();
  }

 private:
  std::unique_ptr<EventLoop> loop_;
  std::thread thread_;
};

TEST(EventLoopTest, QueuedTasksRunInOrderThenStop) {
  auto loop = NewLoop();
  std::vector<int> order;
  for (int i = 0; i < 5; ++i) loop->QueueInLoop([&order, i] { order.push_back(i); });
  loop->QueueInLoop([&] { loop->Stop(); });  // Stop from a callback.
  loop->Run();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
}

TEST(EventLoopTest, TasksQueuedFromTasksRunAfterThem) {
  auto loop = NewLoop();
  std::vector<int> order;
  loop->QueueInLoop([&] {
    order.push_back(1);
    loop->QueueInLoop([&] {
      order.push_back(3);
      loop->Stop();
    });
    order.push_back(2);
  });
  loop->Run();
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
}

TEST(EventLoopTest, TasksQueuedWhileStoppingStillRun) {
  auto loop = NewLoop();
  std::vector<int> order;
  loop->QueueInLoop([&] {
    loop->Stop();
    // A connection's close queues its teardown, which queues nothing more.
    loop->QueueInLoop([&] {
      order.push_back(1);
      loop->QueueInLoop([&] { order.push_back(2); });
    });
  });
  loop->Run();
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
}

// After Run() has returned nothing would ever run a task; a task holding what keeps the loop
// alive (a connection holds its loop) would make a cycle that is never freed.
TEST(EventLoopTest, AFinishedLoopRefusesTasksAndDropsItsTimers) {
  auto loop = NewLoop();
  auto held = std::make_shared<int>(7);
  std::weak_ptr<int> watch = held;
  loop->RunAfter(absl::Hours(1), [held] { ADD_FAILURE() << "a timer of a finished loop ran"; });
  held.reset();
  size_t timers_pending = 0;
  loop->QueueInLoop([&] {
    timers_pending = loop->timer_count();
    loop->Stop();
  });
  EXPECT_FALSE(loop->Finished());
  loop->Run();
  EXPECT_TRUE(loop->Finished());
  EXPECT_EQ(timers_pending, 1u);
  EXPECT_TRUE(watch.expired());  // The pending timer's callback was destroyed.
  auto captured = std::make_shared<int>(8);
  std::weak_ptr<int> refused = captured;
  std::thread other([&] {
    EXPECT_FALSE(loop->QueueInLoop([captured] { ADD_FAILURE() << "ran"; }));
    EXPECT_FALSE(loop->RunInLoop([] { ADD_FAILURE() << "ran"; }));
  });
  other.join();
  captured.reset();
  EXPECT_TRUE(refused.expired());  // Destroyed by QueueInLoop, not kept.
}

TEST(EventLoopTest, RunInLoopIsInlineOnTheLoopThread) {
  LoopThread thread;
  bool inline_ran = false;
  thread.RunAndWait([&] {
    EXPECT_TRUE(thread.loop().IsInLoopThread());
    thread.loop().RunInLoop([&] { inline_ran = true; });
    EXPECT_TRUE(inline_ran);  // Already ran, before RunInLoop returned.
  });
  EXPECT_FALSE(thread.loop().IsInLoopThread());
}

TEST(EventLoopTest, ManyThreadsPostingConcurrentlyLoseNoTask) {
  LoopThread thread;
  constexpr int kThreads = 8;
  constexpr int kTasksPerThread = 20000;
  int counter = 0;  // Touched on the loop thread only.
  std::vector<int> last_seen(kThreads, -1);
  bool in_order = true;
  std::vector<std::thread> producers;
  for (int t = 0; t < kThreads; ++t) {
    producers.emplace_back([&, t] {
      for (int i = 0; i < kTasksPerThread; ++i) {
        thread.loop().QueueInLoop([&, t, i] {
          ++counter;
          if (last_seen[t] != i - 1) in_order = false;
          last_seen[t] = i;
        });
      }
    });
  }
  for (auto& producer : producers) producer.join();
  int seen = 0;
  bool ordered = false;
  thread.RunAndWait([&] {
    seen = counter;
    ordered = in_order;
  });
  EXPECT_EQ(seen, kThreads * kTasksPerThread);
  EXPECT_TRUE(ordered);  // Each producer's tasks ran in its order.
}

TEST(EventLoopTest, BusyLoopIsNotWokenPerTask) {
  LoopThread thread;
  std::atomic<bool> release{false};
  std::atomic<bool> busy{false};
  thread.loop().QueueInLoop([&] {
    busy = true;
    while (!release) std::this_thread::yield();  // The loop is busy, not asleep.
  });
  while (!busy) std::this_thread::yield();
  uint64_t wakeups_before = thread.loop().wakeup_count();
  std::atomic<int> ran{0};
  for (int i = 0; i < 1000; ++i) thread.loop().QueueInLoop([&] { ++ran; });
  EXPECT_EQ(thread.loop().wakeup_count(), wakeups_before);
  release = true;
  thread.RunAndWait([] {});
  EXPECT_EQ(ran.load(), 1000);
}

TEST(EventLoopTest, StopFromAnotherThreadEndsRun) {
  auto loop = NewLoop();
  std::thread runner([&] { loop->Run(); });
  std::this_thread::sleep_for(milliseconds(20));
  auto start = steady_clock::now();
  loop->Stop();
  runner.join();
  EXPECT_LT(steady_clock::now() - start, std::chrono::seconds(5));
}

TEST(EventLoopTest, StopBeforeRunReturnsAtOnce) {
  auto loop = NewLoop();
  loop->Stop();
  loop->Run();
  SUCCEED();
}

TEST(EventLoopTest, TimersFireInDueOrder) {
  auto loop = NewLoop();
  std::vector<int> order;
  loop->RunAfter(absl::Milliseconds(30), [&] { order.push_back(30); });
  loop->RunAfter(absl::Milliseconds(10), [&] { order.push_back(10); });
  loop->RunAfter(absl::Milliseconds(20), [&] { order.push_back(20); });
  loop->RunAfter(absl::Milliseconds(40), [&] { loop->Stop(); });
  loop->Run();
  EXPECT_EQ(order, (std::vector<int>{10, 20, 30}));
}

TEST(EventLoopTest, CancelFromCallbackAndOfFiredTimer) {
  auto loop = NewLoop();
  int every_runs = 0;
  bool cancelled_ran = false;
  TimerId every = 0;
  every = loop->RunEvery(absl::Milliseconds(5), [&] {
    if (++every_runs == 3) loop->Cancel(every);
  });
  TimerId victim = loop->RunAfter(absl::Milliseconds(30), [&] { cancelled_ran = true; });
  TimerId fired = loop->RunAfter(absl::Milliseconds(1), [] {});
  loop->RunAfter(absl::Milliseconds(10), [&] {
    loop->Cancel(victim);
    loop->Cancel(fired);  // Already fired: harmless.
  });
  loop->RunAfter(absl::Milliseconds(60), [&] { loop->Stop(); });
  loop->Run();
  EXPECT_EQ(every_runs, 3);
  EXPECT_FALSE(cancelled_ran);
}

TEST(EventLoopTest, CancelFromAnotherThread) {
  LoopThread thread;
  std::atomic<bool> ran{false};
  TimerId id = thread.loop().RunAfter(absl::Milliseconds(50), [&] { ran = true; });
  thread.loop().Cancel(id);
  std::this_thread::sleep_for(milliseconds(100));
  thread.RunAndWait([] {});
  EXPECT_FALSE(ran);
}

TEST(EventLoopTest, RunEveryKeepsItsCadenceAfterAStall) {
  auto loop = NewLoop();
  std::vector<uint64_t> at;
  uint64_t start = loop->NowMs();
  loop->RunEvery(absl::Milliseconds(20), [&] {
    // Stop() ends Run after this iteration: runs already due in it (a machine stalled long
    // enough for several) still come, and are not counted.
    if (at.size() == 10) return;
    at.push_back(loop->NowMs());
    if (at.size() == 1) std::this_thread::sleep_for(milliseconds(50));  // A slow callback.
    if (at.size() == 10) loop->Stop();
  });
  loop->Run();
  ASSERT_EQ(at.size(), 10u);
  bool caught_up = false;
  for (size_t n = 0; n < at.size(); ++n) {
    EXPECT_GE(at[n], start + 20 * (n + 1)) << "run " << n << " came early";
    if (n > 0 && at[n] - at[n - 1] < 20) caught_up = true;
  }
  // On the cadence, the run after the stall is already due, so some run follows its predecessor
  // in less than an interval. A timer re-armed from each run's end (one that drifts) always waits
  // a whole interval. No upper bound on lateness: a loaded machine may be late by any amount.
  EXPECT_TRUE(caught_up) << "every run waited a whole interval after the previous one";
}

TEST(EventLoopTest, OneTimerSleepsInsteadOfTicking) {
  auto loop = NewLoop();
  auto start = steady_clock::now();
  uint64_t polls_at_fire = 0;
  loop->RunAfter(absl::Milliseconds(50), [&] {
    polls_at_fire = loop->poll_count();
    loop->Stop();
  });
  loop->Run();
  EXPECT_GE(steady_clock::now() - start, milliseconds(50));
  EXPECT_GE(polls_at_fire, 1u);
  EXPECT_LE(polls_at_fire, 3u);  // One sleep of ~50 ms, not 50 one-millisecond ticks.
}

TEST(EventLoopTest, IdleLoopWithoutTimersDoesNotPoll) {
  LoopThread thread;
  uint64_t before = thread.loop().poll_count();
  std::this_thread::sleep_for(milliseconds(200));
  EXPECT_EQ(thread.loop().poll_count(), before);
}

class RecordingHandler : public EventHandler {
 public:
  void HandleEvent(const PollEvent& event) override {
    events.push_back(event);
    if (on_event) on_event();
  }
  std::vector<PollEvent> events;
  std::function<void()> on_event;
};

TEST(EventLoopTest, HandlersReceiveTheirDescriptorsEvents) {
  auto loop = NewLoop();
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, pair), 0);
  RecordingHandler handler;
  handler.on_event = [&] {
    char buf[16];
    EXPECT_EQ(::read(pair[0], buf, sizeof(buf)), 3);
    loop->Stop();
  };
  loop->QueueInLoop([&] {
    ASSERT_TRUE(loop->AddHandler(pair[0], Interest::kRead, &handler).ok());
    EXPECT_EQ(loop->handler_count(), 1u);
    EXPECT_FALSE(loop->AddHandler(pair[0], Interest::kRead, &handler).ok());
    ASSERT_EQ(::write(pair[1], "abc", 3), 3);
  });
  loop->Run();
  ASSERT_EQ(handler.events.size(), 1u);
  EXPECT_TRUE(handler.events[0].readable);
  ::close(pair[0]);
  ::close(pair[1]);
}

TEST(EventLoopTest, HandlerRemovedEarlierInABatchGetsNoEvent) {
  auto loop = NewLoop();
  int a[2], b[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, a), 0);
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, b), 0);
  RecordingHandler first, second;
  // Whichever handler runs first removes the other one: the other's already-polled event must
  // not be delivered.
  first.on_event = [&] {
    (void)loop->RemoveHandler(b[0], &second);
    (void)loop->RemoveHandler(a[0], &first);
    loop->Stop();
  };
  second.on_event = [&] {
    (void)loop->RemoveHandler(a[0], &first);
    (void)loop->RemoveHandler(b[0], &second);
    loop->Stop();
  };
  loop->QueueInLoop([&] {
    ASSERT_TRUE(loop->AddHandler(a[0], Interest::kRead, &first).ok());
    ASSERT_TRUE(loop->AddHandler(b[0], Interest::kRead, &second).ok());
    ASSERT_EQ(::write(a[1], "x", 1), 1);
    ASSERT_EQ(::write(b[1], "x", 1), 1);
  });
  loop->Run();
  EXPECT_EQ(first.events.size() + second.events.size(), 1u);
  for (int fd : {a[0], a[1], b[0], b[1]}) ::close(fd);
}

// The loop keeps no table by descriptor: a handler removed in a batch, whose descriptor number
// and address come back at once (closed, reopened, registered again for the same object), gets
// none of the old registration's events from that batch, and the new one's in the next.
TEST(EventLoopTest, AHandlerRemovedAndAddedAgainInABatchGetsNoStaleEvent) {
  auto loop = NewLoop();
  int a[2], b[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, a), 0);
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, b), 0);
  RecordingHandler first, second;
  int reopened[2] = {-1, -1};
  bool replaced = false;
  // Whichever runs first replaces the other: removed, its descriptor closed and a new one
  // (most likely the same number) registered for the same object.
  auto replace = [&](int self_fd, RecordingHandler* other, int* other_fd) {
    char byte;
    EXPECT_EQ(::read(self_fd, &byte, 1), 1);
    replaced = true;
    ASSERT_TRUE(loop->RemoveHandler(*other_fd, other).ok());
    ::close(*other_fd);
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, reopened), 0);
    *other_fd = -1;
    ASSERT_TRUE(loop->AddHandler(reopened[0], Interest::kRead, other).ok());
    // The new registration's byte comes after this batch: a stale event in it finds none.
    loop->QueueInLoop([&] { ASSERT_EQ(::write(reopened[1], "n", 1), 1); });
  };
  // After the replacement, only the new registration may have an event: a byte to read.
  auto after = [&](RecordingHandler* self) {
    char byte;
    EXPECT_EQ(::read(reopened[0], &byte, 1), 1) << "an event of the removed registration";
    EXPECT_EQ(self->events.size(), 1u);
    loop->Stop();
  };
  first.on_event = [&] { replaced ? after(&first) : replace(a[0], &second, &b[0]); };
  second.on_event = [&] { replaced ? after(&second) : replace(b[0], &first, &a[0]); };
  loop->QueueInLoop([&] {
    ASSERT_TRUE(loop->AddHandler(a[0], Interest::kRead, &first).ok());
    ASSERT_TRUE(loop->AddHandler(b[0], Interest::kRead, &second).ok());
    // Both ready before the poll: one batch holds both events, whichever comes first.
    ASSERT_EQ(::write(a[1], "x", 1), 1);
    ASSERT_EQ(::write(b[1], "x", 1), 1);
  });
  loop->RunAfter(absl::Seconds(5), [&] { loop->Stop(); });
  loop->Run();
  EXPECT_TRUE(replaced);
  EXPECT_EQ(first.events.size() + second.events.size(), 2u);
  for (int fd : {a[0], a[1], b[0], b[1], reopened[0], reopened[1]}) {
    if (fd >= 0) ::close(fd);
  }
}

TEST(EventLoopTest, RegistrationErrorsAreReported) {
  auto loop = NewLoop();
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, pair), 0);
  alignas(8) char storage[16];
  loop->QueueInLoop([&] {
    absl::Status misaligned =
        loop->AddHandler(pair[0], Interest::kRead, storage + 1, +[](void*, const PollEvent&) {});
    EXPECT_TRUE(absl::IsInvalidArgument(misaligned)) << misaligned;
    absl::Status missing = loop->RemoveHandler(pair[0], storage);
    EXPECT_TRUE(absl::IsNotFound(missing)) << missing;
    EXPECT_EQ(loop->handler_count(), 0u);
    loop->Stop();
  });
  loop->Run();
  ::close(pair[0]);
  ::close(pair[1]);
}

// A plain callback per handler, numbered by the loop: each object gets its own
// descriptor's events through its own callback, beside a virtual EventHandler.
struct Counted {
  int events = 0;
  int other_events = 0;
};
void CountEvent(void* object, const PollEvent&) { ++static_cast<Counted*>(object)->events; }
void CountOtherEvent(void* object, const PollEvent&) {
  ++static_cast<Counted*>(object)->other_events;
}

TEST(EventLoopTest, CallbackHandlersGetTheirDescriptorsEventsThroughTheirOwnCallback) {
  auto loop = NewLoop();
  int a[2], b[2], c[2];
  for (int* pair : {a, b, c}) {
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, pair), 0);
  }
  Counted first, second;
  RecordingHandler virtual_handler;
  loop->QueueInLoop([&] {
    ASSERT_TRUE(loop->AddHandler(a[0], Interest::kRead, &first, &CountEvent).ok());
    ASSERT_TRUE(loop->AddHandler(b[0], Interest::kRead, &second, &CountOtherEvent).ok());
    ASSERT_TRUE(loop->AddHandler(c[0], Interest::kRead, &virtual_handler).ok());
    EXPECT_TRUE(absl::IsAlreadyExists(loop->AddHandler(a[0], Interest::kRead, &second,
                                                       &CountOtherEvent)));
    ASSERT_EQ(::write(a[1], "x", 1), 1);
    ASSERT_EQ(::write(b[1], "y", 1), 1);
    ASSERT_EQ(::write(c[1], "z", 1), 1);
  });
  loop->RunAfter(absl::Milliseconds(50), [&] { loop->Stop(); });
  loop->Run();
  EXPECT_GE(first.events, 1);
  EXPECT_EQ(first.other_events, 0);
  EXPECT_EQ(second.events, 0);
  EXPECT_GE(second.other_events, 1);
  EXPECT_FALSE(virtual_handler.events.empty());
  for (int* pair : {a, b, c}) {
    ::close(pair[0]);
    ::close(pair[1]);
  }
}

// kMaxCallbacks different callbacks, each registered once on the same descriptor and removed;
// one more is refused, and a known one is still taken.
template <size_t N>
void NumberedCallback(void* object, const PollEvent&) {
  // A body of its own, so that no linker folds two of them into one address.
  static_cast<Counted*>(object)->events += static_cast<int>(N);
}

template <size_t... N>
std::vector<EventLoop::EventCallback> NumberedCallbacks(std::index_sequence<N...>) {
  return {&NumberedCallback<N>...};
}

TEST(EventLoopTest, ALoopTakesAtMostKMaxCallbacksDifferentCallbacks) {
  auto loop = NewLoop();
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, pair), 0);
  std::vector<EventLoop::EventCallback> callbacks =
      NumberedCallbacks(std::make_index_sequence<EventLoop::kMaxCallbacks + 1>());
  Counted object;
  loop->QueueInLoop([&] {
    for (size_t i = 0; i < EventLoop::kMaxCallbacks; ++i) {
      ASSERT_TRUE(loop->AddHandler(pair[0], Interest::kRead, &object, callbacks[i]).ok()) << i;
      ASSERT_TRUE(loop->RemoveHandler(pair[0], &object).ok());
    }
    absl::Status refused =
        loop->AddHandler(pair[0], Interest::kRead, &object, callbacks.back());
    EXPECT_TRUE(absl::IsResourceExhausted(refused)) << refused;
    EXPECT_EQ(loop->handler_count(), 0u);
    EXPECT_TRUE(loop->AddHandler(pair[0], Interest::kRead, &object, callbacks[7]).ok());
    EXPECT_TRUE(loop->RemoveHandler(pair[0], &object).ok());
    loop->Stop();
  });
  loop->Run();
  ::close(pair[0]);
  ::close(pair[1]);
}

TEST(EventLoopTest, UpdateInterestSwitchesToWritable) {
  auto loop = NewLoop();
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, pair), 0);
  RecordingHandler handler;
  handler.on_event = [&] { loop->Stop(); };
  loop->QueueInLoop([&] {
    ASSERT_TRUE(loop->AddHandler(pair[0], Interest::kNone, &handler).ok());
    ASSERT_TRUE(loop->UpdateInterest(pair[0], Interest::kWrite, &handler).ok());
  });
  loop->Run();
  ASSERT_FALSE(handler.events.empty());
  EXPECT_TRUE(handler.events[0].writable);
  ::close(pair[0]);
  ::close(pair[1]);
}

TEST(EventLoopDeathTest, ALoopRunsOnce) {
  auto loop = NewLoop();
  loop->Stop();
  loop->Run();
  EXPECT_DEATH(loop->Run(), "called again after it returned");
}

TEST(EventLoopDeathTest, LoopOnlyMethodAbortsOffTheLoopThread) {
  LoopThread thread;
  RecordingHandler handler;
  EXPECT_DEATH((void)thread.loop().UpdateInterest(0, Interest::kRead, &handler),
               "off its loop thread");
}

}  // namespace
}  // namespace gev

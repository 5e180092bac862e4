// -----------------------------------------------------------------------------
// File: eventloop/event_loop.h
// -----------------------------------------------------------------------------
//
// `gev::EventLoop` is one reactor: a poller, a task queue and a timing wheel, driven by one
// thread. Descriptors are registered with an `EventHandler` (muduo's Channel role) that the
// loop calls with each readiness event; other threads hand work to the loop through
// `RunInLoop`/`QueueInLoop`, and timers (`RunAfter`, `RunEvery`) run on the loop thread too, so
// they may touch the loop's connections without locks (unlike gev, whose timer callbacks run
// on their own goroutine).
//
// The loop sleeps in the poller until a descriptor is ready, the next timer is due, or a task
// arrives. Waking a sleeping loop costs one system call, paid only when the loop is (about to
// be) asleep; a loop busy with work is never woken, however many tasks are posted. An idle loop
// with no timers blocks without a timeout and makes no system calls.
//
// Example:
//
//   absl::StatusOr<std::unique_ptr<gev::EventLoop>> loop = gev::EventLoop::Create();
//   std::thread thread([&] { (*loop)->Run(); });
//   (*loop)->RunInLoop([] { /* on the loop thread */ });
//   gev::TimerId tick = (*loop)->RunEvery(absl::Seconds(1), [] { Push(); });
//   (*loop)->Cancel(tick);
//   (*loop)->Stop();
//   thread.join();
//
// Thread safety: `Stop`, `RunInLoop`, `QueueInLoop`, `RunAfter`, `RunEvery`, `Cancel`,
// `IsInLoopThread` and the counters are thread-safe. Handler registration and the scratch
// buffer are for the loop thread only. The loop thread is the one that calls `Run()`.

#ifndef GEV_EVENTLOOP_EVENT_LOOP_H_
#define GEV_EVENTLOOP_EVENT_LOOP_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "eventloop/event_handler.h"
#include "eventloop/timing_wheel.h"
#include "poller/poller.h"

namespace gev {

// Identifies a timer for Cancel(). Never 0, never reused by a loop.
using TimerId = uint64_t;

class EventLoop {
 public:
  using Task = absl::AnyInvocable<void()>;
  // Size of the loop's scratch read buffer (see scratch_buffer()).
  static constexpr size_t kScratchSize = 64 * 1024;

  // EventLoop::Create() — a loop on the platform's default poller.
  static absl::StatusOr<std::unique_ptr<EventLoop>> Create();
  // EventLoop::Create() — a loop on the given poller.
  static std::unique_ptr<EventLoop> Create(std::unique_ptr<Poller> poller);

  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // EventLoop::Run() — runs the loop on the calling thread until Stop(). The calling thread
  // becomes the loop thread. Tasks still queued when it stops, and the tasks they queue, are run
  // before it returns; pending timers are then cancelled. A loop runs once: after Run() has
  // returned it refuses tasks (see QueueInLoop), so that objects which keep it alive (a
  // connection holds its loop) never sit in its queue forever.
  void Run();
  // EventLoop::Stop() — makes Run() return after its current iteration. Thread-safe; also
  // callable from a callback on the loop thread, and before Run() (which then returns at once).
  void Stop();

  // EventLoop::Finished() — Run() has returned (or is returning, its tasks all run): the loop
  // refuses tasks and no callback of it runs again. Thread-safe.
  bool Finished() const;

  // EventLoop::IsInLoopThread() — true on the thread running Run(). Thread-safe.
  bool IsInLoopThread() const;
  // EventLoop::AssertInLoopThread() — aborts when called off the loop thread.
  void AssertInLoopThread() const;
  // EventLoop::DcheckInLoopThread() — AssertInLoopThread() in debug builds (without NDEBUG),
  // nothing in optimized ones: for loop-only methods on the hot path.
  void DcheckInLoopThread() const {
#ifndef NDEBUG
    AssertInLoopThread();
#endif
  }

  // EventLoop::RunInLoop() — runs `task` now when called on the loop thread, otherwise queues
  // it. Returns false, having destroyed `task` unrun, once the loop has finished. Thread-safe.
  bool RunInLoop(Task task);
  // EventLoop::QueueInLoop() — runs `task` on the loop thread after the current event
  // handling; tasks run in the order they were queued. Returns false, having destroyed `task`
  // unrun on the calling thread, once Run() has returned. Thread-safe.
  bool QueueInLoop(Task task);

  // EventLoop::QueueBeforePoll() — runs `task` at the end of the current iteration, after the
  // poll batch, the timers and the queued tasks, before the loop next polls (Redis's
  // beforeSleep). Connections gather what a batch sends this way and write it once. Such tasks
  // run in the order they were queued; one that queues another has it run in the same pass.
  // Loop thread only, and only while Run() runs (until it returns).
  void QueueBeforePoll(Task task) {
    DcheckInLoopThread();
    before_poll_.push_back(std::move(task));
  }

  // EventLoop::RunAfter() — runs `task` once on the loop thread after `delay` (millisecond
  // resolution, at least one tick). Thread-safe.
  TimerId RunAfter(absl::Duration delay, Task task);
  // EventLoop::RunEvery() — runs `task` every `interval`; the n-th run is due at
  // start + n * interval. Thread-safe.
  TimerId RunEvery(absl::Duration interval, Task task);
  // EventLoop::Cancel() — cancels a pending or periodic timer. Safe for timers that already
  // fired and from inside any timer's callback. Thread-safe (applied on the loop thread).
  void Cancel(TimerId id);

  // A descriptor's handler as a plain function and its object: `callback(object, event)`.
  using EventCallback = void (*)(void* object, const PollEvent& event);
  // Most different callbacks one loop delivers to (EventHandler counts as one): the callback's
  // number rides in the low bits of the object's address in each event's tag.
  static constexpr size_t kMaxCallbacks = 8;

  // EventLoop::AddHandler() — polls `fd` for `interest`, delivering events to `handler` until
  // RemoveHandler(). AlreadyExists if `fd` is registered. Loop thread only.
  absl::Status AddHandler(int fd, Interest interest, EventHandler* handler);
  // EventLoop::AddHandler() — the same, delivering events as `callback(object, event)`: for
  // handlers there are many of, whose size matters (a connection per client: a virtual table
  // pointer would be 8 bytes of each). `object` must be aligned to 8 (InvalidArgument if not);
  // ResourceExhausted past kMaxCallbacks different callbacks. Loop thread only.
  //
  // The loop keeps nothing per descriptor: each event's tag is the object's address and its
  // callback's number, so the handler is reached without a table (whose entries, one per
  // descriptor and loop, cost an idle connection memory and each event a lookup). That is why
  // UpdateInterest and RemoveHandler name the object again.
  absl::Status AddHandler(int fd, Interest interest, void* object, EventCallback callback);
  // EventLoop::UpdateInterest() — changes what a registered `fd` is polled for. Loop thread only.
  absl::Status UpdateInterest(int fd, Interest interest, EventHandler* handler);
  absl::Status UpdateInterest(int fd, Interest interest, void* object, EventCallback callback);
  // EventLoop::RemoveHandler() — stops polling `fd`, registered for `handler` (or `object`); no
  // event for the object is delivered afterwards, not even one already returned by the current
  // poll (also when the removal fails). Call it before closing `fd`: the event's tag is the
  // object's address, and a copy of the socket elsewhere would keep a closed descriptor's
  // registration alive. NotFound if `fd` is not registered. Loop thread only.
  absl::Status RemoveHandler(int fd, EventHandler* handler);
  absl::Status RemoveHandler(int fd, const void* object);
  // Registered descriptors. Loop thread only.
  size_t handler_count() const {
    DcheckInLoopThread();
    return handler_count_;
  }

  // Timers pending (one-shot ones not yet fired, periodic ones not cancelled). Loop thread only.
  size_t timer_count() const {
    DcheckInLoopThread();
    return timers_.size();
  }

  // EventLoop::scratch_buffer() — a kScratchSize buffer shared by the loop's connections for
  // reads beyond their ring buffers' free space. Loop thread only, and only within one call.
  char* scratch_buffer() {
    DcheckInLoopThread();
    return scratch_.get();
  }

  // Milliseconds on the loop's monotonic clock (the clock timers use). Thread-safe.
  uint64_t NowMs() const;

  // Counters, for tests and benchmarks. Thread-safe.
  uint64_t poll_count() const { return poll_count_.load(std::memory_order_relaxed); }
  uint64_t wakeup_count() const { return wakeup_count_.load(std::memory_order_relaxed); }
  uint64_t tasks_run() const { return tasks_run_.load(std::memory_order_relaxed); }

 private:
  explicit EventLoop(std::unique_ptr<Poller> poller);
  // Returns true when tasks are queued, clearing sleeping_ (which then no producer may set).
  bool PrepareToSleep();
  void RunQueuedTasks();
  void RunBeforePollTasks();
  void Wake();
  TimerId ScheduleTimer(absl::Duration delay, absl::Duration interval, Task task);

  const std::unique_ptr<Poller> poller_;
  const std::chrono::steady_clock::time_point epoch_;
  std::atomic<bool> stop_{false};
  std::atomic<std::thread::id> loop_thread_{};
  // True while the loop is asleep in the poller or about to be: a producer that queues a task
  // then wakes it (exchanging the flag back to false, so only one producer pays).
  std::atomic<bool> sleeping_{false};
  std::atomic<TimerId> next_timer_id_{1};
  std::atomic<uint64_t> poll_count_{0};
  std::atomic<uint64_t> wakeup_count_{0};
  std::atomic<uint64_t> tasks_run_{0};

  mutable std::mutex tasks_mutex_;
  std::vector<Task> tasks_;  // Guarded by tasks_mutex_.
  bool finished_ = false;    // Guarded by tasks_mutex_: Run() has returned.

  // Loop-thread-only state.
  TimingWheel timers_;
  // The tag of `object`'s events, or InvalidArgument/ResourceExhausted (see AddHandler).
  absl::StatusOr<uint64_t> TagFor(void* object, EventCallback callback);
  std::vector<EventCallback> callbacks_;  // Each different callback once; at most kMaxCallbacks.
  size_t handler_count_ = 0;
  // The batch being delivered and the position in it: RemoveHandler voids the events after
  // that position which are for the removed object.
  absl::Span<PollEvent> batch_;
  size_t batch_position_ = 0;
  std::vector<Task> running_tasks_;
  std::vector<Task> before_poll_;
  std::vector<Task> running_before_poll_;
  std::unique_ptr<char[]> scratch_;
};

}  // namespace gev

#endif  // GEV_EVENTLOOP_EVENT_LOOP_H_

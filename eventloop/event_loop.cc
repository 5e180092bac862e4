#include "eventloop/event_loop.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "eventloop/check.h"

namespace gev {
namespace {

uint64_t ToTicks(absl::Duration duration) {
  // Round up, so a timer never fires early; at least one tick.
  int64_t ms = absl::ToInt64Milliseconds(absl::Ceil(duration, absl::Milliseconds(1)));
  return ms < 1 ? 1 : static_cast<uint64_t>(ms);
}

// absl::ErrnoToStatus fills abseil's strerror table on first use, behind a function-local
// static. Debian's abseil is not built with ThreadSanitizer, so when two loop threads format
// their first errno at once TSan cannot see that guard and reports a race. Filling the table
// here, before any loop thread runs and behind a guard of our own, orders every later use after
// it. Costs one call per process.
void FillErrnoMessageTable() {
  static const bool filled = !absl::ErrnoToStatus(EIO, "").ok();
  (void)filled;
}

// An event's tag: the handler object's address (aligned to 8) with its callback's number in
// the low bits. Zero, which no registered object has, marks an event voided by RemoveHandler.
constexpr uint64_t kCallbackBits = 7;
constexpr uint64_t kVoidedTag = 0;
static_assert(EventLoop::kMaxCallbacks == kCallbackBits + 1, "callback numbers fit the low bits");

void DeliverToEventHandler(void* object, const PollEvent& event) {
  static_cast<EventHandler*>(object)->HandleEvent(event);
}

}  // namespace

absl::StatusOr<std::unique_ptr<EventLoop>> EventLoop::Create() {
  absl::StatusOr<std::unique_ptr<Poller>> poller = CreateDefaultPoller();
  if (!poller.ok()) return poller.status();
  return Create(std::move(*poller));
}

std::unique_ptr<EventLoop> EventLoop::Create(std::unique_ptr<Poller> poller) {
  return std::unique_ptr<EventLoop>(new EventLoop(std::move(poller)));
}

EventLoop::EventLoop(std::unique_ptr<Poller> poller)
    : poller_(std::move(poller)),
      epoch_(std::chrono::steady_clock::now()),
      timers_(0),
      scratch_(new char[kScratchSize]) {
  FillErrnoMessageTable();
}

EventLoop::~EventLoop() = default;

uint64_t EventLoop::NowMs() const {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now() - epoch_)
                                   .count());
}

bool EventLoop::Finished() const {
  std::lock_guard<std::mutex> lock(tasks_mutex_);
  return finished_;
}

bool EventLoop::IsInLoopThread() const {
  return loop_thread_.load(std::memory_order_acquire) == std::this_thread::get_id();
}

void EventLoop::AssertInLoopThread() const {
  GEV_CHECK(IsInLoopThread(), "EventLoop method called off its loop thread");
}

void EventLoop::Run() {
  GEV_CHECK(loop_thread_.load() == std::thread::id(), "EventLoop::Run() called twice");
  {
    // A finished loop refuses tasks, its own teardown tasks included: it cannot run again.
    std::lock_guard<std::mutex> lock(tasks_mutex_);
    GEV_CHECK(!finished_, "EventLoop::Run() called again after it returned");
  }
  loop_thread_.store(std::this_thread::get_id(), std::memory_order_release);
  while (!stop_.load(std::memory_order_acquire)) {
    int64_t timeout = timers_.NextTimeoutMs(NowMs());
    if (PrepareToSleep()) timeout = 0;
    if (timeout > INT32_MAX) timeout = INT32_MAX;
    batch_ = poller_->Wait(static_cast<int>(timeout));
    sleeping_.store(false, std::memory_order_seq_cst);
    poll_count_.fetch_add(1, std::memory_order_relaxed);
    for (batch_position_ = 0; batch_position_ < batch_.size(); ++batch_position_) {
      uint64_t tag = batch_[batch_position_].tag;
      if (tag == kVoidedTag) continue;  // Its handler was removed earlier in this batch.
      callbacks_[tag & kCallbackBits](reinterpret_cast<void*>(tag & ~kCallbackBits),
                                      batch_[batch_position_]);
    }
    batch_ = {};
    timers_.Advance(NowMs());
    RunQueuedTasks();
    RunBeforePollTasks();
  }
  // Tasks queued by these tasks run too (a connection's teardown follows its close as a task),
  // and so do tasks other threads queue until the loop is marked finished.
  while (true) {
    RunBeforePollTasks();
    {
      std::lock_guard<std::mutex> lock(tasks_mutex_);
      if (tasks_.empty()) {
        finished_ = true;
        break;
      }
    }
    RunQueuedTasks();
  }
  // Their callbacks may hold what keeps this loop alive; none of them can run any more.
  timers_.CancelAll();
  loop_thread_.store(std::thread::id(), std::memory_order_release);
}

bool EventLoop::PrepareToSleep() {
  // Publish "asleep" before looking at the queue: a producer that queues after our look sees
  // the flag and wakes us; one that queued before it is seen here.
  sleeping_.store(true, std::memory_order_seq_cst);
  std::lock_guard<std::mutex> lock(tasks_mutex_);
  if (tasks_.empty()) return false;
  sleeping_.store(false, std::memory_order_relaxed);
  return true;
}

void EventLoop::Stop() {
  stop_.store(true, std::memory_order_release);
  if (!IsInLoopThread()) Wake();
}

void EventLoop::Wake() {
  wakeup_count_.fetch_add(1, std::memory_order_relaxed);
  poller_->Wakeup();
}

bool EventLoop::RunInLoop(Task task) {
  if (IsInLoopThread()) {
    task();
    return true;
  }
  return QueueInLoop(std::move(task));
}

bool EventLoop::QueueInLoop(Task task) {
  {
    std::unique_lock<std::mutex> lock(tasks_mutex_);
    if (finished_) {
      lock.unlock();
      // Destroyed here, unlocked: its captures' destructors may queue tasks themselves.
      Task refused = std::move(task);
      return false;
    }
    tasks_.push_back(std::move(task));
  }
  // Only a loop that is asleep (or committed to sleeping) needs the system call, and only the
  // first producer to notice pays it.
  if (sleeping_.load(std::memory_order_seq_cst) && sleeping_.exchange(false)) Wake();
  return true;
}

void EventLoop::RunQueuedTasks() {
  // Swapped out under the lock so tasks run unlocked and may queue more (run next round).
  {
    std::lock_guard<std::mutex> lock(tasks_mutex_);
    if (tasks_.empty()) return;
    running_tasks_.swap(tasks_);
  }
  for (Task& task : running_tasks_) task();
  tasks_run_.fetch_add(running_tasks_.size(), std::memory_order_relaxed);
  running_tasks_.clear();
}

void EventLoop::RunBeforePollTasks() {
  // Swapped out so a task may queue another, which runs in a further turn of this loop.
  while (!before_poll_.empty()) {
    running_before_poll_.swap(before_poll_);
    for (Task& task : running_before_poll_) task();
    running_before_poll_.clear();
  }
}

TimerId EventLoop::ScheduleTimer(absl::Duration delay, absl::Duration interval, Task task) {
  TimerId id = next_timer_id_.fetch_add(1, std::memory_order_relaxed);
  uint64_t due = NowMs() + ToTicks(delay);
  uint64_t interval_ticks = interval == absl::ZeroDuration() ? 0 : ToTicks(interval);
  if (IsInLoopThread()) {
    timers_.Schedule(id, due, interval_ticks, std::move(task));
  } else {
    // Refused once the loop has finished: the timer could never fire.
    (void)QueueInLoop([this, id, due, interval_ticks, task = std::move(task)]() mutable {
      timers_.Schedule(id, due, interval_ticks, std::move(task));
    });
  }
  return id;
}

TimerId EventLoop::RunAfter(absl::Duration delay, Task task) {
  return ScheduleTimer(delay, absl::ZeroDuration(), std::move(task));
}

TimerId EventLoop::RunEvery(absl::Duration interval, Task task) {
  return ScheduleTimer(interval, interval, std::move(task));
}

void EventLoop::Cancel(TimerId id) {
  if (IsInLoopThread()) {
    timers_.Cancel(id);
  } else {
    // Refused once the loop has finished, when no timer is left to cancel.
    (void)QueueInLoop([this, id] { timers_.Cancel(id); });
  }
}

absl::Status EventLoop::AddHandler(int fd, Interest interest, EventHandler* handler) {
  return AddHandler(fd, interest, handler, &DeliverToEventHandler);
}

absl::StatusOr<uint64_t> EventLoop::TagFor(void* object, EventCallback callback) {
  uint64_t address = reinterpret_cast<uintptr_t>(object);
  if (object == nullptr || (address & kCallbackBits) != 0) {
    return absl::InvalidArgumentError("an event handler's object must be aligned to 8 bytes");
  }
  // A loop sees a handful of different callbacks (connections, and EventHandlers).
  size_t which = std::find(callbacks_.begin(), callbacks_.end(), callback) - callbacks_.begin();
  if (which == callbacks_.size()) {
    if (which == kMaxCallbacks) {
      return absl::ResourceExhaustedError(
          absl::StrCat("a loop delivers to at most ", kMaxCallbacks, " different callbacks"));
    }
    callbacks_.push_back(callback);
  }
  return address | which;
}

absl::Status EventLoop::AddHandler(int fd, Interest interest, void* object,
                                   EventCallback callback) {
  AssertInLoopThread();
  absl::StatusOr<uint64_t> tag = TagFor(object, callback);
  if (!tag.ok()) return tag.status();
  absl::Status status = poller_->Add(fd, interest, *tag);
  if (absl::IsAlreadyExists(status)) {
    return absl::AlreadyExistsError(absl::StrCat("fd ", fd, " already has a handler"));
  }
  if (!status.ok()) return status;
  ++handler_count_;
  return absl::OkStatus();
}

absl::Status EventLoop::UpdateInterest(int fd, Interest interest, EventHandler* handler) {
  return UpdateInterest(fd, interest, handler, &DeliverToEventHandler);
}

absl::Status EventLoop::UpdateInterest(int fd, Interest interest, void* object,
                                       EventCallback callback) {
  AssertInLoopThread();
  absl::StatusOr<uint64_t> tag = TagFor(object, callback);
  if (!tag.ok()) return tag.status();
  return poller_->Modify(fd, interest, *tag);
}

absl::Status EventLoop::RemoveHandler(int fd, EventHandler* handler) {
  return RemoveHandler(fd, static_cast<const void*>(handler));
}

absl::Status EventLoop::RemoveHandler(int fd, const void* object) {
  AssertInLoopThread();
  // Whatever the poller says, the object gets no more of this batch's events (all of them,
  // whichever descriptor: polling is level-triggered, so a live one reports again).
  uint64_t address = reinterpret_cast<uintptr_t>(object);
  for (size_t i = batch_position_ + 1; i < batch_.size(); ++i) {
    if ((batch_[i].tag & ~kCallbackBits) == address) batch_[i].tag = kVoidedTag;
  }
  absl::Status status = poller_->Remove(fd);
  if (absl::IsNotFound(status)) {
    return absl::NotFoundError(absl::StrCat("fd ", fd, " has no handler"));
  }
  // Any other failure (EBADF: a descriptor closed before its removal, which closing already
  // unregistered) leaves it unpolled all the same.
  --handler_count_;
  return status;
}

}  // namespace gev

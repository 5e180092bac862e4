// -----------------------------------------------------------------------------
// File: eventloop/timing_wheel.h
// -----------------------------------------------------------------------------
//
// `gev::TimingWheel` keeps an event loop's timers: a hierarchical timing wheel with millisecond
// ticks, six levels of 64 slots (level L holds timers due within 64^(L+1) ms), so delays from
// 1 ms to years fit. Scheduling and cancelling are O(1): a timer is a node in an intrusive list
// of its slot, found by id through a hash map; firing walks only occupied slots (an occupancy
// bitmap per level lets `Advance` jump over empty ticks). `NextTimeoutMs` tells the loop how long
// it may sleep before the wheel needs it again, so an idle loop does not tick.
//
// Periodic timers do not drift: the n-th run of a timer started at T with interval I is due at
// T + n*I; the runs missed while the loop was stalled coalesce into one instead of bunching up.
//
// Example (on the loop thread):
//
//   gev::TimingWheel wheel(/*now_ms=*/0);
//   wheel.Schedule(/*id=*/1, /*due_ms=*/50, /*interval_ms=*/0, [] { Expire(); });
//   int64_t sleep_ms = wheel.NextTimeoutMs(now_ms);   // -1 when no timer is pending
//   wheel.Advance(now_ms);                              // fires everything due by now_ms
//
// Thread safety: none; the owning loop uses it from its own thread only. Callbacks may schedule
// and cancel timers, themselves included.

#ifndef GEV_EVENTLOOP_TIMING_WHEEL_H_
#define GEV_EVENTLOOP_TIMING_WHEEL_H_

#if __cplusplus < 201703L
#error "gev needs C++17: compile with -std=c++17 (with Bazel: build --cxxopt=-std=c++17 in .bazelrc)"
#endif

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"

namespace gev {

class TimingWheel {
 public:
  using Callback = absl::AnyInvocable<void()>;

  explicit TimingWheel(uint64_t now_ms);
  TimingWheel(const TimingWheel&) = delete;
  TimingWheel& operator=(const TimingWheel&) = delete;

  // TimingWheel::Schedule() — runs `callback` at `due_ms` (no earlier than the next tick), then
  // every `interval_ms` if it is non-zero. `id` must be unique among pending timers.
  void Schedule(uint64_t id, uint64_t due_ms, uint64_t interval_ms, Callback callback);

  // TimingWheel::Cancel() — stops a pending or periodic timer; returns false if `id` is not
  // pending (it already fired, was cancelled, or never existed). Safe from inside any callback.
  bool Cancel(uint64_t id);

  // TimingWheel::CancelAll() — cancels every pending timer, destroying its callback (and what
  // it holds). Not from inside a callback.
  void CancelAll();

  // TimingWheel::Advance() — fires, in due order, every timer due at or before `now_ms`.
  // Returns how many callbacks ran.
  size_t Advance(uint64_t now_ms);

  // TimingWheel::NextTimeoutMs() — milliseconds from `now_ms` until Advance() has work to do
  // (0 if it has now), or -1 when no timer is pending.
  int64_t NextTimeoutMs(uint64_t now_ms) const;

  size_t size() const { return ids_.size(); }
  uint64_t current_ms() const { return current_; }

 private:
  static constexpr int kLevels = 6;
  static constexpr int kSlotBits = 6;
  static constexpr int kSlots = 1 << kSlotBits;
  static constexpr uint32_t kNil = UINT32_MAX;
  static constexpr uint8_t kFiringList = 0xff;  // Node.level of nodes detached for firing.

  enum class State : uint8_t { kFree, kPending, kFiring, kCancelledWhileFiring };

  struct Node {
    uint64_t id = 0;
    uint64_t due = 0;
    uint64_t interval = 0;
    Callback callback;
    uint32_t prev = kNil;
    uint32_t next = kNil;
    uint8_t level = 0;
    uint8_t slot = 0;
    State state = State::kFree;
  };

  struct List {
    uint32_t head = kNil;
    uint32_t tail = kNil;
  };

  uint32_t AllocateNode();
  void FreeNode(uint32_t index);
  List& ListOf(const Node& node);
  void Link(uint32_t index);    // Places a pending node by its due time.
  void Unlink(uint32_t index);  // Takes a node out of whatever list holds it.
  void Cascade(int level, int slot);
  size_t FireSlot(int slot);
  uint64_t TicksToNextLevel0Work() const;

  uint64_t current_;        // The last tick processed.
  uint64_t advancing_to_ = 0;  // The now_ms of the Advance() in progress.
  List slots_[kLevels][kSlots];
  uint64_t occupied_[kLevels] = {};  // Bit s set: slot s of that level is non-empty.
  List firing_;                      // The slot being fired, detached so callbacks may cancel.
  std::vector<Node> nodes_;
  std::vector<uint32_t> free_nodes_;
  absl::flat_hash_map<uint64_t, uint32_t> ids_;
};

}  // namespace gev

#endif  // GEV_EVENTLOOP_TIMING_WHEEL_H_

// -----------------------------------------------------------------------------
// File: net/deadline_timer.h
// -----------------------------------------------------------------------------
//
// `gev::DeadlineTimer` is the one timer slot a connection has on its loop's timing wheel, used
// for one deadline at a time: its transport's handshake, then its idle timeout, or the time a
// close for an error gives its output. `gev::ActivityStamp` notes when the connection was last
// active. An idle timeout is one timer per idle period, not one per read: activity only notes
// the time (Touch), and the timer, when it fires, sleeps again for what is left
// (IdleRemaining).
//
//   timer.Arm(loop, timeout, [weak] { if (auto c = weak.lock()) c->OnIdle(); });
//   stamp.Touch(loop.NowMs());                        // on every read and write
//   void OnIdle() {
//     timer.Fired();
//     absl::Duration left = stamp.IdleRemaining(loop.NowMs(), timeout);
//     if (left == absl::ZeroDuration()) { close; } else { timer.Arm(loop, left, ...); }
//   }
//
// Eight and four bytes: a connection's size is part of the library's promise, so the callback
// is given on each Arm (the wheel holds it), not kept here, and the stamp keeps the clock's
// milliseconds modulo 2^32, which measures quiet periods of up to kMaxQuiet (12 days).
//
// Thread safety: loop thread only, as the connection that owns it.

#ifndef GEV_NET_DEADLINE_TIMER_H_
#define GEV_NET_DEADLINE_TIMER_H_

#include <algorithm>
#include <cstdint>
#include <utility>

#include "absl/time/time.h"
#include "eventloop/event_loop.h"

namespace gev {

class DeadlineTimer {
 public:
  // DeadlineTimer::Arm() — runs `fire` on the loop thread after `delay`, in place of whatever
  // deadline was armed (cancelled). `fire` should call Fired() first.
  void Arm(EventLoop& loop, absl::Duration delay, EventLoop::Task fire) {
    Cancel(loop);
    id_ = loop.RunAfter(delay, std::move(fire));
  }
  // DeadlineTimer::Cancel() — the armed deadline, if any, will not fire.
  void Cancel(EventLoop& loop) {
    if (id_ == 0) return;
    loop.Cancel(id_);
    id_ = 0;
  }
  // DeadlineTimer::Fired() — the armed deadline's callback runs: nothing is armed any more.
  void Fired() { id_ = 0; }
  bool armed() const { return id_ != 0; }

 private:
  TimerId id_ = 0;
};

class ActivityStamp {
 public:
  // The longest timeout measured, 2^30 ms (12.4 days); longer ones are taken as this. Half the
  // stamp's signed range, so that a timer armed for at most this long (arm with
  // IdleRemaining, or min(timeout, kMaxQuiet)) may fire as late as that again and still read
  // the quiet right.
  static constexpr absl::Duration kMaxQuiet = absl::Milliseconds(int64_t{1} << 30);

  // ActivityStamp::Touch() — there was activity at `now_ms` (EventLoop::NowMs).
  void Touch(uint64_t now_ms) { last_active_ms_ = static_cast<uint32_t>(now_ms); }
  // ActivityStamp::IdleRemaining() — how much longer the quiet must last, at `now_ms`, before
  // `timeout` of it has passed since the last Touch; zero once it has.
  absl::Duration IdleRemaining(uint64_t now_ms, absl::Duration timeout) const {
    int64_t timeout_ms = absl::ToInt64Milliseconds(std::min(timeout, kMaxQuiet));
    // Modulo 2^32, signed: a clock read before the touch (another thread's stale NowMs) comes
    // out negative, and is no time at all.
    int32_t quiet_for = static_cast<int32_t>(static_cast<uint32_t>(now_ms) - last_active_ms_);
    if (quiet_for < 0) quiet_for = 0;
    if (quiet_for >= timeout_ms) return absl::ZeroDuration();
    return absl::Milliseconds(timeout_ms - quiet_for);
  }

 private:
  uint32_t last_active_ms_ = 0;
};

}  // namespace gev

#endif  // GEV_NET_DEADLINE_TIMER_H_

#include "net/deadline_timer.h"

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <thread>

#include "absl/time/time.h"
#include "eventloop/event_loop.h"
#include "gtest/gtest.h"

namespace gev {
namespace {

TEST(ActivityStampTest, IdleRemainingCountsFromTheLastTouch) {
  EXPECT_EQ(sizeof(ActivityStamp), 4u);
  EXPECT_EQ(sizeof(DeadlineTimer), 8u);
  ActivityStamp stamp;
  stamp.Touch(1000);
  EXPECT_EQ(stamp.IdleRemaining(1000, absl::Milliseconds(300)), absl::Milliseconds(300));
  EXPECT_EQ(stamp.IdleRemaining(1200, absl::Milliseconds(300)), absl::Milliseconds(100));
  EXPECT_EQ(stamp.IdleRemaining(1300, absl::Milliseconds(300)), absl::ZeroDuration());
  EXPECT_EQ(stamp.IdleRemaining(5000, absl::Milliseconds(300)), absl::ZeroDuration());
  stamp.Touch(1250);  // Activity moves the deadline; nothing is re-armed for it.
  EXPECT_EQ(stamp.IdleRemaining(1300, absl::Milliseconds(300)), absl::Milliseconds(250));
  // A clock read before the touch (another thread's stale NowMs) is no time at all.
  EXPECT_EQ(stamp.IdleRemaining(1200, absl::Milliseconds(300)), absl::Milliseconds(300));
}

TEST(ActivityStampTest, MeasuresAcrossTheWrapOfItsThirtyTwoBitsAndCapsLongTimeouts) {
  ActivityStamp stamp;
  const uint64_t before_wrap = (uint64_t{5} << 32) - 100;  // A loop up for about 250 days.
  stamp.Touch(before_wrap);
  EXPECT_EQ(stamp.IdleRemaining(before_wrap + 250, absl::Milliseconds(300)),
            absl::Milliseconds(50));
  EXPECT_EQ(stamp.IdleRemaining(before_wrap + 300, absl::Milliseconds(300)),
            absl::ZeroDuration());
  EXPECT_EQ(stamp.IdleRemaining(before_wrap - 10, absl::Milliseconds(300)),
            absl::Milliseconds(300));
  // Thirty days of timeout count as the 12.4 days a stamp measures; ten days of quiet leave
  // the rest of those, and a timer that fires late, past them, still finds them over.
  const uint64_t ten_days = 10ull * 24 * 3600 * 1000;
  EXPECT_EQ(stamp.IdleRemaining(before_wrap + ten_days, absl::Hours(24 * 30)),
            ActivityStamp::kMaxQuiet - absl::Milliseconds(ten_days));
  const uint64_t max_quiet_ms = uint64_t{1} << 30;
  for (uint64_t late : {uint64_t{0}, uint64_t{1}, uint64_t{3600} * 1000, max_quiet_ms - 1}) {
    EXPECT_EQ(stamp.IdleRemaining(before_wrap + max_quiet_ms + late, absl::Hours(24 * 30)),
              absl::ZeroDuration())
        << late;
  }
}

// A loop on a thread of its own; `Do` runs on it and waits.
class LoopThread {
 public:
  LoopThread() : loop_(*EventLoop::Create()), thread_([this] { loop_->Run(); }) {}
  ~LoopThread() {
    loop_->Stop();
    thread_.join();
  }
  template <typename F>
  void Do(F f) {
    std::promise<void> done;
    loop_->RunInLoop([&] {
      f(*loop_);
      done.set_value();
    });
    done.get_future().wait();
  }

 private:
  std::shared_ptr<EventLoop> loop_;
  std::thread thread_;
};

TEST(DeadlineTimerTest, FiresOnceAfterTheDelay) {
  LoopThread loop;
  DeadlineTimer timer;
  std::promise<absl::Time> fired;
  absl::Time armed_at = absl::Now();
  loop.Do([&](EventLoop& l) {
    timer.Arm(l, absl::Milliseconds(50), [&] {
      timer.Fired();
      fired.set_value(absl::Now());
    });
    EXPECT_TRUE(timer.armed());
  });
  absl::Time at = fired.get_future().get();
  EXPECT_GE(at - armed_at, absl::Milliseconds(45));
  loop.Do([&](EventLoop&) { EXPECT_FALSE(timer.armed()); });
}

TEST(DeadlineTimerTest, ArmReplacesTheArmedDeadlineAndCancelStopsIt) {
  LoopThread loop;
  DeadlineTimer timer;
  std::atomic<int> first{0}, second{0}, cancelled{0};
  loop.Do([&](EventLoop& l) {
    timer.Arm(l, absl::Milliseconds(20), [&] { ++first; });
    timer.Arm(l, absl::Milliseconds(40), [&] {  // In its place.
      timer.Fired();
      ++second;
    });
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(first.load(), 0);
  EXPECT_EQ(second.load(), 1);
  loop.Do([&](EventLoop& l) {
    timer.Arm(l, absl::Milliseconds(20), [&] { ++cancelled; });
    timer.Cancel(l);
    EXPECT_FALSE(timer.armed());
    timer.Cancel(l);  // Nothing armed: no-op.
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(cancelled.load(), 0);
}

TEST(DeadlineTimerTest, ACallbackMayArmTheNextDeadline) {
  LoopThread loop;
  DeadlineTimer timer;
  std::promise<void> done;
  int runs = 0;
  EventLoop* loop_of_test = nullptr;
  std::function<void()> fire;  // Re-arms itself twice, as an idle timer after activity does.
  fire = [&] {
    timer.Fired();
    if (++runs < 3) {
      timer.Arm(*loop_of_test, absl::Milliseconds(10), [&] { fire(); });
    } else {
      done.set_value();
    }
  };
  loop.Do([&](EventLoop& l) {
    loop_of_test = &l;
    timer.Arm(l, absl::Milliseconds(10), [&] { fire(); });
  });
  done.get_future().wait();
  EXPECT_EQ(runs, 3);
}

}  // namespace
}  // namespace gev

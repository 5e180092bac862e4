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

TEST(DeadlineTimerTest, IdleRemainingCountsFromTheLastTouch) {
  DeadlineTimer timer;
  timer.Touch(1000);
  EXPECT_EQ(timer.IdleRemaining(1000, absl::Milliseconds(300)), absl::Milliseconds(300));
  EXPECT_EQ(timer.IdleRemaining(1200, absl::Milliseconds(300)), absl::Milliseconds(100));
  EXPECT_EQ(timer.IdleRemaining(1300, absl::Milliseconds(300)), absl::ZeroDuration());
  EXPECT_EQ(timer.IdleRemaining(5000, absl::Milliseconds(300)), absl::ZeroDuration());
  timer.Touch(1250);  // Activity moves the deadline; nothing is re-armed for it.
  EXPECT_EQ(timer.IdleRemaining(1300, absl::Milliseconds(300)), absl::Milliseconds(250));
  // A clock read before the touch (another thread's stale NowMs) is no time at all.
  EXPECT_EQ(timer.IdleRemaining(1200, absl::Milliseconds(300)), absl::Milliseconds(300));
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

#include "eventloop/timing_wheel.h"

#include <algorithm>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace gev {
namespace {

TEST(TimingWheelTest, FiresInDueOrderNotScheduleOrder) {
  TimingWheel wheel(0);
  std::vector<int> order;
  wheel.Schedule(1, 30, 0, [&] { order.push_back(30); });
  wheel.Schedule(2, 10, 0, [&] { order.push_back(10); });
  wheel.Schedule(3, 5000, 0, [&] { order.push_back(5000); });
  wheel.Schedule(4, 70, 0, [&] { order.push_back(70); });
  wheel.Schedule(5, 10, 0, [&] { order.push_back(11); });  // Same tick: schedule order.
  EXPECT_EQ(wheel.Advance(9), 0u);
  EXPECT_EQ(wheel.Advance(10), 2u);
  EXPECT_EQ(wheel.Advance(6000), 3u);
  EXPECT_EQ(order, (std::vector<int>{10, 11, 30, 70, 5000}));
  EXPECT_EQ(wheel.size(), 0u);
}

TEST(TimingWheelTest, NeverFiresEarlyAcrossLevels) {
  // Random delays up to ~3 days, checked against the time each one fires at.
  std::mt19937_64 rng(3);
  TimingWheel wheel(123);
  std::vector<std::pair<uint64_t, uint64_t>> fired;  // (due, fired at)
  uint64_t now = 123;
  for (uint64_t id = 1; id <= 2000; ++id) {
    uint64_t delay = 1 + rng() % (id % 4 == 0 ? 260000000ull : 70000ull);
    uint64_t due = now + delay;
    wheel.Schedule(id, due, 0, [&fired, &now, due] { fired.emplace_back(due, now); });
  }
  // Advance in uneven steps, as a loop waking at odd times would.
  while (wheel.size() > 0) {
    int64_t timeout = wheel.NextTimeoutMs(now);
    ASSERT_GE(timeout, 0);
    now += static_cast<uint64_t>(timeout) + rng() % 3;
    wheel.Advance(now);
  }
  ASSERT_EQ(fired.size(), 2000u);
  for (auto [due, at] : fired) {
    EXPECT_GE(at, due);
    EXPECT_LE(at, due + 2);  // Late only by the uneven steps above.
  }
  EXPECT_TRUE(std::is_sorted(fired.begin(), fired.end()));
}

TEST(TimingWheelTest, NextTimeoutFollowsTheEarliestTimer) {
  TimingWheel wheel(1000);
  EXPECT_EQ(wheel.NextTimeoutMs(1000), -1);
  wheel.Schedule(1, 1050, 0, [] {});
  EXPECT_EQ(wheel.NextTimeoutMs(1000), 50);
  EXPECT_EQ(wheel.NextTimeoutMs(1020), 30);
  EXPECT_EQ(wheel.NextTimeoutMs(1060), 0);
  wheel.Schedule(2, 1010, 0, [] {});
  EXPECT_EQ(wheel.NextTimeoutMs(1000), 10);
  wheel.Cancel(2);
  EXPECT_EQ(wheel.NextTimeoutMs(1000), 50);
}

TEST(TimingWheelTest, FarTimerWakesOnlyAtCascadePoints) {
  // A timer a minute away must not make the loop tick every millisecond: count the wakeups a
  // loop obeying NextTimeoutMs would make.
  TimingWheel wheel(0);
  bool fired = false;
  wheel.Schedule(1, 60000, 0, [&] { fired = true; });
  uint64_t now = 0;
  int wakeups = 0;
  while (!fired && wakeups < 1000) {
    now += static_cast<uint64_t>(wheel.NextTimeoutMs(now));
    wheel.Advance(now);
    ++wakeups;
  }
  EXPECT_TRUE(fired);
  EXPECT_EQ(now, 60000u);
  EXPECT_LE(wakeups, 4);
}

TEST(TimingWheelTest, CancelPreventsFiringAndReportsUnknownIds) {
  TimingWheel wheel(0);
  int fired = 0;
  wheel.Schedule(1, 10, 0, [&] { ++fired; });
  wheel.Schedule(2, 100000, 0, [&] { ++fired; });
  EXPECT_TRUE(wheel.Cancel(1));
  EXPECT_TRUE(wheel.Cancel(2));
  EXPECT_FALSE(wheel.Cancel(1));
  EXPECT_FALSE(wheel.Cancel(99));
  wheel.Advance(200000);
  EXPECT_EQ(fired, 0);
  EXPECT_EQ(wheel.NextTimeoutMs(200000), -1);
}

TEST(TimingWheelTest, CancelOfAFiredTimerIsHarmless) {
  TimingWheel wheel(0);
  int fired = 0;
  wheel.Schedule(1, 5, 0, [&] { ++fired; });
  wheel.Advance(5);
  EXPECT_FALSE(wheel.Cancel(1));
  EXPECT_EQ(fired, 1);
}

TEST(TimingWheelTest, CallbackMayCancelItselfAndOthersDueSameTick) {
  TimingWheel wheel(0);
  std::vector<int> ran;
  wheel.Schedule(1, 10, 10, [&] {
    ran.push_back(1);
    wheel.Cancel(1);  // Periodic timer stops itself.
    wheel.Cancel(2);  // Same tick, not yet run.
  });
  wheel.Schedule(2, 10, 0, [&] { ran.push_back(2); });
  wheel.Schedule(3, 10, 0, [&] { ran.push_back(3); });
  wheel.Advance(100);
  EXPECT_EQ(ran, (std::vector<int>{1, 3}));
  EXPECT_EQ(wheel.size(), 0u);
}

TEST(TimingWheelTest, CancelAllDestroysEveryCallbackEvenOnesScheduledByDestructors) {
  TimingWheel wheel(0);
  int destroyed = 0;
  struct CountsDestruction {
    CountsDestruction(int* destroyed, TimingWheel* wheel, bool schedules_another)
        : destroyed(destroyed), wheel(wheel), schedules_another(schedules_another) {}
    int* destroyed;
    TimingWheel* wheel;
    bool schedules_another;
    ~CountsDestruction() {
      ++*destroyed;
      if (schedules_another) {
        wheel->Schedule(99, 5, 0,
                        [last = std::make_shared<CountsDestruction>(destroyed, nullptr, false)] {});
      }
    }
  };
  for (uint64_t id = 1; id <= 3; ++id) {
    wheel.Schedule(id, id * 1000, id == 2 ? 10 : 0,
                   [c = std::make_shared<CountsDestruction>(&destroyed, &wheel, id == 3)] {});
  }
  wheel.CancelAll();
  EXPECT_EQ(wheel.size(), 0u);
  EXPECT_EQ(destroyed, 4);  // Three, and the one the third scheduled as it went.
  EXPECT_EQ(wheel.Advance(100000), 0u);
}

TEST(TimingWheelTest, CallbackMaySchedule) {
  TimingWheel wheel(0);
  std::vector<uint64_t> at;
  wheel.Schedule(1, 10, 0, [&] {
    at.push_back(wheel.current_ms());
    for (uint64_t id = 100; id < 200; ++id) wheel.Schedule(id, 20, 0, [] {});  // Grows nodes.
    wheel.Schedule(2, 15, 0, [&] { at.push_back(wheel.current_ms()); });
  });
  wheel.Advance(30);
  EXPECT_EQ(at, (std::vector<uint64_t>{10, 15}));
}

TEST(TimingWheelTest, PeriodicTimerDoesNotDrift) {
  TimingWheel wheel(0);
  std::vector<uint64_t> at;
  wheel.Schedule(1, 7, 7, [&] { at.push_back(wheel.current_ms()); });
  // Advance at irregular moments; runs still land on multiples of 7.
  for (uint64_t now : {3u, 8u, 20u, 22u, 35u, 36u, 50u}) wheel.Advance(now);
  EXPECT_EQ(at, (std::vector<uint64_t>{7, 14, 21, 28, 35, 42, 49}));
}

TEST(TimingWheelTest, PeriodicTimerSkipsRunsMissedInAStall) {
  TimingWheel wheel(0);
  std::vector<uint64_t> at;
  wheel.Schedule(1, 10, 10, [&] { at.push_back(wheel.current_ms()); });
  wheel.Advance(10);
  // A 1 s stall: the runs missed in it coalesce into one (at 1000), not 99 back to back, and
  // the cadence (multiples of 10) holds.
  wheel.Advance(1000);
  EXPECT_EQ(at, (std::vector<uint64_t>{10, 20, 1000}));
  EXPECT_EQ(wheel.NextTimeoutMs(1000), 10);
  wheel.Advance(1010);
  EXPECT_EQ(at.back(), 1010u);
}

}  // namespace
}  // namespace gev

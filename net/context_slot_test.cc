#include "net/context_slot.h"

#include <atomic>
#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace gev {
namespace {

TEST(ContextSlotTest, HoldsOneValueOfAnyType) {
  ContextSlot slot;
  EXPECT_FALSE(slot.Get().has_value());
  EXPECT_EQ(slot.As<int>(), nullptr);
  slot.Set(std::string("session"));
  EXPECT_EQ(std::any_cast<std::string>(slot.Get()), "session");
  ASSERT_NE(slot.As<std::string>(), nullptr);
  EXPECT_EQ(slot.As<int>(), nullptr);  // Another type.
  slot.As<std::string>()->append(" 2");  // In place.
  EXPECT_EQ(std::any_cast<std::string>(slot.Get()), "session 2");
  slot.Set(42);
  EXPECT_EQ(slot.As<std::string>(), nullptr);
  ASSERT_NE(slot.As<int>(), nullptr);
  EXPECT_EQ(*slot.As<int>(), 42);
}

// The replaced value is destroyed outside the lock: a destructor that reads the slot (or takes
// its time) does not hang the Set that replaced it.
struct ReadsTheSlotWhenDestroyed {
  ReadsTheSlotWhenDestroyed(ContextSlot* slot_in, std::atomic<bool>* read_back_in)
      : slot(slot_in), read_back(read_back_in) {}
  ReadsTheSlotWhenDestroyed(const ReadsTheSlotWhenDestroyed&) = default;
  ReadsTheSlotWhenDestroyed(ReadsTheSlotWhenDestroyed&& other) noexcept
      : slot(std::exchange(other.slot, nullptr)), read_back(other.read_back) {}
  ~ReadsTheSlotWhenDestroyed() {
    if (slot != nullptr) *read_back = slot->Get().has_value();
  }
  ContextSlot* slot;
  std::atomic<bool>* read_back;
};

TEST(ContextSlotTest, AReplacedValueIsDestroyedOutsideTheLock) {
  ContextSlot slot;
  std::atomic<bool> read_back{false};
  slot.Set(std::any(std::in_place_type<ReadsTheSlotWhenDestroyed>, &slot, &read_back));
  std::promise<void> replaced;
  std::future<void> done = replaced.get_future();
  // Detached: were the lock held, it would spin forever, and the test must still end.
  std::thread([&slot, &replaced] {
    slot.Set(7);
    replaced.set_value();
  }).detach();
  ASSERT_EQ(done.wait_for(std::chrono::seconds(5)), std::future_status::ready)
      << "Set hung: the old value was destroyed while the lock was held";
  EXPECT_TRUE(read_back.load());
}

TEST(ContextSlotTest, ThreadsSetAndGetWithoutTearingTheValue) {
  ContextSlot slot;
  slot.Set(std::string(64, 'a'));
  std::vector<std::thread> threads;
  std::atomic<bool> torn{false};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5000; ++i) {
        if (t % 2 == 0) {
          slot.Set(std::string(64, static_cast<char>('a' + (i % 26))));
        } else {
          std::string value = std::any_cast<std::string>(slot.Get());
          if (value.size() != 64 || value.find_first_not_of(value[0]) != std::string::npos) {
            torn = true;
          }
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_FALSE(torn.load());
}

}  // namespace
}  // namespace gev

#include "net/output_budget.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace gev {
namespace {

TEST(OutputBudgetTest, ReservesWholeOrNothing) {
  OutputBudget budget;
  EXPECT_TRUE(budget.Reserve(600, 1000));
  EXPECT_FALSE(budget.Reserve(401, 1000));
  EXPECT_EQ(budget.pending(), 600u);  // The refused reservation counted nothing.
  EXPECT_TRUE(budget.Reserve(400, 1000));
  EXPECT_FALSE(budget.Reserve(1, 1000));
  budget.Release(1000);
  EXPECT_TRUE(budget.NothingPending());
  EXPECT_FALSE(budget.Reserve(1001, 1000));  // Larger than the cap itself.
  EXPECT_TRUE(budget.NothingPending());
}

TEST(OutputBudgetTest, AddCountsPastTheCapAndReleaseGivesBack) {
  OutputBudget budget;
  ASSERT_TRUE(budget.Reserve(1000, 1000));
  budget.Add(50);  // Wire bytes for reserved bytes: never refused.
  EXPECT_EQ(budget.pending(), 1050u);
  budget.Release(1000);
  EXPECT_EQ(budget.pending(), 50u);
  EXPECT_FALSE(budget.NothingPending());
  budget.Release(50);
  EXPECT_TRUE(budget.NothingPending());
}

TEST(OutputBudgetTest, TheRefusalSaysHowMuchAndTheLimit) {
  OutputBudget budget;
  ASSERT_TRUE(budget.Reserve(700, 1000));
  absl::Status refused = budget.Exhausted(500, 1000);
  EXPECT_TRUE(absl::IsResourceExhausted(refused));
  EXPECT_EQ(refused.message(),
            "sending 500 bytes would take pending output (700 bytes) past its limit of 1000");
}

// Eight threads reserve and release at once: the count never passes the cap, and every byte
// reserved is released.
TEST(OutputBudgetTest, ThreadsNeverTakeItPastTheCap) {
  constexpr size_t kCap = 10000;
  OutputBudget budget;
  std::atomic<bool> over{false};
  std::atomic<uint64_t> granted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20000; ++i) {
        size_t n = 1 + static_cast<size_t>((i * 31 + t * 17) % 3000);
        if (!budget.Reserve(n, kCap)) continue;
        granted.fetch_add(1);
        if (budget.pending() > kCap) over = true;
        budget.Release(n);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_FALSE(over.load());
  EXPECT_GT(granted.load(), 0u);
  EXPECT_TRUE(budget.NothingPending());
}

}  // namespace
}  // namespace gev

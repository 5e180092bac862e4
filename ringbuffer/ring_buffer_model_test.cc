#include <chrono>
#include <cstdint>
#include <random>

#include "gtest/gtest.h"
#include "ringbuffer/ring_buffer_model.h"

namespace gev::ringbuffer_internal {
namespace {

// Thousands of random operation sequences against a std::deque model, from a fixed seed so a
// failure reproduces. Bounded in count and time.
TEST(RingBufferModelTest, RandomSequencesMatchDequeModel) {
  std::mt19937_64 rng(20261126);
  ChoiceSource next = [&rng](uint64_t bound) -> int64_t {
    return static_cast<int64_t>(rng() % bound);
  };
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  int sequences = 0;
  for (; sequences < 3000 && std::chrono::steady_clock::now() < deadline; ++sequences) {
    std::string failure = RunModelOperations(next, 400);
    ASSERT_EQ(failure, "") << "sequence " << sequences;
  }
  EXPECT_GE(sequences, 100);
}

// The model must be able to notice a broken buffer: a source that asks for a Peek comparison
// after writes proves the comparison path runs (a stuck model would report nothing).
TEST(RingBufferModelTest, ScriptedSequenceExercisesComparisons) {
  std::vector<int64_t> script = {0, 6, 40, 12, 3, 100, 4, 5, 12, 8, 10, 9, 0, 12};
  size_t i = 0;
  ChoiceSource next = [&](uint64_t bound) -> int64_t {
    if (i >= script.size()) return -1;
    return script[i++] % static_cast<int64_t>(bound);
  };
  EXPECT_EQ(RunModelOperations(next, 100), "");
  EXPECT_EQ(i, script.size());
}

}  // namespace
}  // namespace gev::ringbuffer_internal

// Runs the libFuzzer target on seeded random inputs, so the harness is compiled and exercised
// under every Bazel configuration (the coverage-guided run is tools/fuzz.sh, with clang).

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

TEST(RingBufferFuzzerReplayTest, RandomInputsKeepBufferAndModelInAgreement) {
  std::mt19937 rng(7);
  for (int input = 0; input < 300; ++input) {
    std::vector<uint8_t> bytes(rng() % 4096);
    for (uint8_t& byte : bytes) byte = static_cast<uint8_t>(rng());
    ASSERT_EQ(LLVMFuzzerTestOneInput(bytes.data(), bytes.size()), 0);
  }
}

}  // namespace

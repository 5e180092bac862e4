// Runs the protocol fuzz checks on seeded random and crafted inputs under every Bazel
// configuration (the coverage-guided runs are tools/fuzz.sh, with clang).

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/fuzz/protocol_fuzz_checks.h"

namespace gev::fuzz {
namespace {

std::vector<uint8_t> Bytes(const std::string& s) { return {s.begin(), s.end()}; }

TEST(ProtocolFuzzerReplayTest, RandomInputsHoldEveryProperty) {
  std::mt19937 random(11);
  for (int input = 0; input < 2000; ++input) {
    std::vector<uint8_t> bytes(random() % 2048);
    for (uint8_t& byte : bytes) {
      // Mostly small values and newlines, so headers fit and lines end now and then.
      byte = static_cast<uint8_t>(random() % 4 == 0 ? '\n' : random() % 8);
    }
    ASSERT_EQ(CheckLengthFieldDecoder(bytes.data(), bytes.size()), "") << "input " << input;
    ASSERT_EQ(CheckDelimiterDecoder(bytes.data(), bytes.size()), "") << "input " << input;
  }
}

TEST(ProtocolFuzzerReplayTest, CraftedInputs) {
  // config 1 (max 16), seed 0; two frames then an oversized header.
  std::vector<uint8_t> length_field = Bytes(std::string("\x01\x00", 2) +
                                            std::string("\x00\x00\x00\x03" "abc", 7) +
                                            std::string("\x00\x00\x00\x00", 4) +
                                            std::string("\x00\x00\x00\x11", 4));
  EXPECT_EQ(CheckLengthFieldDecoder(length_field.data(), length_field.size()), "");
  // config 9: "\r\n", max 4; a delimiter split over chunks and a line too long.
  std::vector<uint8_t> lines = Bytes(std::string("\x09\x05", 2) + "ab\r\n\r\nabcd\r\nabcde\r\n");
  EXPECT_EQ(CheckDelimiterDecoder(lines.data(), lines.size()), "");
}

}  // namespace
}  // namespace gev::fuzz

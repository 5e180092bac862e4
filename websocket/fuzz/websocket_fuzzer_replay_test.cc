// Runs the WebSocket fuzz checks on seeded random and generated inputs under every Bazel
// configuration (the coverage-guided runs are tools/fuzz.sh, with clang).

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "websocket/deflate.h"
#include "websocket/frame.h"
#include "websocket/fuzz/websocket_fuzz_checks.h"

namespace gev::websocket::fuzz {
namespace {

std::string Check(const std::string& bytes,
                  std::string (*check)(const uint8_t*, size_t)) {
  return check(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

// A peer's plausible stream: frames of every kind, mostly valid, sometimes one byte changed.
std::string GeneratedStream(std::mt19937& random, bool* deflate_out) {
  const bool client_reads = random() % 4 == 0;
  const bool deflate = random() % 2 == 0;
  *deflate_out = deflate;
  std::string bytes;
  bytes.push_back(static_cast<char>((client_reads ? 1 : 0) | (deflate ? 2 : 0)));
  bytes.push_back(static_cast<char>(random() % 64));  // The limit: 16 + 16 * this.
  bytes.push_back(static_cast<char>(random()));       // How it is cut.
  DeflateAgreement agreement;
  agreement.server_no_context_takeover = true;
  agreement.client_no_context_takeover = true;
  Deflater deflater(agreement, Role::kClient, 6);
  const int frames = 1 + static_cast<int>(random() % 8);
  bool in_message = false;
  for (int f = 0; f < frames; ++f) {
    std::string payload;
    size_t length = random() % 300;
    for (size_t i = 0; i < length; ++i) {
      payload.push_back(random() % 5 == 0 ? static_cast<char>(0xC3)
                                          : static_cast<char>(random() % 5 == 1 ? 0xA9 : 'a'));
    }
    Opcode opcode;
    bool fin = random() % 3 != 0;
    bool rsv1 = false;
    switch (random() % 6) {
      case 0: opcode = Opcode::kPing; payload.resize(std::min<size_t>(payload.size(), 125)); fin = true; break;
      case 1: opcode = in_message ? Opcode::kContinuation : Opcode::kBinary; break;
      case 2: opcode = Opcode::kClose; payload = ClosePayloadFor(1000, "bye"); fin = true; break;
      default: opcode = in_message ? Opcode::kContinuation : Opcode::kText; break;
    }
    if (deflate && (opcode == Opcode::kText || opcode == Opcode::kBinary) && random() % 2 == 0) {
      std::string compressed;
      if (deflater.Compress(payload, &compressed)) {
        payload = compressed;
        rsv1 = true;
      }
    }
    if (!IsControl(opcode)) in_message = !fin;
    char header[kMaxFrameHeader];
    std::optional<uint32_t> key;
    if (!client_reads) key = static_cast<uint32_t>(random());
    size_t n = WriteFrameHeader(header, opcode, fin, rsv1, payload.size(), key);
    if (key.has_value()) ApplyMask(payload.data(), payload.size(), *key, 0);
    bytes.append(header, n);
    bytes += payload;
  }
  if (random() % 2 == 0 && bytes.size() > 3) {
    bytes[3 + random() % (bytes.size() - 3)] = static_cast<char>(random());
  }
  return bytes;
}

TEST(WebSocketFuzzerReplayTest, GeneratedAndRandomStreamsHoldEveryProperty) {
  std::mt19937 random(6455);
  for (int input = 0; input < 3000; ++input) {
    bool deflate = false;
    std::string bytes = GeneratedStream(random, &deflate);
    ASSERT_EQ(Check(bytes, CheckMessageReader), "") << "input " << input;
  }
  for (int input = 0; input < 2000; ++input) {
    std::string bytes(random() % 512, '\0');
    for (char& c : bytes) c = static_cast<char>(random());
    ASSERT_EQ(Check(bytes, CheckMessageReader), "") << "random input " << input;
  }
}

// Found by the fuzzer in CI: a compressed message, fragmented, that is both corrupt and past
// the 16-byte limit: 1007 whole, 1009 in pieces. Both are allowed (see CheckMessageReader).
TEST(WebSocketFuzzerReplayTest, ACorruptCompressedMessagePastTheLimitFailsEitherWay) {
  const std::string hex =
      "330048412a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a00000000000000000000000000000000000000000000"
      "000000000000000000000040000000005700000000000000000000000000000000000000000e00000000000a"
      "3a";
  std::string bytes;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    bytes.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  ASSERT_EQ(bytes.size(), 89u);
  EXPECT_EQ(Check(bytes, CheckMessageReader), "");
}

TEST(WebSocketFuzzerReplayTest, Utf8AgreesWithADecoderOnBiasedRandomText) {
  std::mt19937 random(3629);
  for (int input = 0; input < 20000; ++input) {
    std::string bytes(random() % 64, '\0');
    for (char& c : bytes) {
      c = static_cast<char>(random() % 3 == 0 ? random() % 0x80 : 0x80 + random() % 0x78);
    }
    ASSERT_EQ(Check(bytes, CheckUtf8), "") << "input " << input;
  }
}

TEST(WebSocketFuzzerReplayTest, InflateIsBoundedAndRoundTrips) {
  std::mt19937 random(7692);
  for (int input = 0; input < 1500; ++input) {
    std::string bytes(2 + random() % 2048, '\0');
    for (char& c : bytes) c = static_cast<char>(random() % (input % 2 == 0 ? 4 : 256));
    ASSERT_EQ(Check(bytes, CheckInflate), "") << "input " << input;
  }
}

}  // namespace
}  // namespace gev::websocket::fuzz

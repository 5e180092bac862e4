#include "websocket/frame.h"

#include <cstring>
#include <random>
#include <string>

#include "gtest/gtest.h"
#include "websocket/utf8.h"

namespace gev::websocket {
namespace {

std::string Bytes(std::initializer_list<int> bytes) {
  std::string s;
  for (int b : bytes) s.push_back(static_cast<char>(b));
  return s;
}

constexpr uint64_t kNoLimit = ~uint64_t{0};

// RFC 6455, section 5.7: the examples, byte for byte.
TEST(FrameTest, ReadsTheRfcExamples) {
  FrameHeader header;
  std::string unmasked = Bytes({0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f});
  ASSERT_EQ(ReadFrameHeader(unmasked, Role::kClient, false, kNoLimit, &header).status,
            FrameCheck::kOk);
  EXPECT_TRUE(header.fin);
  EXPECT_EQ(header.opcode, Opcode::kText);
  EXPECT_FALSE(header.masked);
  EXPECT_EQ(header.payload_length, 5u);
  EXPECT_EQ(header.header_length, 2u);
  EXPECT_EQ(unmasked.substr(2), "Hello");

  std::string masked =
      Bytes({0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58});
  ASSERT_EQ(ReadFrameHeader(masked, Role::kServer, false, kNoLimit, &header).status,
            FrameCheck::kOk);
  EXPECT_TRUE(header.masked);
  EXPECT_EQ(header.header_length, 6u);
  std::string payload = masked.substr(6);
  ApplyMask(payload.data(), payload.size(), header.mask_key, 0);
  EXPECT_EQ(payload, "Hello");

  std::string first = Bytes({0x01, 0x03, 0x48, 0x65, 0x6c});
  ASSERT_EQ(ReadFrameHeader(first, Role::kClient, false, kNoLimit, &header).status,
            FrameCheck::kOk);
  EXPECT_FALSE(header.fin);
  EXPECT_EQ(header.opcode, Opcode::kText);
  std::string last = Bytes({0x80, 0x02, 0x6c, 0x6f});
  ASSERT_EQ(ReadFrameHeader(last, Role::kClient, false, kNoLimit, &header).status,
            FrameCheck::kOk);
  EXPECT_TRUE(header.fin);
  EXPECT_EQ(header.opcode, Opcode::kContinuation);

  std::string ping = Bytes({0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f});
  ASSERT_EQ(ReadFrameHeader(ping, Role::kClient, false, kNoLimit, &header).status,
            FrameCheck::kOk);
  EXPECT_EQ(header.opcode, Opcode::kPing);

  std::string binary256 = Bytes({0x82, 0x7E, 0x01, 0x00});
  ASSERT_EQ(ReadFrameHeader(binary256, Role::kClient, false, kNoLimit, &header).status,
            FrameCheck::kOk);
  EXPECT_EQ(header.payload_length, 256u);
  EXPECT_EQ(header.header_length, 4u);

  std::string binary64k = Bytes({0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0, 0});
  ASSERT_EQ(ReadFrameHeader(binary64k, Role::kClient, false, kNoLimit, &header).status,
            FrameCheck::kOk);
  EXPECT_EQ(header.payload_length, 65536u);
  EXPECT_EQ(header.header_length, 10u);
}

TEST(FrameTest, WritesWhatItReadsAtEveryLengthBoundaryAndWaitsForWholeHeaders) {
  for (uint64_t length : {0ull, 1ull, 125ull, 126ull, 127ull, 65535ull, 65536ull,
                          (1ull << 32) + 5, (1ull << 63) - 1}) {
    for (bool mask : {false, true}) {
      char out[kMaxFrameHeader];
      std::optional<uint32_t> key;
      if (mask) key = 0x12345678u;
      size_t n = WriteFrameHeader(out, Opcode::kBinary, true, false, length, key);
      std::string written(out, n);
      FrameHeader header;
      Role reader = mask ? Role::kServer : Role::kClient;
      ASSERT_EQ(ReadFrameHeader(written, reader, false, kNoLimit, &header).status,
                FrameCheck::kOk)
          << length;
      EXPECT_EQ(header.payload_length, length);
      EXPECT_EQ(header.header_length, n);
      EXPECT_EQ(header.masked, mask);
      if (mask) {
        EXPECT_EQ(header.mask_key, 0x12345678u);
      }
      for (size_t prefix = 0; prefix < n; ++prefix) {
        EXPECT_EQ(ReadFrameHeader(written.substr(0, prefix), reader, false, kNoLimit, &header)
                      .status,
                  FrameCheck::kNeedMore)
            << length << " cut at " << prefix;
      }
    }
  }
}

TEST(FrameTest, RefusesWhatRfc6455ForbidsWithTheRightCode) {
  struct Case {
    std::string bytes;
    Role reader;
    bool rsv1_allowed;
    uint16_t code;
  };
  const Case cases[] = {
      {Bytes({0xA1, 0x80, 0, 0, 0, 0}), Role::kServer, true, kCloseProtocolError},   // RSV2
      {Bytes({0x91, 0x80, 0, 0, 0, 0}), Role::kServer, true, kCloseProtocolError},   // RSV3
      {Bytes({0xC1, 0x80, 0, 0, 0, 0}), Role::kServer, false, kCloseProtocolError},  // RSV1
      {Bytes({0x83, 0x80, 0, 0, 0, 0}), Role::kServer, false, kCloseProtocolError},  // opcode 3
      {Bytes({0x8B, 0x80, 0, 0, 0, 0}), Role::kServer, false, kCloseProtocolError},  // opcode B
      {Bytes({0x81, 0x00}), Role::kServer, false, kCloseProtocolError},   // unmasked, to a server
      {Bytes({0x81, 0x80, 0, 0, 0, 0}), Role::kClient, false, kCloseProtocolError},  // masked
      {Bytes({0x09, 0x80, 0, 0, 0, 0}), Role::kServer, false, kCloseProtocolError},  // ping, no FIN
      {Bytes({0x89, 0xFE, 0, 126}), Role::kServer, false, kCloseProtocolError},  // 126-byte ping
      {Bytes({0xC9, 0x80, 0, 0, 0, 0}), Role::kServer, true, kCloseProtocolError},  // RSV1 ping
      {Bytes({0x82, 0xFE, 0, 125, 0, 0, 0, 0}), Role::kServer, false, kCloseProtocolError},
      {Bytes({0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0, 0, 0}), Role::kServer, false,
       kCloseProtocolError},  // 65535 in eight bytes: not the shortest form
      {Bytes({0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}), Role::kServer, false,
       kCloseProtocolError},  // 2^63
      {Bytes({0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0}),
       Role::kServer, false, kCloseMessageTooBig},  // 2^63 - 1, past the limit below
  };
  for (const Case& c : cases) {
    FrameHeader header;
    FrameCheck check = ReadFrameHeader(c.bytes, c.reader, c.rsv1_allowed, 1 << 20, &header);
    EXPECT_EQ(check.status, FrameCheck::kInvalid) << testing::PrintToString(c.bytes);
    EXPECT_EQ(check.close_code, c.code) << testing::PrintToString(c.bytes);
    EXPECT_STRNE(check.reason, "");
  }
  // The first two bytes suffice to refuse: a bad frame fails before its header is whole.
  FrameHeader header;
  EXPECT_EQ(ReadFrameHeader(Bytes({0x83, 0xFF}), Role::kServer, false, 1 << 20, &header).status,
            FrameCheck::kInvalid);
  // RSV1 where permessage-deflate allows it.
  EXPECT_EQ(ReadFrameHeader(Bytes({0xC1, 0x80, 0, 0, 0, 0}), Role::kServer, true, 1 << 20,
                            &header)
                .status,
            FrameCheck::kOk);
  EXPECT_TRUE(header.rsv1);
}

TEST(FrameTest, MaskingInPiecesEqualsMaskingWhole) {
  std::mt19937 random(6455);
  for (int round = 0; round < 500; ++round) {
    std::string payload(random() % 300, '\0');
    for (char& c : payload) c = static_cast<char>(random());
    uint32_t key = static_cast<uint32_t>(random());
    std::string whole = payload;
    ApplyMask(whole.data(), whole.size(), key, 0);
    // The plain definition: byte i XOR key byte i mod 4.
    unsigned char key_bytes[4];
    std::memcpy(key_bytes, &key, 4);
    for (size_t i = 0; i < payload.size(); ++i) {
      ASSERT_EQ(static_cast<unsigned char>(whole[i]),
                static_cast<unsigned char>(payload[i]) ^ key_bytes[i % 4]);
    }
    std::string pieces = payload;
    size_t offset = 0;
    while (offset < pieces.size()) {
      size_t piece = std::min<size_t>(pieces.size() - offset, random() % 17);
      ApplyMask(pieces.data() + offset, piece, key, offset);
      offset += piece;
    }
    ASSERT_EQ(pieces, whole) << round;
  }
}

TEST(FrameTest, ClosePayloadsAreCheckedAndMadeWithinAControlFrame) {
  ClosePayload close;
  EXPECT_TRUE(ParseClosePayload("", &close));
  EXPECT_EQ(close.code, kCloseNoStatus);
  EXPECT_FALSE(ParseClosePayload(Bytes({0x03}), &close));
  const std::string bye = Bytes({0x03, 0xE8}) + "bye";  // The reason is a view into it.
  EXPECT_TRUE(ParseClosePayload(bye, &close));
  EXPECT_EQ(close.code, 1000);
  EXPECT_EQ(close.reason, "bye");
  EXPECT_FALSE(ParseClosePayload(Bytes({0x03, 0xE8, 0xFF}), &close));  // Reason not UTF-8.
  for (int code : {0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535}) {
    EXPECT_FALSE(IsValidCloseCode(static_cast<uint16_t>(code))) << code;
  }
  for (int code : {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999}) {
    EXPECT_TRUE(IsValidCloseCode(static_cast<uint16_t>(code))) << code;
  }
  std::string payload = ClosePayloadFor(1001, "going");
  EXPECT_EQ(payload, Bytes({0x03, 0xE9}) + "going");
  // A long reason is cut at a character boundary, within 125 bytes in all.
  std::string long_reason;
  for (int i = 0; i < 60; ++i) long_reason += "\xC3\xA9";  // 120 bytes of 'é' ...
  long_reason += "ab\xE2\x82\xAC";                          // ... then 125: '€' would be cut.
  payload = ClosePayloadFor(1000, long_reason);
  EXPECT_LE(payload.size(), kMaxControlPayload);
  EXPECT_EQ(payload.size(), 2u + 122u);
  EXPECT_TRUE(IsValidUtf8(payload.substr(2)));
  EXPECT_EQ(ClosePayloadFor(1000, "\xFF"), Bytes({0x03, 0xE8}));  // Not UTF-8: no reason.
}

}  // namespace
}  // namespace gev::websocket

#include "server/protocol.h"

#include <string>

#include "gtest/gtest.h"
#include "ringbuffer/ring_buffer.h"

namespace gev {
namespace {

std::string Header(uint32_t n) {
  return {static_cast<char>(n >> 24), static_cast<char>(n >> 16), static_cast<char>(n >> 8),
          static_cast<char>(n)};
}

TEST(LengthFieldProtocolTest, WaitsForTheWholeHeaderAndPayload) {
  LengthFieldProtocol protocol(100);
  RingBuffer input;
  RingBuffer payload;
  std::string frame = Header(5) + "hello";
  for (size_t i = 0; i < frame.size(); ++i) {
    EXPECT_EQ(*protocol.Decode(input, payload), false) << "after " << i << " bytes";
    EXPECT_EQ(input.Length(), i);  // Nothing consumed while incomplete.
    input.WriteByte(frame[i]);
  }
  EXPECT_EQ(*protocol.Decode(input, payload), true);
  EXPECT_EQ(payload.Bytes(), "hello");
  EXPECT_TRUE(input.IsEmpty());
}

TEST(LengthFieldProtocolTest, DecodesBackToBackAndEmptyFrames) {
  LengthFieldProtocol protocol;
  RingBuffer input;
  input.WriteString(Header(0) + Header(3) + "abc" + Header(2) + "x");
  RingBuffer payload;
  EXPECT_EQ(*protocol.Decode(input, payload), true);
  EXPECT_TRUE(payload.IsEmpty());
  EXPECT_EQ(*protocol.Decode(input, payload), true);
  EXPECT_EQ(payload.Bytes(), "abc");
  payload.Reset();
  EXPECT_EQ(*protocol.Decode(input, payload), false);
  EXPECT_EQ(input.Length(), 5u);
}

TEST(LengthFieldProtocolTest, RejectsAnOversizedHeaderBeforeThePayloadArrives) {
  LengthFieldProtocol protocol(1024);
  RingBuffer input;
  RingBuffer payload;
  input.WriteString(Header(1024));
  EXPECT_EQ(*protocol.Decode(input, payload), false);  // Exactly the maximum is allowed.
  input.Reset();
  input.WriteString(Header(1025));
  absl::StatusOr<bool> result = protocol.Decode(input, payload);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(result.status().message().find("1025"), std::string::npos);
}

TEST(LengthFieldProtocolTest, EncodeRoundTripsThroughDecode) {
  RingBuffer wire;
  ASSERT_TRUE(LengthFieldProtocol::Encode({"split ", "payload"}, wire));
  EXPECT_EQ(wire.Bytes(), Header(13) + "split payload");
  RingBuffer payload;
  EXPECT_EQ(*LengthFieldProtocol().Decode(wire, payload), true);
  EXPECT_EQ(payload.Bytes(), "split payload");
}

TEST(DelimiterProtocolTest, SplitsOnTheDelimiterAndDropsIt) {
  DelimiterProtocol protocol("\r\n");
  RingBuffer input;
  input.WriteString("a\r\n\r\nbc\r");
  RingBuffer payload;
  EXPECT_EQ(*protocol.Decode(input, payload), true);
  EXPECT_EQ(payload.Bytes(), "a");
  payload.Reset();
  EXPECT_EQ(*protocol.Decode(input, payload), true);  // An empty line.
  EXPECT_TRUE(payload.IsEmpty());
  EXPECT_EQ(*protocol.Decode(input, payload), false);
  EXPECT_EQ(input.Bytes(), "bc\r");
  input.WriteByte('\n');
  EXPECT_EQ(*protocol.Decode(input, payload), true);
  EXPECT_EQ(payload.Bytes(), "bc");
}

TEST(DelimiterProtocolTest, FindsADelimiterThatStraddlesTheWrap) {
  DelimiterProtocol protocol("\r\n");
  RingBuffer input;
  input.WriteString(std::string(RingBuffer::kMinCapacity - 10, 'x'));
  // One byte stays (an empty buffer starts over at 0): the next write starts 10 bytes before
  // the end of the storage.
  input.Retrieve(RingBuffer::kMinCapacity - 11);
  input.WriteString(std::string(9, 'y') + "\r\n" + "rest");
  ASSERT_FALSE(input.PeekAll().second.empty());  // The bytes do wrap...
  ASSERT_EQ(input.PeekAll().first.back(), '\r');  // ...between '\r' and '\n'.
  RingBuffer payload;
  EXPECT_EQ(*protocol.Decode(input, payload), true);
  EXPECT_EQ(payload.Bytes(), "x" + std::string(9, 'y'));
  EXPECT_EQ(input.Bytes(), "rest");
}

TEST(DelimiterProtocolTest, RejectsALineLongerThanTheMaximum) {
  DelimiterProtocol protocol("\n", 8);
  RingBuffer input;
  RingBuffer payload;
  input.WriteString("12345678");
  EXPECT_EQ(*protocol.Decode(input, payload), false);  // Could still end here.
  input.WriteString("\n");
  EXPECT_EQ(*protocol.Decode(input, payload), true);
  input.WriteString("123456789");
  EXPECT_EQ(protocol.Decode(input, payload).status().code(), absl::StatusCode::kInvalidArgument);
  RingBuffer late;
  late.WriteString("123456789\n");
  EXPECT_EQ(protocol.Decode(late, payload).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(DelimiterProtocolTest, ATricklingLineIsSearchedOnlyOnce) {
  DelimiterProtocol protocol("\r\n");
  RingBuffer input;
  RingBuffer payload;
  input.WriteString("abc\r");
  EXPECT_EQ(*protocol.Decode(input, payload), false);
  EXPECT_EQ(input.VirtualLength(), 0u);  // All of it searched, none of it consumed.
  EXPECT_EQ(input.Length(), 4u);
  input.WriteString("\nnext");  // The delimiter straddles the old and the new bytes.
  EXPECT_EQ(*protocol.Decode(input, payload), true);
  EXPECT_EQ(payload.Bytes(), "abc");
  EXPECT_EQ(input.Bytes(), "next");
}

TEST(DelimiterProtocolTest, EncodeAppendsTheDelimiter) {
  DelimiterProtocol protocol("\r\n");
  RingBuffer wire;
  ASSERT_TRUE(protocol.Encode({"ok", ""}, wire));
  EXPECT_EQ(wire.Bytes(), "ok\r\n");
}

}  // namespace
}  // namespace gev

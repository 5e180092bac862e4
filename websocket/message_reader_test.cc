#include "websocket/message_reader.h"

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "ringbuffer/ring_buffer.h"
#include "websocket/frame.h"
#include "websocket/utf8.h"

namespace gev::websocket {
namespace {

// A frame as a client sends it (masked), or a server (unmasked).
std::string Frame(Opcode opcode, std::string_view payload, bool fin = true, bool masked = true,
                  bool rsv1 = false) {
  char header[kMaxFrameHeader];
  std::optional<uint32_t> key;
  if (masked) key = 0xA1B2C3D4u;
  size_t n = WriteFrameHeader(header, opcode, fin, rsv1, payload.size(), key);
  std::string frame(header, n);
  std::string body(payload);
  if (masked) ApplyMask(body.data(), body.size(), *key, 0);
  return frame + body;
}

std::string CloseFrame(std::string_view payload) { return Frame(Opcode::kClose, payload); }

std::string Code(uint16_t code) {
  return std::string{static_cast<char>(code >> 8), static_cast<char>(code & 0xFF)};
}

class Recorder : public MessageReader::Sink {
 public:
  void OnMessage(MessageType type, std::string_view payload) override {
    events.push_back((type == MessageType::kText ? "text:" : "binary:") + std::string(payload));
  }
  void OnPing(std::string_view payload) override { events.push_back("ping:" + std::string(payload)); }
  void OnPong(std::string_view payload) override { events.push_back("pong:" + std::string(payload)); }
  void OnClose(uint16_t code, std::string_view reason) override {
    events.push_back("close:" + std::to_string(code) + ":" + std::string(reason));
  }
  std::vector<std::string> events;
};

struct Outcome {
  std::vector<std::string> events;
  ReadResult result;
  size_t left_in_input = 0;
};

// Feeds `bytes` to a fresh reader in pieces of `piece` bytes (0: all at once).
Outcome Feed(const std::string& bytes, size_t piece = 0, Role role = Role::kServer,
             uint64_t max_message = 1 << 20) {
  MessageReader reader(role, {max_message});
  Recorder recorder;
  RingBuffer input;
  Outcome outcome;
  size_t offset = 0;
  do {
    size_t n = piece == 0 ? bytes.size() : std::min(piece, bytes.size() - offset);
    input.Write(bytes.data() + offset, n);
    offset += n;
    outcome.result = reader.Read(input, recorder);
  } while (outcome.result.ok && offset < bytes.size());
  outcome.events = recorder.events;
  outcome.left_in_input = input.Length();
  return outcome;
}

TEST(MessageReaderTest, AssemblesFragmentsAroundControlFramesWhateverTheSplit) {
  std::string stream = Frame(Opcode::kText, "Hel", false) + Frame(Opcode::kPing, "p1") +
                       Frame(Opcode::kContinuation, "lo, ", false) +
                       Frame(Opcode::kPong, "") +
                       Frame(Opcode::kContinuation, "w\xC3\xB6rld") +  // 'ö' split? no: whole
                       Frame(Opcode::kBinary, std::string(70000, '\x01')) +
                       Frame(Opcode::kText, "") + CloseFrame(Code(1000) + "bye") +
                       Frame(Opcode::kText, "after the close");
  const std::vector<std::string> expected = {
      "ping:p1", "pong:", "text:Hello, w\xC3\xB6rld", "binary:" + std::string(70000, '\x01'),
      "text:", "close:1000:bye"};
  for (size_t piece : {0, 1, 2, 3, 7, 13, 126, 4096}) {
    Outcome outcome = Feed(stream, piece);
    EXPECT_TRUE(outcome.result.ok) << piece << ": " << outcome.result.reason;
    EXPECT_EQ(outcome.events, expected) << "in pieces of " << piece;
    EXPECT_EQ(outcome.left_in_input, 0u);
  }
}

TEST(MessageReaderTest, TextIsCheckedAcrossFragmentsAndAtItsEnd) {
  // 'é' split between two fragments is fine.
  Outcome split = Feed(Frame(Opcode::kText, "caf\xC3", false) +
                       Frame(Opcode::kContinuation, "\xA9"));
  EXPECT_TRUE(split.result.ok) << split.result.reason;
  EXPECT_EQ(split.events, std::vector<std::string>{"text:caf\xC3\xA9"});
  // Cut at the end.
  Outcome cut = Feed(Frame(Opcode::kText, "caf\xC3"));
  EXPECT_FALSE(cut.result.ok);
  EXPECT_EQ(cut.result.close_code, kCloseInvalidPayload);
  // Binary is not text.
  EXPECT_TRUE(Feed(Frame(Opcode::kBinary, "\xFF\xFE")).result.ok);
}

// Fail fast: invalid text is refused as soon as its bytes arrive, before the frame is whole
// (Autobahn 6.4.x).
TEST(MessageReaderTest, InvalidTextFailsBeforeItsFrameIsWhole) {
  std::string payload = "\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xED\xA0\x80" +
                        std::string(1000, 'a');
  std::string frame = Frame(Opcode::kText, payload);
  MessageReader reader(Role::kServer, {1 << 20});
  Recorder recorder;
  RingBuffer input;
  const size_t header = frame.size() - payload.size();
  input.Write(frame.data(), header + 13);  // Through 0xED 0xA0: the surrogate's start.
  ReadResult result = reader.Read(input, recorder);
  EXPECT_FALSE(result.ok);
  EXPECT_EQ(result.close_code, kCloseInvalidPayload);
  EXPECT_TRUE(recorder.events.empty());
}

TEST(MessageReaderTest, RefusesBrokenMessageStructureWith1002) {
  struct Case {
    std::string bytes;
    const char* what;
  };
  const Case cases[] = {
      {Frame(Opcode::kContinuation, "x"), "continuation with no message"},
      {Frame(Opcode::kText, "a", false) + Frame(Opcode::kText, "b"), "new message mid-message"},
      {Frame(Opcode::kText, "a", false) + Frame(Opcode::kBinary, "b"), "binary mid-message"},
      {Frame(Opcode::kText, "a", true, true, /*rsv1=*/true), "RSV1 without deflate"},
      {Frame(Opcode::kText, "a", true, /*masked=*/false), "unmasked from a client"},
      {CloseFrame("\x03"), "close of one byte"},
      {CloseFrame(Code(1005)), "close code 1005"},
      {CloseFrame(Code(999)), "close code 999"},
      {CloseFrame(Code(5000)), "close code 5000"},
  };
  for (const Case& c : cases) {
    for (size_t piece : {0, 1}) {
      Outcome outcome = Feed(c.bytes, piece);
      EXPECT_FALSE(outcome.result.ok) << c.what;
      EXPECT_EQ(outcome.result.close_code, kCloseProtocolError) << c.what;
      EXPECT_FALSE(outcome.result.reason.empty()) << c.what;
    }
  }
  Outcome bad_reason = Feed(CloseFrame(Code(1000) + "\xFF"));
  EXPECT_EQ(bad_reason.result.close_code, kCloseInvalidPayload);
  Outcome empty_close = Feed(CloseFrame(""));
  EXPECT_TRUE(empty_close.result.ok);
  EXPECT_EQ(empty_close.events, std::vector<std::string>{"close:1005:"});
}

TEST(MessageReaderTest, TheMessageLimitCountsFragmentsAndSparesControlFrames) {
  constexpr uint64_t kLimit = 100;
  // Exactly the limit, in three fragments, with a ping between: fine.
  std::string at_limit = Frame(Opcode::kBinary, std::string(50, 'a'), false) +
                         Frame(Opcode::kContinuation, std::string(45, 'b'), false) +
                         Frame(Opcode::kPing, std::string(100, 'p')) +
                         Frame(Opcode::kContinuation, std::string(5, 'c'));
  Outcome fine = Feed(at_limit, 0, Role::kServer, kLimit);
  EXPECT_TRUE(fine.result.ok) << fine.result.reason;
  EXPECT_EQ(fine.events.size(), 2u);
  // One byte past it: refused at the header of the frame that passes it, before its payload.
  std::string past = Frame(Opcode::kBinary, std::string(50, 'a'), false) +
                     Frame(Opcode::kContinuation, std::string(51, 'b'));
  MessageReader reader(Role::kServer, {kLimit});
  Recorder recorder;
  RingBuffer input;
  size_t through_second_header = past.size() - 51;
  input.Write(past.data(), through_second_header);
  ReadResult result = reader.Read(input, recorder);
  EXPECT_FALSE(result.ok);
  EXPECT_EQ(result.close_code, kCloseMessageTooBig);
  // A single frame past it, announced by its header alone (a 2^62-byte length).
  std::string huge = Frame(Opcode::kBinary, "").substr(0, 1) + std::string("\xFF", 1) +
                     std::string("\x40\0\0\0\0\0\0\0", 8) + std::string(4, '\0');
  Outcome refused = Feed(huge, 0, Role::kServer, kLimit);
  EXPECT_EQ(refused.result.close_code, kCloseMessageTooBig);
}

// Streaming: a message past stream_above comes in parts as its bytes arrive, each text part
// valid UTF-8 on its own (a character cut by a read or a fragment waits for its rest), and the
// parts make the message; smaller messages still come whole; the streamed limit holds.
TEST(MessageReaderTest, LargeMessagesStreamInPartsThatEndBetweenCharacters) {
  std::string text;
  for (int i = 0; i < 400; ++i) text += "\xCE\xBA\xE1\xBD\xB9x";  // 2-, 3- and 1-byte characters.
  std::string stream = Frame(Opcode::kText, "small") +
                       Frame(Opcode::kText, text.substr(0, 1001), false) +
                       Frame(Opcode::kContinuation, text.substr(1001, 999), false) +
                       Frame(Opcode::kContinuation, text.substr(2000));
  for (size_t piece : {0, 1, 7, 300}) {
    struct Parts : MessageReader::Sink {
      void OnMessage(MessageType, std::string_view payload) override {
        whole.emplace_back(payload);
      }
      void OnMessagePart(MessageType type, std::string_view part, bool last) override {
        EXPECT_EQ(type, MessageType::kText);
        EXPECT_TRUE(IsValidUtf8(part)) << "a part cut inside a character";
        EXPECT_FALSE(ended);
        joined += part;
        ++parts;
        ended = last;
      }
      void OnPing(std::string_view) override {}
      void OnPong(std::string_view) override {}
      void OnClose(uint16_t, std::string_view) override {}
      std::vector<std::string> whole;
      std::string joined;
      int parts = 0;
      bool ended = false;
    } sink;
    MessageReader::Limits limits;
    limits.max_message = 1000;
    limits.stream_above = 100;
    limits.max_streamed_message = 10000;
    MessageReader reader(Role::kServer, limits);
    RingBuffer input;
    size_t offset = 0;
    while (offset < stream.size()) {
      size_t n = piece == 0 ? stream.size() : std::min(piece, stream.size() - offset);
      input.Write(stream.data() + offset, n);
      offset += n;
      ASSERT_TRUE(reader.Read(input, sink).ok) << piece;
      EXPECT_LE(reader.BufferedBytes(), 64u * 1024) << piece;
    }
    EXPECT_EQ(sink.whole, std::vector<std::string>{"small"}) << piece;
    EXPECT_TRUE(sink.ended) << piece;
    EXPECT_TRUE(sink.joined == text) << piece;
    EXPECT_GE(sink.parts, 2) << piece;
  }
  // Past max_streamed_message: 1009, at the header that passes it.
  MessageReader::Limits tight;
  tight.stream_above = 100;
  tight.max_streamed_message = 500;
  MessageReader reader(Role::kServer, tight);
  RingBuffer input;
  std::string over = Frame(Opcode::kBinary, std::string(300, 'a'), false) +
                     Frame(Opcode::kContinuation, std::string(201, 'b'));
  input.Write(over.data(), over.size());
  Recorder recorder;
  ReadResult result = reader.Read(input, recorder);
  EXPECT_FALSE(result.ok);
  EXPECT_EQ(result.close_code, kCloseMessageTooBig);
}

TEST(MessageReaderTest, AClientReadsUnmaskedFramesAndRefusesMaskedOnes) {
  Outcome fine = Feed(Frame(Opcode::kText, "hi", true, /*masked=*/false), 0, Role::kClient);
  EXPECT_TRUE(fine.result.ok);
  EXPECT_EQ(fine.events, std::vector<std::string>{"text:hi"});
  Outcome masked = Feed(Frame(Opcode::kText, "hi"), 0, Role::kClient);
  EXPECT_EQ(masked.result.close_code, kCloseProtocolError);
}

TEST(MessageReaderTest, ALargeMessagesBufferIsLetGoAfterIt) {
  MessageReader reader(Role::kServer, {16 << 20});
  Recorder recorder;
  RingBuffer input;
  std::string big = Frame(Opcode::kBinary, std::string(4 << 20, 'x'));
  input.Write(big.data(), big.size());
  ASSERT_TRUE(reader.Read(input, recorder).ok);
  ASSERT_EQ(recorder.events.size(), 1u);
  EXPECT_LE(reader.BufferedBytes(), 64u * 1024);
}

// Random streams of valid frames, cut at random points: the same events as read whole.
TEST(MessageReaderTest, RandomStreamsReadTheSameInRandomPieces) {
  std::mt19937 random(76);
  for (int round = 0; round < 200; ++round) {
    std::string stream;
    int messages = 1 + static_cast<int>(random() % 8);
    for (int m = 0; m < messages; ++m) {
      int fragments = 1 + static_cast<int>(random() % 4);
      Opcode type = random() % 2 ? Opcode::kText : Opcode::kBinary;
      for (int f = 0; f < fragments; ++f) {
        std::string payload(random() % 300, 'a' + static_cast<char>(random() % 26));
        stream += Frame(f == 0 ? type : Opcode::kContinuation, payload, f == fragments - 1);
        if (random() % 3 == 0) stream += Frame(Opcode::kPing, std::string(random() % 126, 'p'));
      }
    }
    Outcome whole = Feed(stream);
    ASSERT_TRUE(whole.result.ok) << whole.result.reason;
    MessageReader reader(Role::kServer, {1 << 20});
    Recorder recorder;
    RingBuffer input;
    size_t offset = 0;
    while (offset < stream.size()) {
      size_t n = std::min<size_t>(stream.size() - offset, 1 + random() % 200);
      input.Write(stream.data() + offset, n);
      offset += n;
      ASSERT_TRUE(reader.Read(input, recorder).ok);
    }
    EXPECT_EQ(recorder.events, whole.events) << round;
  }
}

}  // namespace
}  // namespace gev::websocket

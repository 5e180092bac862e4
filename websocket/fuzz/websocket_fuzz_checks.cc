#include "websocket/fuzz/websocket_fuzz_checks.h"

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ringbuffer/ring_buffer.h"
#include "websocket/deflate.h"
#include "websocket/frame.h"
#include "websocket/message_reader.h"
#include "websocket/testing/utf8_reference.h"
#include "websocket/utf8.h"

namespace gev::websocket::fuzz {
namespace {

struct Recorder : MessageReader::Sink {
  void OnMessage(MessageType type, std::string_view payload) override {
    if (payload.size() > max_message) broken = "a message past the limit";
    if (stream_above != 0 && payload.size() > stream_above) broken = "a whole message past stream_above";
    if (streaming) broken = "a whole message inside a streamed one";
    if (type == MessageType::kText && !IsValidUtf8(payload)) broken = "text that is not UTF-8";
    events.push_back((type == MessageType::kText ? "t:" : "b:") + std::string(payload));
  }
  // A streamed message is recorded as the whole it adds up to, so that any cuts of the input
  // give the same events whatever parts they made.
  void OnMessagePart(MessageType type, std::string_view part, bool last) override {
    if (stream_above == 0) broken = "a part without streaming";
    if (streaming && type != streamed_type) broken = "a part of another type";
    if (type == MessageType::kText && !IsValidUtf8(part)) broken = "a text part that is not UTF-8";
    streaming = !last;
    streamed_type = type;
    streamed.append(part);
    if (streamed.size() > max_message) broken = "a streamed message past the limit";
    if (last) {
      events.push_back((type == MessageType::kText ? "t:" : "b:") + streamed);
      streamed.clear();
    }
  }
  void OnPing(std::string_view payload) override { Control("ping:", payload); }
  void OnPong(std::string_view payload) override { Control("pong:", payload); }
  void OnClose(uint16_t code, std::string_view reason) override {
    if (code != kCloseNoStatus && !IsValidCloseCode(code)) broken = "a close code no peer sends";
    if (!IsValidUtf8(reason)) broken = "a close reason that is not UTF-8";
    Control("close:" + std::to_string(code) + ":", reason);
  }
  void Control(const std::string& kind, std::string_view payload) {
    if (payload.size() > kMaxControlPayload) broken = "a control payload over 125 bytes";
    events.push_back(kind + std::string(payload));
  }
  uint64_t max_message = 0;  // For a streamed message, max_streamed_message.
  uint64_t stream_above = 0;
  bool streaming = false;
  MessageType streamed_type = MessageType::kBinary;
  std::string streamed;
  std::string broken;
  std::vector<std::string> events;
};

struct Run {
  std::vector<std::string> events;
  ReadResult result;
  std::string broken;
};

// Feeds `bytes` to a fresh reader, cut where `cuts` says (0: all at once); messages past
// `stream_above` (0: none) stream, up to four times max_message.
Run Feed(const uint8_t* bytes, size_t size, Role role, uint64_t max_message, bool deflate,
         bool context_takeover, uint64_t stream_above, uint32_t cut_seed) {
  MessageReader::Limits limits;
  limits.max_message = max_message;
  limits.stream_above = stream_above;
  limits.max_streamed_message = 4 * max_message;
  MessageReader reader(role, limits);
  DeflateAgreement agreement;
  agreement.server_no_context_takeover = !context_takeover;
  agreement.client_no_context_takeover = !context_takeover;
  std::unique_ptr<Inflater> inflater;
  if (deflate) {
    inflater = std::make_unique<Inflater>(agreement, role);
    reader.set_inflater(inflater.get());
  }
  Recorder recorder;
  recorder.max_message = stream_above != 0 ? limits.max_streamed_message : max_message;
  recorder.stream_above = stream_above;
  RingBuffer input;
  std::mt19937 random(cut_seed);
  Run run;
  size_t offset = 0;
  while (offset < size) {
    size_t piece = cut_seed == 0 ? size - offset
                                 : std::min<size_t>(size - offset, 1 + random() % 64);
    input.Write(bytes + offset, piece);
    offset += piece;
    ReadResult result = reader.Read(input, recorder);
    if (!result.ok) {
      run.result = result;
      // Nothing more is read: a second call consumes and reports nothing.
      input.Write("\x81\x00", 2);
      size_t before = recorder.events.size();
      ReadResult again = reader.Read(input, recorder);
      if (!again.ok || recorder.events.size() != before || !input.IsEmpty()) {
        run.broken = "the reader read on after a failure";
      }
      break;
    }
  }
  run.events = std::move(recorder.events);
  if (run.broken.empty()) run.broken = recorder.broken;
  return run;
}

}  // namespace

std::string CheckMessageReader(const uint8_t* data, size_t size) {
  if (size < 3) return "";
  const Role role = (data[0] & 1) != 0 ? Role::kClient : Role::kServer;
  const bool deflate = (data[0] & 2) != 0;
  const uint64_t max_message = 16 + (static_cast<uint64_t>(data[1]) << 4);
  const bool context_takeover = (data[0] & 4) != 0;
  const uint32_t cut_seed = 1 + data[2];
  // Streaming from a small threshold, so that short inputs stream too.
  const uint64_t stream_above = (data[0] & 8) != 0 ? 1 + (data[0] >> 4) * 4 : 0;
  Run whole = Feed(data + 3, size - 3, role, max_message, deflate, context_takeover,
                   stream_above, 0);
  if (!whole.broken.empty()) return whole.broken;
  Run pieces = Feed(data + 3, size - 3, role, max_message, deflate, context_takeover,
                    stream_above, cut_seed);
  if (!pieces.broken.empty()) return pieces.broken + " (in pieces)";
  if (whole.events != pieces.events) return "pieces gave other events than the whole";
  // Corrupt compressed input is no stream zlib promises to read the same way in any cuts: it
  // may meet the corruption first when given everything, or produce more output from small
  // pieces and pass the limit first (a 42-byte case: Python's zlib does the same). Both end
  // the connection with a code for it, so that pair is allowed when deflate is on.
  const bool corrupt_or_too_big =
      deflate && !whole.result.ok && !pieces.result.ok &&
      (whole.result.close_code == kCloseInvalidPayload ||
       whole.result.close_code == kCloseMessageTooBig) &&
      (pieces.result.close_code == kCloseInvalidPayload ||
       pieces.result.close_code == kCloseMessageTooBig);
  if (!corrupt_or_too_big && (whole.result.ok != pieces.result.ok ||
                              whole.result.close_code != pieces.result.close_code)) {
    return "pieces gave another verdict than the whole: " +
           (whole.result.ok ? std::string("ok") : whole.result.reason) + " vs " +
           (pieces.result.ok ? std::string("ok") : pieces.result.reason);
  }
  if (!whole.result.ok) {
    uint16_t code = whole.result.close_code;
    if (code != kCloseProtocolError && code != kCloseInvalidPayload &&
        code != kCloseMessageTooBig) {
      return "a failure with close code " + std::to_string(code);
    }
  }
  return "";
}

std::string CheckUtf8(const uint8_t* data, size_t size) {
  const bool expected = testing::ReferenceIsValid(data, size);
  const char* text = reinterpret_cast<const char*>(data);
  if (IsValidUtf8(std::string_view(text, size)) != expected) return "whole: differs from a decoder";
  // Byte by byte, then in pieces of a size the first byte picks.
  Utf8Validator bytewise;
  bool ok = true;
  for (size_t i = 0; i < size && ok; ++i) ok = bytewise.Feed(text + i, 1);
  if ((ok && bytewise.AtBoundary()) != expected) return "byte by byte: differs from a decoder";
  const size_t piece = size == 0 ? 1 : 1 + data[0] % 7;
  Utf8Validator pieces;
  ok = true;
  for (size_t i = 0; i < size && ok; i += piece) {
    ok = pieces.Feed(text + i, std::min(piece, size - i));
  }
  if ((ok && pieces.AtBoundary()) != expected) return "in pieces: differs from a decoder";
  return "";
}

std::string CheckInflate(const uint8_t* data, size_t size) {
  if (size < 2) return "";
  const size_t limit = 1 + (static_cast<size_t>(data[0]) << 6);
  const bool last_piece_split = (data[1] & 1) != 0;
  std::string_view input(reinterpret_cast<const char*>(data + 2), size - 2);
  DeflateAgreement agreement;
  agreement.client_no_context_takeover = (data[1] & 2) != 0;
  // Any bytes, as a compressed message: bounded output, whatever happens.
  Inflater inflater(agreement, Role::kServer);
  std::string out;
  size_t cut = last_piece_split ? input.size() / 2 : input.size();
  MessageInflater::Result result = inflater.Inflate(input.substr(0, cut), false, limit, &out);
  if (result == MessageInflater::kOk) {
    result = inflater.Inflate(input.substr(cut), true, limit, &out);
  }
  if (out.size() > limit + 1) return "inflated past the limit";
  if (result == MessageInflater::kOk && out.size() > limit) return "kOk past the limit";
  // What a Deflater makes of the input inflates back to it.
  Deflater deflater(agreement, Role::kClient, 1 + data[1] % 9);
  std::string compressed;
  if (!deflater.Compress(input, &compressed)) return "the deflater refused";
  Inflater back(agreement, Role::kServer);
  std::string round_trip;
  if (back.Inflate(compressed, true, input.size() + 1, &round_trip) != MessageInflater::kOk ||
      round_trip != input) {
    return "a deflated message did not inflate back";
  }
  return "";
}

}  // namespace gev::websocket::fuzz

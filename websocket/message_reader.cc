#include "websocket/message_reader.h"

#include <algorithm>
#include <utility>

namespace gev::websocket {
namespace {

// A message buffer larger than this is let go after its message, so that one large message
// does not cost an idle connection its size for good.
constexpr size_t kKeptMessageCapacity = 64 * 1024;

// A compressed piece, or a control payload, between its read and its use within one Read: one
// per thread rather than one per connection, since an idle connection needs none.
std::string& Scratch() {
  thread_local std::string scratch;
  return scratch;
}

}  // namespace

ReadResult MessageReader::Fail(uint16_t code, std::string reason) {
  closed_ = true;
  return ReadResult{false, code, std::move(reason)};
}

ReadResult MessageReader::Read(RingBuffer& input, Sink& sink) {
  ReadResult result;
  while (!closed_) {
    if (!in_frame_ && !StartFrame(input, &result)) return result;
    bool go_on = IsControl(frame_.opcode) ? ReadControlFrame(input, sink, &result)
                                          : ReadDataPayload(input, sink, &result);
    if (!go_on) return result;
  }
  // After a close frame nothing the peer sends means anything (RFC 6455, 5.5.1).
  input.RetrieveAll();
  return result;
}

bool MessageReader::StartFrame(RingBuffer& input, ReadResult* result) {
  char bytes[kMaxFrameHeader];
  std::string_view head =
      input.Contiguous(std::min(input.Length(), kMaxFrameHeader), bytes, sizeof(bytes));
  FrameHeader header;
  // The limit is judged below, where it is known whether the frame is compressed.
  FrameCheck check = ReadFrameHeader(head, role_, inflater_ != nullptr, ~uint64_t{0}, &header);
  if (check.status == FrameCheck::kNeedMore) return false;
  if (check.status == FrameCheck::kInvalid) {
    *result = Fail(check.close_code, check.reason);
    return false;
  }
  if (!IsControl(header.opcode)) {
    const bool compressed = header.opcode == Opcode::kContinuation ? compressed_ : header.rsv1;
    const uint64_t so_far = in_message_ ? streamed_ + message_.size() : 0;
    const uint64_t limit = MessageLimit();
    const uint64_t room = limit > so_far ? limit - so_far : 0;
    // Uncompressed, a frame may bring the message to the limit and no further. Compressed,
    // the limit is on what it inflates to (checked as it inflates); incompressible data
    // deflates to a little more than itself, so the wire may carry somewhat more, within
    // twice the limit, past which no deflate stream of a message within it can be.
    const uint64_t wire_limit = compressed ? 2 * limit + 1024 : room;
    if (header.payload_length > wire_limit) {
      *result = Fail(kCloseMessageTooBig, "a message larger than the limit");
      return false;
    }
  }
  switch (header.opcode) {
    case Opcode::kContinuation:
      if (!in_message_) {
        *result = Fail(kCloseProtocolError, "continuation frame with no message begun");
        return false;
      }
      if (header.rsv1) {
        *result = Fail(kCloseProtocolError, "RSV1 set on a continuation frame");
        return false;
      }
      break;
    case Opcode::kText:
    case Opcode::kBinary:
      if (in_message_) {
        *result = Fail(kCloseProtocolError, "a new message began before the last one ended");
        return false;
      }
      in_message_ = true;
      message_type_ = header.opcode == Opcode::kText ? MessageType::kText : MessageType::kBinary;
      compressed_ = header.rsv1;
      streaming_ = false;
      streamed_ = 0;
      message_.clear();
      utf8_.Reset();
      if (!compressed_ && header.payload_length > 0) {
        // One allocation for a small unfragmented message; a larger one grows as its bytes
        // come, so that a header alone (a peer that says 16 MiB and sends nothing) reserves
        // little.
        uint64_t hold = std::max<uint64_t>(input.Length(), 64 * 1024);
        if (limits_.stream_above != 0) hold = std::min<uint64_t>(hold, limits_.stream_above);
        message_.reserve(static_cast<size_t>(std::min<uint64_t>(header.payload_length, hold)));
      }
      break;
    default:
      break;  // Control frames stand apart from the message around them.
  }
  input.Retrieve(header.header_length);
  frame_ = header;
  frame_read_ = 0;
  in_frame_ = true;
  return true;
}

bool MessageReader::ReadDataPayload(RingBuffer& input, Sink& sink, ReadResult* result) {
  const uint64_t left = frame_.payload_length - frame_read_;
  const size_t take = static_cast<size_t>(std::min<uint64_t>(left, input.Length()));
  if (take == 0 && left > 0) return false;  // More is on its way.
  const bool last = frame_.fin && take == left;
  if (!compressed_) {
    const size_t old_size = message_.size();
    message_.resize(old_size + take);
    input.Read(message_.data() + old_size, take);
    if (frame_.masked) ApplyMask(message_.data() + old_size, take, frame_.mask_key, frame_read_);
    frame_read_ += take;
    if (message_type_ == MessageType::kText &&
        !utf8_.Feed(message_.data() + old_size, take)) {
      *result = Fail(kCloseInvalidPayload, "text that is not UTF-8");
      return false;
    }
  } else {
    std::string& scratch = Scratch();
    scratch.resize(take);
    input.Read(scratch.data(), take);
    if (frame_.masked) ApplyMask(scratch.data(), take, frame_.mask_key, frame_read_);
    frame_read_ += take;
    // Streaming inflates a little compressed input at a time and hands each part on, so that
    // what is held stays near stream_above (deflate expands at most about 1032 to 1: 256
    // bytes in, 264 KiB out); whole, it inflates all there is at once.
    const size_t step = limits_.stream_above != 0 ? 256 : std::max<size_t>(take, 1);
    for (size_t offset = 0; offset < take || (offset == 0 && take == 0); offset += step) {
      const size_t n = std::min(step, take - offset);
      const bool final_piece = last && offset + n == take;
      const size_t old_size = message_.size();
      MessageInflater::Result inflated = inflater_->Inflate(
          std::string_view(scratch).substr(offset, n), final_piece,
          static_cast<size_t>(MessageLimit() - streamed_), &message_);
      // What inflated before a failure is judged first, as it would have been had the payload
      // come in smaller reads: the verdict does not depend on how the bytes were cut.
      if (message_type_ == MessageType::kText &&
          !utf8_.Feed(message_.data() + old_size, message_.size() - old_size)) {
        *result = Fail(kCloseInvalidPayload, "text that is not UTF-8");
        return false;
      }
      if (inflated == MessageInflater::kCorrupt) {
        *result = Fail(kCloseInvalidPayload, "a compressed message that does not inflate");
        return false;
      }
      if (inflated == MessageInflater::kTooBig) {
        *result = Fail(kCloseMessageTooBig, "a message that inflates past the limit");
        return false;
      }
      if (limits_.stream_above != 0 && (streaming_ || message_.size() > limits_.stream_above)) {
        streaming_ = true;
        HandOnPart(sink);
      }
      if (take == 0) break;
    }
    if (scratch.capacity() > kKeptMessageCapacity) std::string().swap(scratch);
  }
  const bool frame_done = frame_read_ == frame_.payload_length;
  if (limits_.stream_above != 0 && (streaming_ || message_.size() > limits_.stream_above)) {
    streaming_ = true;
    HandOnPart(sink);  // The rest, and the end, come at EndMessage.
  }
  if (!frame_done) return false;  // The rest of the frame is to come.
  in_frame_ = false;
  if (!frame_.fin) return true;
  if (message_type_ == MessageType::kText && !utf8_.AtBoundary()) {
    *result = Fail(kCloseInvalidPayload, "text that ends inside a character");
    return false;
  }
  EndMessage(sink);
  return true;
}

void MessageReader::HandOnPart(Sink& sink) {
  size_t cut = message_.size();
  if (message_type_ == MessageType::kText && !utf8_.AtBoundary()) {
    // Back to the lead byte of the character the bytes so far end inside (at most 3 back).
    while (cut > 0 && (static_cast<unsigned char>(message_[cut - 1]) & 0xC0) == 0x80) --cut;
    if (cut > 0) --cut;
  }
  if (cut == 0) return;
  sink.OnMessagePart(message_type_, std::string_view(message_).substr(0, cut), false);
  streamed_ += cut;
  message_.erase(0, cut);
}

void MessageReader::EndMessage(Sink& sink) {
  in_message_ = false;
  compressed_ = false;
  if (streaming_) {
    streaming_ = false;
    sink.OnMessagePart(message_type_, message_, true);
  } else {
    sink.OnMessage(message_type_, message_);
  }
  if (message_.capacity() > kKeptMessageCapacity) {
    std::string().swap(message_);
  } else {
    message_.clear();
  }
}

bool MessageReader::ReadControlFrame(RingBuffer& input, Sink& sink, ReadResult* result) {
  const size_t length = static_cast<size_t>(frame_.payload_length);  // At most 125.
  if (input.Length() < length) return false;  // Control frames are used whole.
  std::string& scratch = Scratch();
  scratch.resize(length);
  input.Read(scratch.data(), length);
  if (frame_.masked) ApplyMask(scratch.data(), length, frame_.mask_key, 0);
  in_frame_ = false;
  switch (frame_.opcode) {
    case Opcode::kPing:
      sink.OnPing(scratch);
      return true;
    case Opcode::kPong:
      sink.OnPong(scratch);
      return true;
    default:
      break;
  }
  // A close frame: an optional code (two bytes), then a UTF-8 reason.
  closed_ = true;
  if (length == 1) {
    *result = Fail(kCloseProtocolError, "a close frame of one byte");
    return false;
  }
  uint16_t code = kCloseNoStatus;
  std::string_view reason;
  if (length >= 2) {
    code = static_cast<uint16_t>((static_cast<unsigned char>(scratch[0]) << 8) |
                                 static_cast<unsigned char>(scratch[1]));
    if (!IsValidCloseCode(code)) {
      *result = Fail(kCloseProtocolError, "a close code no peer may send");
      return false;
    }
    reason = std::string_view(scratch).substr(2);
    if (!IsValidUtf8(reason)) {
      *result = Fail(kCloseInvalidPayload, "a close reason that is not UTF-8");
      return false;
    }
  }
  sink.OnClose(code, reason);
  return true;
}

}  // namespace gev::websocket

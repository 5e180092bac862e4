// -----------------------------------------------------------------------------
// File: websocket/message_reader.h
// -----------------------------------------------------------------------------
//
// `gev::websocket::MessageReader` turns the bytes a peer sent (a connection's input) into
// WebSocket messages and control frames, strictly (RFC 6455, sections 5 and 7; RFC 7692 for
// compressed messages). It consumes a data frame's payload as it arrives rather than waiting
// for the whole frame, so a message too large or text that is not UTF-8 is refused at the
// first byte that shows it (fail fast), and a large frame never waits whole in the input.
//
//   class Events : public gev::websocket::MessageReader::Sink { ... };
//   gev::websocket::MessageReader reader(gev::websocket::Role::kServer, {.max_message = 16 << 20});
//   gev::websocket::ReadResult result = reader.Read(input, events);   // in OnMessage
//   if (!result.ok) close with result.close_code and result.reason;
//
// What is refused, and with what code: everything ReadFrameHeader refuses (1002, 1009); a
// continuation with no message begun, or a new message before the last one ended (1002); RSV1
// on a continuation frame, or anywhere without permessage-deflate (1002); a message past
// max_message bytes, counted after inflating (1009); text that is not UTF-8, in any fragment or
// cut at the end (1007); a compressed payload that does not inflate (1007); a close frame of one
// byte or with a code no peer may send (1002), or a reason that is not UTF-8 (1007). Once a
// close frame is read, nothing after it is.
//
// Thread safety: one reader per connection, used on its loop thread.

#ifndef GEV_WEBSOCKET_MESSAGE_READER_H_
#define GEV_WEBSOCKET_MESSAGE_READER_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "ringbuffer/ring_buffer.h"
#include "websocket/frame.h"
#include "websocket/utf8.h"

namespace gev::websocket {

enum class MessageType { kText, kBinary };

// permessage-deflate's receiving half (websocket/deflate.h has the zlib one).
class MessageInflater {
 public:
  enum Result { kOk, kCorrupt, kTooBig };
  virtual ~MessageInflater() = default;
  // Inflates more of one message's compressed payload onto `out`. `last`: these are the
  // message's final bytes (the inflater appends RFC 7692's 00 00 FF FF tail, and forgets its
  // window without context takeover). kTooBig when `out` would pass `max_size`.
  virtual Result Inflate(std::string_view compressed, bool last, size_t max_size,
                         std::string* out) = 0;
};

struct ReadResult {
  bool ok = true;
  uint16_t close_code = 0;  // When !ok: the code to close with.
  std::string reason;       // When !ok: why.
};

class MessageReader {
 public:
  struct Limits {
    // The largest message, in bytes after inflating; a larger one closes with 1009. It is
    // also the most a message assembled whole holds.
    uint64_t max_message = 16 << 20;
    // Streaming: a message that passes this many bytes is handed on in parts as its bytes come
    // (Sink::OnMessagePart), and is limited by max_streamed_message instead; zero: every
    // message whole. At most about this much (plus one read) is held for it.
    uint64_t stream_above = 0;
    uint64_t max_streamed_message = uint64_t{1} << 30;
  };

  // What the reader found. The views are good until the call returns.
  class Sink {
   public:
    virtual ~Sink() = default;
    virtual void OnMessage(MessageType type, std::string_view payload) = 0;
    // A streamed message's next part, in order; `last` on its final one (which may be empty).
    // A text part ends between characters and is valid UTF-8 on its own. Only with
    // Limits::stream_above.
    virtual void OnMessagePart(MessageType type, std::string_view part, bool last) {
      (void)type;
      (void)part;
      (void)last;
    }
    virtual void OnPing(std::string_view payload) = 0;
    virtual void OnPong(std::string_view payload) = 0;
    // The peer's close frame (kCloseNoStatus when it had no code). No event follows.
    virtual void OnClose(uint16_t code, std::string_view reason) = 0;
  };

  MessageReader(Role role, Limits limits) : role_(role), limits_(limits) {}

  // MessageReader::set_inflater() — permessage-deflate was negotiated: RSV1 marks a compressed
  // message, inflated by `inflater` (which must outlive the reader; null: none).
  void set_inflater(MessageInflater* inflater) { inflater_ = inflater; }

  // MessageReader::Read() — consumes from `input` every whole control frame and every byte of
  // data frames there is, calling `sink` for each message and control frame completed. A
  // failed result means the connection must close with its code; the reader reads nothing
  // more after it, nor after a close frame.
  ReadResult Read(RingBuffer& input, Sink& sink);

  // Whether a message has begun and not ended (a shutdown may wait for it).
  bool InMessage() const { return in_message_; }
  // Memory this reader holds beyond its own size: the message being assembled. (A compressed
  // piece or a control payload waits in its thread's scratch, used only within Read.)
  size_t BufferedBytes() const { return message_.capacity(); }

 private:
  ReadResult Fail(uint16_t code, std::string reason);
  // The next frame's header, if all of it is in `input`: consumed, and checked against the
  // message in progress. False with `*result` failed, or with it ok when more is needed.
  bool StartFrame(RingBuffer& input, ReadResult* result);
  // Consumes what `input` has of the current data frame's payload.
  bool ReadDataPayload(RingBuffer& input, Sink& sink, ReadResult* result);
  bool ReadControlFrame(RingBuffer& input, Sink& sink, ReadResult* result);
  void EndMessage(Sink& sink);
  // Streaming: hands on what the message holds, but for a character cut at its end.
  void HandOnPart(Sink& sink);
  // The most the message in progress may come to.
  uint64_t MessageLimit() const {
    return limits_.stream_above != 0 ? limits_.max_streamed_message : limits_.max_message;
  }

  const Role role_;
  const Limits limits_;
  MessageInflater* inflater_ = nullptr;
  bool closed_ = false;  // A close frame was read, or a failure: nothing more is.

  // The frame in progress, once its header has been read.
  bool in_frame_ = false;
  FrameHeader frame_;
  uint64_t frame_read_ = 0;  // Payload bytes of it consumed.

  // The message in progress.
  bool in_message_ = false;
  MessageType message_type_ = MessageType::kBinary;
  bool compressed_ = false;
  bool streaming_ = false;  // Handed on in parts.
  uint64_t streamed_ = 0;   // Bytes of it handed on already.
  std::string message_;     // Its bytes not yet handed on.
  Utf8Validator utf8_;
};

}  // namespace gev::websocket

#endif  // GEV_WEBSOCKET_MESSAGE_READER_H_

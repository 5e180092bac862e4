// -----------------------------------------------------------------------------
// File: server/protocol.h
// -----------------------------------------------------------------------------
//
// `gev::Protocol` turns a connection's byte stream into frames and replies into bytes, as
// gev's `Protocol` interface does (`UnPacket` / `Packet`). A server with a protocol calls
// `UnPacket` until it reports no complete frame, hands each frame to `Handler::OnFrame`, and
// passes each reply through `Packet`.
//
// Built in:
//   - `LengthFieldProtocol`: a 4-byte big-endian payload length, then the payload. A length
//     above the configured maximum closes the connection (InvalidArgument) before any of the
//     payload is buffered.
//   - `DelimiterProtocol`: frames end with a delimiter ("\n" by default, e.g. "\r\n"); the
//     delimiter is not part of the payload and `Packet` appends it. A frame longer than the
//     maximum without a delimiter closes the connection. It keeps how far it has searched in
//     the input's virtual read position, so a line arriving byte by byte is searched once.
//
//   auto server = gev::NewServer(&handler, gev::Address(":1833"),
//                                gev::CustomProtocol(std::make_shared<gev::LengthFieldProtocol>()));
//
// Thread safety: one protocol object serves every connection on every loop at once, so
// `UnPacket` and `Packet` must not change the protocol object; per-connection decoder state
// belongs in the connection's context. The built-in ones keep none.

#ifndef GEV_SERVER_PROTOCOL_H_
#define GEV_SERVER_PROTOCOL_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "net/connection.h"
#include "ringbuffer/ring_buffer.h"
#include "server/handler.h"

namespace gev {

class Protocol {
 public:
  virtual ~Protocol() = default;

  // Protocol::UnPacket() — if `input` begins with a whole frame, consumes it, appends its
  // payload to `frame.payload` (empty on entry), may set `frame.context`, and returns true.
  // Returns false, consuming nothing, when more bytes are needed; an error closes the
  // connection with that reason. Loop thread.
  virtual absl::StatusOr<bool> UnPacket(Connection& conn, RingBuffer& input, Frame& frame) = 0;

  // Protocol::Packet() — appends the encoding of the reply `payload` to `out`; returns false
  // when `out` refuses the bytes (its limit). Loop thread.
  virtual bool Packet(Connection& conn, const RingBuffer::Slices& payload, RingBuffer& out) = 0;
};

class LengthFieldProtocol final : public Protocol {
 public:
  static constexpr size_t kHeaderSize = 4;
  static constexpr uint32_t kDefaultMaxFrame = 16 * 1024 * 1024;

  explicit LengthFieldProtocol(uint32_t max_frame_bytes = kDefaultMaxFrame)
      : max_frame_bytes_(max_frame_bytes) {}

  absl::StatusOr<bool> UnPacket(Connection& conn, RingBuffer& input, Frame& frame) override;
  bool Packet(Connection& conn, const RingBuffer::Slices& payload, RingBuffer& out) override;

  // The decoder alone, for tests and fuzzers: as UnPacket.
  absl::StatusOr<bool> Decode(RingBuffer& input, RingBuffer& payload) const;
  // Appends header and payload to `out`.
  static bool Encode(const RingBuffer::Slices& payload, RingBuffer& out);

  uint32_t max_frame_bytes() const { return max_frame_bytes_; }

 private:
  const uint32_t max_frame_bytes_;
};

class DelimiterProtocol final : public Protocol {
 public:
  static constexpr size_t kDefaultMaxFrame = 64 * 1024;

  explicit DelimiterProtocol(std::string delimiter = "\n",
                             size_t max_frame_bytes = kDefaultMaxFrame);

  absl::StatusOr<bool> UnPacket(Connection& conn, RingBuffer& input, Frame& frame) override;
  bool Packet(Connection& conn, const RingBuffer::Slices& payload, RingBuffer& out) override;

  // The decoder alone, for tests and fuzzers: as UnPacket.
  absl::StatusOr<bool> Decode(RingBuffer& input, RingBuffer& payload) const;
  bool Encode(const RingBuffer::Slices& payload, RingBuffer& out) const;

  std::string_view delimiter() const { return delimiter_; }

 private:
  const std::string delimiter_;
  const size_t max_frame_bytes_;
};

}  // namespace gev

#endif  // GEV_SERVER_PROTOCOL_H_

// -----------------------------------------------------------------------------
// File: websocket/frame.h
// -----------------------------------------------------------------------------
//
// The WebSocket frame (RFC 6455, section 5.2) on the wire: reading a frame's header strictly,
// writing one, masking payloads, and the close frame's payload (a code and a UTF-8 reason).
// What a frame means in its message (fragments, reassembly) is websocket/message_reader.h's.
//
//   FrameHeader header;
//   FrameCheck check = ReadFrameHeader(bytes, Role::kServer, /*rsv1_allowed=*/deflate, &header);
//   if (check.status == FrameCheck::kNeedMore) wait for more bytes;
//   if (check.status == FrameCheck::kInvalid) close with check.close_code (1002, 1009);
//   ... header.header_length bytes of header, then header.payload_length of payload
//
//   char out[kMaxFrameHeader];
//   size_t n = WriteFrameHeader(out, Opcode::kText, /*fin=*/true, /*rsv1=*/false,
//                               payload.size(), /*mask_key=*/std::nullopt);
//
// Strict: reserved opcodes, RSV bits no extension set, an unmasked frame from a client or a
// masked one from a server, a control frame that is fragmented or longer than 125 bytes, a
// 64-bit length with its top bit set, and a length not in its shortest form are all 1002.
//
// Thread safety: functions of their arguments only.

#ifndef GEV_WEBSOCKET_FRAME_H_
#define GEV_WEBSOCKET_FRAME_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace gev::websocket {

enum class Opcode : uint8_t {
  kContinuation = 0x0,
  kText = 0x1,
  kBinary = 0x2,
  kClose = 0x8,
  kPing = 0x9,
  kPong = 0xA,
};

inline bool IsControl(Opcode opcode) { return (static_cast<uint8_t>(opcode) & 0x8) != 0; }

// Who reads: a server reads masked frames, a client unmasked ones.
enum class Role { kServer, kClient };

// Close codes (RFC 6455, 7.4.1) this library sends.
inline constexpr uint16_t kCloseNormal = 1000;
inline constexpr uint16_t kCloseGoingAway = 1001;
inline constexpr uint16_t kCloseProtocolError = 1002;
inline constexpr uint16_t kCloseUnsupportedData = 1003;
inline constexpr uint16_t kCloseNoStatus = 1005;    // Never sent: a close frame without a code.
inline constexpr uint16_t kCloseAbnormal = 1006;    // Never sent: no close frame at all.
inline constexpr uint16_t kCloseInvalidPayload = 1007;
inline constexpr uint16_t kClosePolicyViolation = 1008;
inline constexpr uint16_t kCloseMessageTooBig = 1009;
inline constexpr uint16_t kCloseInternalError = 1011;

inline constexpr size_t kMaxFrameHeader = 14;       // 2 + 8 (length) + 4 (mask key).
inline constexpr size_t kMaxControlPayload = 125;

struct FrameHeader {
  bool fin = false;
  bool rsv1 = false;  // permessage-deflate's "compressed" bit, when negotiated.
  Opcode opcode = Opcode::kContinuation;
  bool masked = false;
  uint32_t mask_key = 0;  // The four key bytes as they appear on the wire, in memory order.
  uint64_t payload_length = 0;
  size_t header_length = 0;  // Bytes before the payload: 2 to 14.
};

struct FrameCheck {
  enum Status { kOk, kNeedMore, kInvalid };
  Status status = kOk;
  uint16_t close_code = 0;  // With kInvalid: the code to close with.
  const char* reason = "";  // With kInvalid: why, for the close frame and the log.
};

// ReadFrameHeader() — reads the header at the start of `bytes`. kNeedMore until all of it is
// there (at most kMaxFrameHeader bytes); kInvalid with a close code for anything RFC 6455
// forbids. `rsv1_allowed`: an extension (permessage-deflate) gave RSV1 a meaning; whether it
// may be set on this frame (a first data frame only) is the message reader's to judge.
// `max_payload`: a longer payload is kInvalid with 1009 before any of it is read.
FrameCheck ReadFrameHeader(std::string_view bytes, Role reader, bool rsv1_allowed,
                           uint64_t max_payload, FrameHeader* header);

// WriteFrameHeader() — writes a header to `out` (room for kMaxFrameHeader) and returns its
// length. A client masks (`mask_key` set), a server does not.
size_t WriteFrameHeader(char* out, Opcode opcode, bool fin, bool rsv1, uint64_t payload_length,
                        std::optional<uint32_t> mask_key);

// ApplyMask() — XORs `size` bytes at `data` with the key, starting `offset` bytes into the
// payload (so a payload read in pieces is unmasked piece by piece). Masking and unmasking are
// the same operation.
void ApplyMask(char* data, size_t size, uint32_t mask_key, uint64_t offset);

// Close payloads (RFC 6455, 5.5.1): an optional two-byte code, then a UTF-8 reason.
struct ClosePayload {
  uint16_t code = kCloseNoStatus;
  std::string_view reason;
};
// ParseClosePayload() — false for a one-byte payload, a code no endpoint may send (below 1000,
// 1004-1006, 1015, unassigned ones up to 2999, 5000 and above) or a reason that is not UTF-8.
bool ParseClosePayload(std::string_view payload, ClosePayload* close);
// IsValidCloseCode() — a code a peer may send: 1000-1003, 1007-1014, 3000-4999.
bool IsValidCloseCode(uint16_t code);
// ClosePayloadFor() — the payload of a close frame with `code` and `reason` (cut at 123 bytes,
// at a character boundary, so that the frame stays a control frame).
std::string ClosePayloadFor(uint16_t code, std::string_view reason);

}  // namespace gev::websocket

#endif  // GEV_WEBSOCKET_FRAME_H_

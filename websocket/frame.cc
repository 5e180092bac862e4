#include "websocket/frame.h"

#include <cstring>

#include "websocket/utf8.h"

namespace gev::websocket {
namespace {

FrameCheck Invalid(uint16_t code, const char* reason) {
  return FrameCheck{FrameCheck::kInvalid, code, reason};
}

bool IsKnownOpcode(uint8_t opcode) {
  switch (opcode) {
    case 0x0: case 0x1: case 0x2: case 0x8: case 0x9: case 0xA:
      return true;
    default:
      return false;
  }
}

uint64_t ReadBigEndian(const unsigned char* bytes, size_t size) {
  uint64_t value = 0;
  for (size_t i = 0; i < size; ++i) value = (value << 8) | bytes[i];
  return value;
}

}  // namespace

FrameCheck ReadFrameHeader(std::string_view bytes, Role reader, bool rsv1_allowed,
                           uint64_t max_payload, FrameHeader* header) {
  if (bytes.size() < 2) return FrameCheck{FrameCheck::kNeedMore};
  const unsigned char* in = reinterpret_cast<const unsigned char*>(bytes.data());
  // What the first two bytes say is judged before waiting for the rest: a bad frame fails fast.
  const uint8_t opcode = in[0] & 0x0F;
  if ((in[0] & 0x30) != 0) return Invalid(kCloseProtocolError, "RSV2 or RSV3 set");
  const bool rsv1 = (in[0] & 0x40) != 0;
  if (rsv1 && !rsv1_allowed) return Invalid(kCloseProtocolError, "RSV1 set with no extension");
  if (!IsKnownOpcode(opcode)) return Invalid(kCloseProtocolError, "reserved opcode");
  const bool masked = (in[1] & 0x80) != 0;
  if (reader == Role::kServer && !masked) {
    return Invalid(kCloseProtocolError, "unmasked frame from a client");
  }
  if (reader == Role::kClient && masked) {
    return Invalid(kCloseProtocolError, "masked frame from a server");
  }
  const bool fin = (in[0] & 0x80) != 0;
  const uint8_t length7 = in[1] & 0x7F;
  if ((opcode & 0x8) != 0) {
    if (!fin) return Invalid(kCloseProtocolError, "fragmented control frame");
    if (length7 > kMaxControlPayload) {
      return Invalid(kCloseProtocolError, "control frame longer than 125 bytes");
    }
    if (rsv1) return Invalid(kCloseProtocolError, "RSV1 set on a control frame");
  }
  const size_t length_bytes = length7 == 126 ? 2 : length7 == 127 ? 8 : 0;
  const size_t header_length = 2 + length_bytes + (masked ? 4 : 0);
  if (bytes.size() < header_length) return FrameCheck{FrameCheck::kNeedMore};
  uint64_t length = length7;
  if (length_bytes != 0) {
    length = ReadBigEndian(in + 2, length_bytes);
    if (length_bytes == 8 && (length >> 63) != 0) {
      return Invalid(kCloseProtocolError, "64-bit length with its top bit set");
    }
    if ((length_bytes == 2 && length < 126) || (length_bytes == 8 && length <= 0xFFFF)) {
      return Invalid(kCloseProtocolError, "length not in its shortest form");
    }
  }
  if (length > max_payload) return Invalid(kCloseMessageTooBig, "frame larger than the limit");
  header->fin = fin;
  header->rsv1 = rsv1;
  header->opcode = static_cast<Opcode>(opcode);
  header->masked = masked;
  header->mask_key = 0;
  if (masked) std::memcpy(&header->mask_key, in + 2 + length_bytes, 4);
  header->payload_length = length;
  header->header_length = header_length;
  return FrameCheck{FrameCheck::kOk};
}

size_t WriteFrameHeader(char* out, Opcode opcode, bool fin, bool rsv1, uint64_t payload_length,
                        std::optional<uint32_t> mask_key) {
  unsigned char* bytes = reinterpret_cast<unsigned char*>(out);
  bytes[0] = static_cast<unsigned char>((fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) |
                                        static_cast<uint8_t>(opcode));
  const unsigned char mask_bit = mask_key.has_value() ? 0x80 : 0;
  size_t n;
  if (payload_length < 126) {
    bytes[1] = static_cast<unsigned char>(mask_bit | payload_length);
    n = 2;
  } else if (payload_length <= 0xFFFF) {
    bytes[1] = mask_bit | 126;
    bytes[2] = static_cast<unsigned char>(payload_length >> 8);
    bytes[3] = static_cast<unsigned char>(payload_length);
    n = 4;
  } else {
    bytes[1] = mask_bit | 127;
    for (int i = 0; i < 8; ++i) {
      bytes[2 + i] = static_cast<unsigned char>(payload_length >> (56 - 8 * i));
    }
    n = 10;
  }
  if (mask_key.has_value()) {
    std::memcpy(bytes + n, &*mask_key, 4);
    n += 4;
  }
  return n;
}

void ApplyMask(char* data, size_t size, uint32_t mask_key, uint64_t offset) {
  unsigned char key[4];
  std::memcpy(key, &mask_key, 4);
  // The key as it lines up with data[0], twice over: eight bytes XORed a word at a time.
  unsigned char rotated[8];
  for (size_t i = 0; i < 8; ++i) rotated[i] = key[(offset + i) % 4];
  uint64_t pattern;
  std::memcpy(&pattern, rotated, 8);
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    uint64_t word;
    std::memcpy(&word, data + i, 8);
    word ^= pattern;
    std::memcpy(data + i, &word, 8);
  }
  for (; i < size; ++i) data[i] = static_cast<char>(data[i] ^ rotated[i % 8]);
}

bool IsValidCloseCode(uint16_t code) {
  if (code >= 3000 && code <= 4999) return true;  // Libraries' and applications' own.
  switch (code) {
    case 1000: case 1001: case 1002: case 1003:
    case 1007: case 1008: case 1009: case 1010: case 1011:
    case 1012: case 1013: case 1014:  // IANA's registry: restart, try again later, bad gateway.
      return true;
    default:
      return false;
  }
}

bool ParseClosePayload(std::string_view payload, ClosePayload* close) {
  if (payload.empty()) {
    *close = ClosePayload{};
    return true;
  }
  if (payload.size() == 1) return false;
  const unsigned char* in = reinterpret_cast<const unsigned char*>(payload.data());
  uint16_t code = static_cast<uint16_t>((in[0] << 8) | in[1]);
  if (!IsValidCloseCode(code)) return false;
  std::string_view reason = payload.substr(2);
  if (!IsValidUtf8(reason)) return false;
  close->code = code;
  close->reason = reason;
  return true;
}

std::string ClosePayloadFor(uint16_t code, std::string_view reason) {
  constexpr size_t kMaxReason = kMaxControlPayload - 2;
  if (reason.size() > kMaxReason) {
    size_t cut = kMaxReason;
    // Back to the start of the character that would be split.
    while (cut > 0 && (static_cast<unsigned char>(reason[cut]) & 0xC0) == 0x80) --cut;
    reason = reason.substr(0, cut);
  }
  if (!IsValidUtf8(reason)) reason = {};  // A peer would fail the close for it (1007).
  std::string payload;
  payload.reserve(2 + reason.size());
  payload.push_back(static_cast<char>(code >> 8));
  payload.push_back(static_cast<char>(code & 0xFF));
  payload.append(reason.data(), reason.size());
  return payload;
}

}  // namespace gev::websocket

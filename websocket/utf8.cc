#include "websocket/utf8.h"

#include <array>
#include <cstring>

namespace gev::websocket {
namespace {

// Byte classes: what a byte may be in Unicode's table 3-7.
enum : uint8_t {
  kAscii,         // 00..7F
  kContinueLow,   // 80..8F
  kContinueMid,   // 90..9F
  kContinueHigh,  // A0..BF
  kLead2,         // C2..DF
  kLeadE0,        // E0: its next byte is A0..BF (no overlong three-byte forms)
  kLead3,         // E1..EC, EE..EF
  kLeadED,        // ED: its next byte is 80..9F (no surrogates)
  kLeadF0,        // F0: its next byte is 90..BF (no overlong four-byte forms)
  kLead4,         // F1..F3
  kLeadF4,        // F4: its next byte is 80..8F (nothing past U+10FFFF)
  kInvalid,       // C0, C1, F5..FF
  kClasses,
};

// States besides Utf8Validator's kAccept (0) and kReject (1): what the sequence begun needs.
constexpr uint8_t kNeed1 = 2;    // one more continuation byte
constexpr uint8_t kNeed2 = 3;    // two more
constexpr uint8_t kAfterE0 = 4;  // A0..BF, then one more
constexpr uint8_t kAfterED = 5;  // 80..9F, then one more
constexpr uint8_t kNeed3 = 6;    // three more
constexpr uint8_t kAfterF0 = 7;  // 90..BF, then two more
constexpr uint8_t kAfterF4 = 8;  // 80..8F, then two more
constexpr uint8_t kStates = 9;

constexpr uint8_t ClassOf(unsigned byte) {
  if (byte < 0x80) return kAscii;
  if (byte < 0x90) return kContinueLow;
  if (byte < 0xA0) return kContinueMid;
  if (byte < 0xC0) return kContinueHigh;
  if (byte < 0xC2) return kInvalid;
  if (byte < 0xE0) return kLead2;
  if (byte == 0xE0) return kLeadE0;
  if (byte == 0xED) return kLeadED;
  if (byte < 0xF0) return kLead3;
  if (byte == 0xF0) return kLeadF0;
  if (byte < 0xF4) return kLead4;
  if (byte == 0xF4) return kLeadF4;
  return kInvalid;
}

constexpr std::array<uint8_t, 256> MakeClasses() {
  std::array<uint8_t, 256> classes{};
  for (unsigned byte = 0; byte < 256; ++byte) classes[byte] = ClassOf(byte);
  return classes;
}

constexpr uint8_t Next(uint8_t state, uint8_t byte_class) {
  constexpr uint8_t kAccept = Utf8Validator::kAccept;
  constexpr uint8_t kReject = Utf8Validator::kReject;
  const bool any_continuation = byte_class == kContinueLow || byte_class == kContinueMid ||
                                byte_class == kContinueHigh;
  switch (state) {
    case kAccept:
      switch (byte_class) {
        case kAscii: return kAccept;
        case kLead2: return kNeed1;
        case kLeadE0: return kAfterE0;
        case kLead3: return kNeed2;
        case kLeadED: return kAfterED;
        case kLeadF0: return kAfterF0;
        case kLead4: return kNeed3;
        case kLeadF4: return kAfterF4;
        default: return kReject;  // A continuation byte with nothing to continue, or invalid.
      }
    case kNeed1: return any_continuation ? kAccept : kReject;
    case kNeed2: return any_continuation ? kNeed1 : kReject;
    case kNeed3: return any_continuation ? kNeed2 : kReject;
    case kAfterE0: return byte_class == kContinueHigh ? kNeed1 : kReject;
    case kAfterED:
      return byte_class == kContinueLow || byte_class == kContinueMid ? kNeed1 : kReject;
    case kAfterF0:
      return byte_class == kContinueMid || byte_class == kContinueHigh ? kNeed2 : kReject;
    case kAfterF4: return byte_class == kContinueLow ? kNeed2 : kReject;
    default: return kReject;
  }
}

constexpr std::array<uint8_t, kStates * kClasses> MakeTransitions() {
  std::array<uint8_t, kStates * kClasses> transitions{};
  for (uint8_t state = 0; state < kStates; ++state) {
    for (uint8_t byte_class = 0; byte_class < kClasses; ++byte_class) {
      transitions[state * kClasses + byte_class] = Next(state, byte_class);
    }
  }
  return transitions;
}

constexpr std::array<uint8_t, 256> kClassOf = MakeClasses();
constexpr std::array<uint8_t, kStates * kClasses> kTransitions = MakeTransitions();
constexpr uint64_t kHighBits = 0x8080808080808080ull;

}  // namespace

bool Utf8Validator::Feed(const char* data, size_t size) {
  uint8_t state = state_;
  if (state == kReject) return false;
  const unsigned char* bytes = reinterpret_cast<const unsigned char*>(data);
  size_t i = 0;
  while (i < size) {
    if (state == kAccept) {
      // Between characters: skip ASCII a word at a time (most text is mostly ASCII).
      while (i + 8 <= size) {
        uint64_t word;
        std::memcpy(&word, bytes + i, sizeof(word));
        if ((word & kHighBits) != 0) break;
        i += 8;
      }
      if (i == size) break;
    }
    state = kTransitions[state * kClasses + kClassOf[bytes[i]]];
    if (state == kReject) break;
    ++i;
  }
  state_ = state;
  return state != kReject;
}

bool IsValidUtf8(std::string_view bytes) {
  Utf8Validator validator;
  return validator.Feed(bytes) && validator.AtBoundary();
}

}  // namespace gev::websocket

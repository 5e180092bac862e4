// -----------------------------------------------------------------------------
// File: websocket/testing/utf8_reference.h
// -----------------------------------------------------------------------------
//
// A plain UTF-8 decoder for tests to check websocket/utf8.h against: each sequence decoded to
// its code point by the bit patterns, then the numbers checked (shortest form, not a
// surrogate, at most U+10FFFF). Written apart from the validator's byte ranges, so that the
// two can be compared.
//
//   EXPECT_EQ(gev::websocket::IsValidUtf8(text), gev::websocket::testing::ReferenceIsValid(text));
//
// Thread safety: a function of its arguments.

#ifndef GEV_WEBSOCKET_TESTING_UTF8_REFERENCE_H_
#define GEV_WEBSOCKET_TESTING_UTF8_REFERENCE_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace gev::websocket::testing {

bool ReferenceIsValid(const uint8_t* text, size_t size);
inline bool ReferenceIsValid(std::string_view text) {
  return ReferenceIsValid(reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

}  // namespace gev::websocket::testing

#endif  // GEV_WEBSOCKET_TESTING_UTF8_REFERENCE_H_

// -----------------------------------------------------------------------------
// File: websocket/utf8.h
// -----------------------------------------------------------------------------
//
// `gev::websocket::Utf8Validator` checks UTF-8 as RFC 3629 (and Unicode's table 3-7 of
// well-formed byte sequences) defines it: no overlong forms, no surrogates (U+D800..U+DFFF),
// nothing past U+10FFFF. It is incremental, so a text message split across frames, or a frame
// across reads, is checked as it arrives and refused at the first byte that cannot be part of
// a valid text (RFC 6455 asks an endpoint to fail fast), whatever the split.
//
//   gev::websocket::Utf8Validator utf8;
//   if (!utf8.Feed(fragment)) close(1007);           // at the first bad byte
//   ... on the last fragment:
//   if (!utf8.Feed(last) || !utf8.AtBoundary()) close(1007);   // a sequence cut short
//   utf8.Reset();                                     // for the next message
//
// How: ASCII runs are skipped eight bytes at a time; other bytes step a nine-state automaton
// over twelve byte classes, both tables built at compile time from the well-formed ranges.
//
// Thread safety: a validator is a plain value, used by one thread at a time.

#ifndef GEV_WEBSOCKET_UTF8_H_
#define GEV_WEBSOCKET_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace gev::websocket {

class Utf8Validator {
 public:
  // Utf8Validator::Feed() — checks the next bytes. False once anything fed so far cannot be
  // the start of valid UTF-8; it stays false until Reset().
  bool Feed(std::string_view bytes) { return Feed(bytes.data(), bytes.size()); }
  bool Feed(const char* data, size_t size);
  // Utf8Validator::AtBoundary() — true when what was fed ends between characters (a message
  // may end here); false inside a sequence or after a failure.
  bool AtBoundary() const { return state_ == kAccept; }
  bool Failed() const { return state_ == kReject; }
  void Reset() { state_ = kAccept; }

  // The automaton's states (public for the tables in utf8.cc).
  static constexpr uint8_t kAccept = 0;
  static constexpr uint8_t kReject = 1;

 private:
  uint8_t state_ = kAccept;
};

// IsValidUtf8() — the whole of `bytes` is valid UTF-8 (a close frame's reason, say).
bool IsValidUtf8(std::string_view bytes);

}  // namespace gev::websocket

#endif  // GEV_WEBSOCKET_UTF8_H_

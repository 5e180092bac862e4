// -----------------------------------------------------------------------------
// File: websocket/fuzz/websocket_fuzz_checks.h
// -----------------------------------------------------------------------------
//
// Properties of the WebSocket parsers that must hold for any input, as functions of the
// input's bytes: the libFuzzer targets beside this file (built by tools/fuzz.sh with clang)
// and websocket_fuzzer_replay_test (every Bazel configuration) call them. Each returns an
// empty string when every property held, or what broke.
//
//   CheckMessageReader: the first bytes choose a role, a limit, deflate or not (with or without
//     context takeover) and how the rest is cut into reads; the rest is a peer's bytes. Whole or cut into pieces, the reader
//     gives the same events and the same verdict; no message passes the limit; every text
//     message is UTF-8; control payloads fit 125 bytes; a failure has a close code the RFC
//     names, and nothing is read after it.
//   CheckUtf8: the validator agrees with a plain decoder, whole and fed in pieces.
//   CheckInflate: inflating never yields more than the limit (plus the one byte that shows
//     it was passed), and what a Deflater made of the input inflates back to it.
//
// Thread safety: functions of their arguments only.

#ifndef GEV_WEBSOCKET_FUZZ_WEBSOCKET_FUZZ_CHECKS_H_
#define GEV_WEBSOCKET_FUZZ_WEBSOCKET_FUZZ_CHECKS_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace gev::websocket::fuzz {

std::string CheckMessageReader(const uint8_t* data, size_t size);
std::string CheckUtf8(const uint8_t* data, size_t size);
std::string CheckInflate(const uint8_t* data, size_t size);

}  // namespace gev::websocket::fuzz

#endif  // GEV_WEBSOCKET_FUZZ_WEBSOCKET_FUZZ_CHECKS_H_

// -----------------------------------------------------------------------------
// File: server/fuzz/protocol_fuzz_checks.h
// -----------------------------------------------------------------------------
//
// Property checks for the built-in protocol decoders, driven by arbitrary bytes: the bytes are
// fed to a RingBuffer in chunks the input chooses, frames are decoded as a server would, and
// every decoded frame re-encodes to exactly the bytes it consumed; an error is reported only
// when the input really is malformed. Used by the libFuzzer targets (tools/fuzz.sh) and by
// protocol_fuzzer_replay_test under every Bazel configuration.
//
// Thread safety: none needed (pure functions).

#ifndef GEV_SERVER_FUZZ_PROTOCOL_FUZZ_CHECKS_H_
#define GEV_SERVER_FUZZ_PROTOCOL_FUZZ_CHECKS_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace gev::fuzz {

// Returns an empty string when every property holds, else what broke.
std::string CheckLengthFieldDecoder(const uint8_t* data, size_t size);
std::string CheckDelimiterDecoder(const uint8_t* data, size_t size);

}  // namespace gev::fuzz

#endif  // GEV_SERVER_FUZZ_PROTOCOL_FUZZ_CHECKS_H_

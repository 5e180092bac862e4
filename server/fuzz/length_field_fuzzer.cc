// libFuzzer target for the length-field decoder; see protocol_fuzz_checks.h. Built with clang by
// tools/fuzz.sh.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "server/fuzz/protocol_fuzz_checks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string failure = gev::fuzz::CheckLengthFieldDecoder(data, size);
  if (!failure.empty()) {
    std::fprintf(stderr, "length_field decoder: %s\n", failure.c_str());
    std::abort();
  }
  return 0;
}

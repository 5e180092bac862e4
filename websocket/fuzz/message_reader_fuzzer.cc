// libFuzzer target; see websocket_fuzz_checks.h. Built with clang by tools/fuzz.sh.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "websocket/fuzz/websocket_fuzz_checks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string failure = gev::websocket::fuzz::CheckMessageReader(data, size);
  if (!failure.empty()) {
    std::fprintf(stderr, "message_reader: %s\n", failure.c_str());
    std::abort();
  }
  return 0;
}

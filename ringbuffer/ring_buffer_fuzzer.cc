// libFuzzer target: the fuzzer's bytes choose RingBuffer operations, checked against a
// std::deque model. Built with clang by tools/fuzz.sh; replayed on random inputs by
// ring_buffer_fuzzer_replay_test under every Bazel configuration.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "ringbuffer/ring_buffer_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  size_t offset = 0;
  gev::ringbuffer_internal::ChoiceSource next = [&](uint64_t bound) -> int64_t {
    if (offset + 2 > size) return -1;
    uint64_t value = static_cast<uint64_t>(data[offset]) << 8 | data[offset + 1];
    offset += 2;
    return static_cast<int64_t>(value % bound);
  };
  std::string failure = gev::ringbuffer_internal::RunModelOperations(next, 10000);
  if (!failure.empty()) {
    std::fprintf(stderr, "RingBuffer disagrees with its model: %s\n", failure.c_str());
    std::abort();
  }
  return 0;
}

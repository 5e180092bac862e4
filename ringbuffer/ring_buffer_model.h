// Checks a RingBuffer against a std::deque<char> model over a sequence of operations.
//
// The randomized model test draws operations from a seeded PRNG; the libFuzzer target draws
// them from the fuzzer's bytes. Both run the same `RunModelOperations`, which returns a
// description of the first disagreement, or an empty string.
//
// Thread safety: none needed; each call is self-contained.

#ifndef GEV_RINGBUFFER_RING_BUFFER_MODEL_H_
#define GEV_RINGBUFFER_RING_BUFFER_MODEL_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace gev::ringbuffer_internal {

// Returns the next choice in [0, bound) (bound > 0), or -1 once the source is exhausted.
using ChoiceSource = std::function<int64_t(uint64_t bound)>;

std::string RunModelOperations(const ChoiceSource& next, size_t max_operations);

}  // namespace gev::ringbuffer_internal

#endif  // GEV_RINGBUFFER_RING_BUFFER_MODEL_H_

#include "server/testing/loopback_client.h"

#include <cstdint>

namespace gev::testing {

std::string LengthFramed(std::string_view payload) {
  uint32_t n = static_cast<uint32_t>(payload.size());
  std::string out = {static_cast<char>(n >> 24), static_cast<char>(n >> 16),
                     static_cast<char>(n >> 8), static_cast<char>(n)};
  out.append(payload);
  return out;
}

}  // namespace gev::testing

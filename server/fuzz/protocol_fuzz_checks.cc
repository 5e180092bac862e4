#include "server/fuzz/protocol_fuzz_checks.h"

#include <string_view>

#include "absl/status/statusor.h"
#include "ringbuffer/ring_buffer.h"
#include "server/protocol.h"

namespace gev::fuzz {
namespace {

// Input layout: byte 0 configures the decoder, byte 1 seeds chunk sizes, the rest is the
// stream.
struct Stream {
  uint8_t config = 0;
  uint8_t chunk_seed = 0;
  std::string_view bytes;
};

Stream Split(const uint8_t* data, size_t size) {
  Stream stream;
  if (size >= 1) stream.config = data[0];
  if (size >= 2) stream.chunk_seed = data[1];
  if (size > 2) stream.bytes = {reinterpret_cast<const char*>(data + 2), size - 2};
  return stream;
}

// Feeds `stream` in chunks of 1..64 bytes, decoding after each; `decode` and `encode` are the
// protocol's. `malformed(rest)` says whether an error is right for the undecoded bytes.
template <typename Decode, typename Encode, typename Malformed>
std::string Check(const Stream& stream, Decode decode, Encode encode, Malformed malformed) {
  RingBuffer input;
  RingBuffer payload;
  std::string reencoded;
  size_t fed = 0;
  uint32_t chunk_state = stream.chunk_seed;
  while (true) {
    absl::StatusOr<bool> decoded = decode(input, payload);
    if (!decoded.ok()) {
      std::string rest = input.Bytes();
      if (!malformed(rest)) return "error on well-formed input: " + decoded.status().ToString();
      break;  // A server closes the connection here.
    }
    if (*decoded) {
      RingBuffer frame;
      if (!encode(payload.PeekAll(), frame)) return "a decoded frame does not re-encode";
      reencoded += frame.Bytes();
      payload.Reset();
      size_t consumed = fed - input.Length();
      if (reencoded != stream.bytes.substr(0, consumed)) {
        return "re-encoded frames differ from the bytes consumed";
      }
      continue;
    }
    if (fed == stream.bytes.size()) {
      if (malformed(input.Bytes())) return "malformed input was not reported";
      break;
    }
    chunk_state = chunk_state * 1103515245u + 12345u;
    size_t chunk = 1 + (chunk_state >> 16) % 64;
    if (chunk > stream.bytes.size() - fed) chunk = stream.bytes.size() - fed;
    input.WriteString(stream.bytes.substr(fed, chunk));
    fed += chunk;
  }
  return "";
}

}  // namespace

std::string CheckLengthFieldDecoder(const uint8_t* data, size_t size) {
  Stream stream = Split(data, size);
  const uint32_t max_frame = uint32_t{stream.config} * 16;
  LengthFieldProtocol protocol(max_frame);
  auto malformed = [&](const std::string& rest) {
    if (rest.size() < 4) return false;
    uint32_t length = static_cast<uint32_t>(static_cast<uint8_t>(rest[0])) << 24 |
                      static_cast<uint32_t>(static_cast<uint8_t>(rest[1])) << 16 |
                      static_cast<uint32_t>(static_cast<uint8_t>(rest[2])) << 8 |
                      static_cast<uint32_t>(static_cast<uint8_t>(rest[3]));
    return length > max_frame;
  };
  return Check(
      stream, [&](RingBuffer& in, RingBuffer& out) { return protocol.Decode(in, out); },
      [](const RingBuffer::Slices& p, RingBuffer& out) {
        return LengthFieldProtocol::Encode(p, out);
      },
      malformed);
}

std::string CheckDelimiterDecoder(const uint8_t* data, size_t size) {
  Stream stream = Split(data, size);
  const std::string delimiter = (stream.config & 1) ? "\r\n" : "\n";
  const size_t max_frame = stream.config >> 1;
  DelimiterProtocol protocol(delimiter, max_frame);
  auto malformed = [&](const std::string& rest) {
    size_t end = rest.find(delimiter);
    if (end == std::string::npos) return rest.size() > max_frame + delimiter.size() - 1;
    return end > max_frame;
  };
  return Check(
      stream, [&](RingBuffer& in, RingBuffer& out) { return protocol.Decode(in, out); },
      [&](const RingBuffer::Slices& p, RingBuffer& out) { return protocol.Encode(p, out); },
      malformed);
}

}  // namespace gev::fuzz

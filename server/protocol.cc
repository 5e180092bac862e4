#include "server/protocol.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace gev {
namespace {

// Appends both slices; false if `out` refuses them.
bool AppendSlices(const RingBuffer::Slices& slices, RingBuffer& out) {
  return out.WriteString(slices.first) && out.WriteString(slices.second);
}

// Moves the first `n` bytes of `input` to `out` and consumes them; false if `out` refuses.
bool MoveBytes(RingBuffer& input, size_t n, RingBuffer& out) {
  if (!AppendSlices(input.Peek(n), out)) return false;
  input.Retrieve(n);
  return true;
}

// Position of the first `needle` in the concatenation first + second, or npos. The needle may
// straddle the two.
size_t FindInSlices(const RingBuffer::Slices& slices, std::string_view needle) {
  std::string_view first = slices.first;
  std::string_view second = slices.second;
  size_t found = first.find(needle);
  if (found != std::string_view::npos) return found;
  if (second.empty()) return std::string_view::npos;
  // A straddling match starts in the last needle.size() - 1 bytes of `first`.
  size_t tail = std::min(first.size(), needle.size() - 1);
  for (size_t start = first.size() - tail; start < first.size(); ++start) {
    size_t in_first = first.size() - start;
    if (needle.size() - in_first > second.size()) continue;
    if (first.substr(start) == needle.substr(0, in_first) &&
        second.substr(0, needle.size() - in_first) == needle.substr(in_first)) {
      return start;
    }
  }
  found = second.find(needle);
  return found == std::string_view::npos ? found : first.size() + found;
}

// `slices` without their first `n` bytes.
RingBuffer::Slices Skip(RingBuffer::Slices slices, size_t n) {
  if (n < slices.first.size()) {
    slices.first.remove_prefix(n);
  } else {
    slices.second.remove_prefix(std::min(n - slices.first.size(), slices.second.size()));
    slices.first = {};
  }
  return slices;
}

}  // namespace

absl::StatusOr<bool> LengthFieldProtocol::Decode(RingBuffer& input, RingBuffer& payload) const {
  std::optional<uint32_t> length = input.PeekUint32();
  if (!length.has_value()) return false;
  if (*length > max_frame_bytes_) {
    return absl::InvalidArgumentError(
        absl::StrCat("frame of ", *length, " bytes exceeds the maximum of ", max_frame_bytes_));
  }
  if (input.Length() - kHeaderSize < *length) return false;
  input.Retrieve(kHeaderSize);
  if (!MoveBytes(input, *length, payload)) {
    return absl::ResourceExhaustedError("frame does not fit the payload buffer");
  }
  return true;
}

bool LengthFieldProtocol::Encode(const RingBuffer::Slices& payload, RingBuffer& out) {
  uint32_t length = static_cast<uint32_t>(payload.size());
  const char header[kHeaderSize] = {
      static_cast<char>(length >> 24), static_cast<char>(length >> 16),
      static_cast<char>(length >> 8), static_cast<char>(length)};
  return out.Write(header, kHeaderSize) && AppendSlices(payload, out);
}

absl::StatusOr<bool> LengthFieldProtocol::UnPacket(Connection&, RingBuffer& input, Frame& frame) {
  return Decode(input, frame.payload);
}

bool LengthFieldProtocol::Packet(Connection&, const RingBuffer::Slices& payload,
                                 RingBuffer& out) {
  if (payload.size() > UINT32_MAX) return false;
  return Encode(payload, out);
}

DelimiterProtocol::DelimiterProtocol(std::string delimiter, size_t max_frame_bytes)
    : delimiter_(delimiter.empty() ? std::string("\n") : std::move(delimiter)),
      max_frame_bytes_(max_frame_bytes) {}

absl::StatusOr<bool> DelimiterProtocol::Decode(RingBuffer& input, RingBuffer& payload) const {
  // The bytes before the virtual read position were searched by an earlier call (a line that
  // trickles in is not searched from its start every time: that would be quadratic). A
  // delimiter may begin in their last delimiter.size() - 1 bytes and end in the new ones.
  size_t searched = input.Length() - input.VirtualLength();
  size_t from = searched >= delimiter_.size() - 1 ? searched - (delimiter_.size() - 1) : 0;
  size_t end = FindInSlices(Skip(input.PeekAll(), from), delimiter_);
  if (end == std::string_view::npos) {
    // No delimiter yet: only an error once the bytes already exceed any allowed frame.
    if (input.Length() > max_frame_bytes_ + delimiter_.size() - 1) {
      return absl::InvalidArgumentError(absl::StrCat("no delimiter within ", max_frame_bytes_,
                                                     " bytes"));
    }
    input.VirtualRead(input.VirtualLength());  // Remember how far the search went.
    return false;
  }
  end += from;
  if (end > max_frame_bytes_) {
    return absl::InvalidArgumentError(
        absl::StrCat("frame of ", end, " bytes exceeds the maximum of ", max_frame_bytes_));
  }
  if (!MoveBytes(input, end, payload)) {
    return absl::ResourceExhaustedError("frame does not fit the payload buffer");
  }
  input.Retrieve(delimiter_.size());
  return true;
}

bool DelimiterProtocol::Encode(const RingBuffer::Slices& payload, RingBuffer& out) const {
  return AppendSlices(payload, out) && out.WriteString(delimiter_);
}

absl::StatusOr<bool> DelimiterProtocol::UnPacket(Connection&, RingBuffer& input, Frame& frame) {
  return Decode(input, frame.payload);
}

bool DelimiterProtocol::Packet(Connection&, const RingBuffer::Slices& payload,
                               RingBuffer& out) {
  return Encode(payload, out);
}

}  // namespace gev

#include "server/internal/handler_dispatch.h"

#include <algorithm>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "eventloop/log.h"

namespace gev::server_internal {
namespace {

// A reply the connection refused (pending output at its limit) would be a hole in the stream:
// the connection ends with that reason instead (RST). A reply after the write side was shut
// down cannot reach the peer any more: said in the log. Other failures mean the connection is
// already closed, with its own reason.
void EndIfRefused(Connection& connection, const absl::Status& sent) {
  if (absl::IsResourceExhausted(sent)) {
    connection.ForceClose(sent);
  } else if (!sent.ok() && connection.state() != Connection::State::kDisconnected) {
    Log(LogSeverity::kWarning,
        absl::StrCat("reply to ", connection.PeerAddr().ToString(), " dropped: ", sent.message()));
  }
}

}  // namespace

absl::StatusOr<Connection::Options> ConnectionOptionsFor(size_t high_water_mark,
                                                         size_t max_pending_output,
                                                         size_t max_input_bytes,
                                                         absl::Duration idle_time) {
  if (idle_time < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("IdleTime must not be negative");
  }
  if (high_water_mark == 0) return absl::InvalidArgumentError("HighWaterMark is 0");
  if (max_input_bytes == 0) return absl::InvalidArgumentError("MaxInputBytes is 0");
  if (max_pending_output == 0) {
    // Room for the mark's backlog and a few reads past it (a read can bring 128 KiB).
    max_pending_output = std::min<size_t>(std::max<size_t>(high_water_mark * 4, 4 << 20),
                                          RingBuffer::kMaxLimit);
  }
  if (max_pending_output > RingBuffer::kMaxLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("MaxPendingOutput(", max_pending_output, ") is more than 2 GiB"));
  }
  if (max_pending_output < high_water_mark) {
    return absl::InvalidArgumentError(absl::StrCat(
        "MaxPendingOutput(", max_pending_output, ") is below HighWaterMark(", high_water_mark,
        "): the mark could never be reached"));
  }
  Connection::Options options;
  options.high_water_mark = high_water_mark;
  options.low_water_mark = high_water_mark / 2;
  options.max_input_bytes = max_input_bytes;
  options.max_pending_output = max_pending_output;
  options.idle_timeout = idle_time;
  return options;
}

void HandlerDispatch::OnMessage(const ConnectionPtr& connection, RingBuffer& input) {
  if (protocol_ == nullptr) {
    Reply reply = handler_->OnMessage(*connection, input);
    SendReply(*connection, input, reply);
    return;
  }
  // Frames keep coming until the input holds no whole one, or the handler closed.
  while (connection->state() == Connection::State::kConnected) {
    absl::StatusOr<bool> decoded = protocol_->UnPacket(*connection, input, frame_);
    if (!decoded.ok()) {
      ResetFrame();
      connection->ForceClose(decoded.status());
      return;
    }
    if (!*decoded) return;
    Reply reply = handler_->OnFrame(*connection, frame_);
    SendFramedReply(*connection, reply);
    ResetFrame();
  }
}

void HandlerDispatch::SendReply(Connection& connection, RingBuffer& buffer, const Reply& reply) {
  switch (reply.kind()) {
    case Reply::Kind::kNothing:
      return;
    case Reply::Kind::kFromBuffer:
      EndIfRefused(connection, connection.SendFromBuffer(buffer, reply.from_buffer()));
      return;
    case Reply::Kind::kView:
    case Reply::Kind::kOwned:
      EndIfRefused(connection, connection.SendSlices({reply.bytes(), {}}));
      return;
  }
}

void HandlerDispatch::SendFramedReply(Connection& connection, const Reply& reply) {
  RingBuffer::Slices payload;
  switch (reply.kind()) {
    case Reply::Kind::kNothing:
      return;
    case Reply::Kind::kFromBuffer:
      payload = frame_.payload.Peek(reply.from_buffer());
      break;
    case Reply::Kind::kView:
    case Reply::Kind::kOwned:
      payload = {reply.bytes(), {}};
      break;
  }
  if (!protocol_->Packet(connection, payload, packet_)) {
    packet_.Reset();
    connection.ForceClose(absl::ResourceExhaustedError("reply too large to encode"));
    return;
  }
  EndIfRefused(connection, connection.SendFromBuffer(packet_, packet_.Length()));
  packet_.Reset();
}

void HandlerDispatch::ResetFrame() {
  frame_.payload.Reset();
  frame_.context.reset();
}

}  // namespace gev::server_internal

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
  if (sent.ok()) return;  // Inline: Debian's absl has the code test out of line, per reply.
  if (absl::IsResourceExhausted(sent)) {
    connection.ForceClose(sent);
  } else if (connection.state() != Connection::State::kDisconnected) {
    Log(LogSeverity::kWarning,
        absl::StrCat("reply to ", connection.PeerAddr().ToString(), " dropped: ", sent.message()));
  }
}

}  // namespace

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
      // The replies to the frames before it go out first, then the FIN (as Redis answers
      // what came before a protocol error); a peer that does not read them within the stop
      // timeout is reset.
      ResetFrame();
      connection->Close(decoded.status());
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

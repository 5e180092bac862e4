// -----------------------------------------------------------------------------
// File: server/internal/handler_dispatch.h
// -----------------------------------------------------------------------------
//
// What a Server's worker and a Client both do with a `Handler`: hand it the input (decoded
// into frames when there is a `Protocol`) and send what it returns, ending the connection with
// the reason when a reply is refused. One per loop (or per client): it owns the scratch frame
// and packet buffers.
//
// Thread safety: loop thread only.

#ifndef GEV_SERVER_INTERNAL_HANDLER_DISPATCH_H_
#define GEV_SERVER_INTERNAL_HANDLER_DISPATCH_H_

#include <cstddef>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "net/connection.h"
#include "ringbuffer/ring_buffer.h"
#include "server/frame.h"
#include "server/handler.h"
#include "server/protocol.h"
#include "server/reply.h"

namespace gev::server_internal {

class HandlerDispatch {
 public:
  // `protocol` may be null (bytes pass through).
  HandlerDispatch(Handler* handler, Protocol* protocol) : handler_(handler), protocol_(protocol) {}

  Handler* handler() const { return handler_; }

  // HandlerDispatch::OnMessage() — OnMessage, or OnFrame per whole frame, and their replies.
  void OnMessage(const ConnectionPtr& connection, RingBuffer& input);

 private:
  void SendReply(Connection& connection, RingBuffer& buffer, const Reply& reply);
  void SendFramedReply(Connection& connection, const Reply& reply);
  void ResetFrame();

  Handler* const handler_;
  Protocol* const protocol_;
  Frame frame_;        // The frame being handled (protocol mode).
  RingBuffer packet_;  // A reply being encoded (protocol mode).
};

}  // namespace gev::server_internal

#endif  // GEV_SERVER_INTERNAL_HANDLER_DISPATCH_H_

// -----------------------------------------------------------------------------
// File: server/frame.h
// -----------------------------------------------------------------------------
//
// `gev::Frame` is one message a `Protocol` decoded from a connection's input: its payload and
// whatever the protocol wants the handler to know of it. `Handler::OnFrame` receives it; by
// default it hands the payload to OnMessage.
//
// Thread safety: used on one loop thread, within one OnFrame call.

#ifndef GEV_SERVER_FRAME_H_
#define GEV_SERVER_FRAME_H_

#include <any>

#include "ringbuffer/ring_buffer.h"

namespace gev {

// One frame decoded by a Protocol: its payload and whatever the protocol wants the handler to
// know about it (a message type, say). Small values in `context` do not allocate.
struct Frame {
  RingBuffer payload;
  std::any context;
};

}  // namespace gev

#endif  // GEV_SERVER_FRAME_H_

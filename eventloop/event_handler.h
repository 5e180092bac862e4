// -----------------------------------------------------------------------------
// File: eventloop/event_handler.h
// -----------------------------------------------------------------------------
//
// `gev::EventHandler` receives the readiness events of one descriptor registered with an
// `EventLoop` (muduo's Channel role): a connection, an acceptor, a wakeup pipe.
//
//   class Pipe : public gev::EventHandler {
//     void HandleEvent(const gev::PollEvent& event) override { if (event.readable) Drain(); }
//   };
//   loop->AddHandler(fd, gev::Interest::kRead, &pipe);  // until loop->RemoveHandler(fd, &pipe)
//
// Thread safety: HandleEvent is called on the loop thread only; the handler must stay alive
// until RemoveHandler has been called for its descriptor.

#ifndef GEV_EVENTLOOP_EVENT_HANDLER_H_
#define GEV_EVENTLOOP_EVENT_HANDLER_H_

#include "poller/poller.h"

namespace gev {

class EventHandler {
 public:
  virtual ~EventHandler() = default;
  // EventHandler::HandleEvent() — called on the loop thread with the descriptor's event.
  virtual void HandleEvent(const PollEvent& event) = 0;
};

}  // namespace gev

#endif  // GEV_EVENTLOOP_EVENT_HANDLER_H_

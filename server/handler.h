// -----------------------------------------------------------------------------
// File: server/handler.h
// -----------------------------------------------------------------------------
//
// `gev::Handler` is what a server's user writes: three callbacks, as in gev. What `OnMessage`
// returns is sent back to the peer, so a request/response server is one function:
//
//   class Echo : public gev::Handler {
//    public:
//     gev::Reply OnMessage(gev::Connection& conn, gev::RingBuffer& buffer) override {
//       return gev::Reply::FromBuffer(buffer.Length());  // send (and consume) all of it
//     }
//   };
//
// A `Reply` is one of: nothing (`return {};`), bytes the reply owns (`return std::string(..)`),
// a string literal (`return "OK\r\n";`), a view of storage that outlives the call and may be
// rewritten by the next one (`Reply::View(v)`; never a local), or the first n bytes of the
// buffer `OnMessage` was given (`Reply::FromBuffer(n)`), which are consumed and written without
// a copy when the socket takes them: the steady-state echo allocates nothing.
//
// Without a protocol, `buffer` is the connection's input: whatever `OnMessage` leaves in it is
// still there, with more bytes after it, at the next call. With a `Protocol` (server/protocol.h)
// `OnFrame` sees one whole frame at a time; by default it passes the frame's payload to
// `OnMessage`, and whatever is left of a frame is dropped after the call.
//
// Thread safety: a server calls a connection's callbacks on that connection's loop thread, so
// one handler object is called from every loop thread at once; per-connection state belongs in
// `Connection::SetContext`, shared state needs its own synchronization.

#ifndef GEV_SERVER_HANDLER_H_
#define GEV_SERVER_HANDLER_H_

#include <cstddef>

#include "absl/status/status.h"
#include "eventloop/event_loop.h"
#include "net/connection.h"
#include "ringbuffer/ring_buffer.h"
#include "server/frame.h"
#include "server/reply.h"

namespace gev {

class Handler {
 public:
  virtual ~Handler() = default;

  // Handler::OnLoopStart() — worker loop `loop_index` (0 .. NumLoops-1) is starting, on its
  // own thread, before it serves any connection. Per-loop state goes here, indexed by
  // `Connection::LoopIndex()` later, without thread_local: a cache, a store shard, a timer
  // (`loop.RunEvery`) that refreshes what the loop's replies share.
  virtual void OnLoopStart(EventLoop& loop, size_t loop_index) {
    (void)loop;
    (void)loop_index;
  }

  // Handler::OnConnect() — the connection is open; runs before any OnMessage. `Send` works
  // here. Keep `conn.shared_from_this()` to use the connection later from any thread.
  virtual void OnConnect(Connection& conn) { (void)conn; }

  // Handler::OnMessage() — bytes arrived (or, with a protocol, a frame); returns what to send.
  virtual Reply OnMessage(Connection& conn, RingBuffer& buffer) = 0;

  // Handler::OnFrame() — with a protocol, one decoded frame. Override it to see the frame's
  // context; by default it calls OnMessage with the payload.
  virtual Reply OnFrame(Connection& conn, Frame& frame) { return OnMessage(conn, frame.payload); }

  // Handler::OnHighWater() — the connection's pending output has just passed the
  // HighWaterMark (`pending` bytes); a producer should stop sending to it until OnLowWater (or
  // OnWriteComplete). Reading from the peer pauses meanwhile, unless PauseReadingAtHighWater is
  // off: then pausing is the handler's (a relay pauses the other side). Runs after the callback
  // whose Send crossed the mark has returned.
  virtual void OnHighWater(Connection& conn, size_t pending) {
    (void)conn;
    (void)pending;
  }

  // Handler::OnLowWater() — after an OnHighWater, the pending output has drained below half of
  // the mark: a producer may go on, a relay resumes reading the other side. One per
  // OnHighWater, after it.
  virtual void OnLowWater(Connection& conn) { (void)conn; }

  // Handler::OnPeerShutdown() — with HalfClose(true): the peer has shut down its sending side
  // (FIN); no more input comes, and the connection stays writable until this handler shuts
  // its own side. By default it does so at once: ShutdownWrite(), which sends what is pending,
  // then the FIN; OnClose(OK) follows when both directions are done. A relay passes it on
  // (the other side's ShutdownWrite) instead.
  virtual void OnPeerShutdown(Connection& conn) { conn.ShutdownWrite(); }

  // Handler::OnWriteComplete() — output that had to wait has all been written.
  virtual void OnWriteComplete(Connection& conn) { (void)conn; }

  // Handler::OnDrain() — the server is draining (Server::Drain, or its listeners went to a
  // successor): no new connection comes, and this one may finish what it is doing before
  // StopTimeout ends it (RST). A request-response protocol closes it here when it is between
  // requests, and otherwise after the reply in progress. By default nothing happens: the
  // connection goes on until its peer closes it. On the connection's loop, once.
  virtual void OnDrain(Connection& conn) { (void)conn; }

  // Handler::OnClose() — the connection closed; called exactly once per OnConnect. `reason` is
  // OK for an orderly close (either side) and says why otherwise: reset, idle timeout, a
  // protocol error, the server stopping.
  virtual void OnClose(Connection& conn, const absl::Status& reason) {
    (void)conn;
    (void)reason;
  }

  // Handler::OnTransportError() — an accepted connection ended before its transport's
  // handshake completed (ServerOptions::transport: a TLS peer that sent garbage, offered no
  // shared protocol, or took longer than the handshake timeout), so no OnConnect ran and no
  // OnClose follows. `reason` says why; `conn` gives the peer's address. For logs and counts.
  virtual void OnTransportError(Connection& conn, const absl::Status& reason) {
    (void)conn;
    (void)reason;
  }
};

}  // namespace gev

#endif  // GEV_SERVER_HANDLER_H_

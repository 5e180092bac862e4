// -----------------------------------------------------------------------------
// File: net/connection.h
// -----------------------------------------------------------------------------
//
// `gev::Connection` is one stream connection (TCP or Unix, accepted or dialed), owned by one
// event loop and shared (`std::shared_ptr`) between its owner, user code and queued tasks. It
// reads into an input `RingBuffer` and hands that buffer to the message callback; what it is
// sent goes out at once, or waits in an `OutputQueue` (net/output_queue.h) only when the
// socket cannot take everything. Its parts, each a class of its own tested on its own:
// `OutputQueue` (the waiting bytes and the one write), `OutputBudget` (the bytes accepted and
// not yet written, against max_pending_output), `DeadlineTimer` (the handshake, idle and
// error-close deadlines), `ContextSlot` (the user's context); a transport's layer is in
// net/connection_transport.cc. The connection keeps the state machine, event dispatch,
// callbacks and teardown.
//
// Lifecycle. One teardown path, owned by the loop:
//
//   kConnecting --Establish()--> kConnected --Close(reason), peer's FIN--> kDisconnecting
//        |                           ^
//        | (a transport)             | its handshake completed: on_connect
//        '-------> kHandshaking -----'
//                       | failed, timed out, peer left: on_transport_error, not on_close
//                       v
//                  kDisconnected
//                                    |    (half_close: the peer's FIN and the       |
//                                    |     owner's ShutdownWrite, both done)        |
//                     error, ForceClose(), idle timeout          output flushed (FIN), or an
//                                    |                           error, or a Close(error)'s
//                                    v                           timeout (RST)      |
//                              kDisconnected <--------------------------------------'
//                                    |   CloseInLoop(): events stop, the fd stays open
//                                    v   a loop task, after the current callback and batch
//                              Teardown(): close(fd) (RST if output is left), buffers
//                              released, on_close(reason)
//
// CloseInLoop() only marks the connection closed and stops its events. The descriptor stays
// open until Teardown(), so its number is not reused by a connection accepted later in the
// same batch; on_close never runs inside another callback (a write that fails inside
// OnMessage, say); the RingBuffer& a callback was given stays valid until it returns.
//
// Guarantees:
//   - `on_connect` runs before any `on_message`; `on_close` runs exactly once, after
//     `on_connect`, with the reason the connection ended (OK for a clean close by us); a
//     connection that never got to on_connect (its transport's handshake failed) ends with
//     `on_transport_error` instead. No user
//     callback runs inside another: on_high_water and on_close come after the callback that
//     caused them.
//   - No byte is dropped on a short write or EAGAIN: the rest waits in the output buffer, write
//     interest is enabled only while it is non-empty. Send accepts all of its bytes or none
//     (ResourceExhausted past Options::max_pending_output). A connection that ends with output
//     unsent ends with RST, and its reason counts the bytes.
//   - Reads continue while output is pending, so a peer's FIN is always seen; after it, pending
//     output is still delivered and the connection then closes (with Options::half_close it
//     stays writable until the owner shuts its side too). Close() stops reading at once, and
//     closes after everything accepted has been written, with a FIN. If the peer may still be
//     sending then (the close is for an error, or its bytes wait unread: a pipeline behind a
//     protocol error), the connection lingers after its FIN: it reads and drops what comes
//     until the peer's FIN or Options::linger_quiet without a byte, because closing a socket
//     with bytes unread makes the kernel send RST, and a reset can destroy the replies just
//     written before the peer has read them.
//   - Backpressure: when pending output crosses the high-water mark on_high_water runs once per
//     crossing, and on_low_water once it is below the low-water mark again; by default reading
//     stops in between (Options::pause_reading_at_high_water).
//   - Idle timeout: one timer per idle period re-armed from the last activity time, not one per
//     read; it is cancelled when the connection closes.
//   - Whatever a ConnectionPtr reaches (its loop, options, callbacks: the Config) lives as long
//     as the pointer; after the loop has finished, calls fail instead of touching freed memory.
//
// Example (inside the owner, on the loop thread):
//
//   auto config = std::make_shared<gev::Connection::Config>();  // one per loop
//   config->loop = loop;                                        // a shared_ptr<EventLoop>
//   config->callbacks.on_message = [](const gev::ConnectionPtr& c, gev::RingBuffer& in) {...};
//   auto conn = gev::Connection::Create(config, fd, peer);
//   conn->Establish();            // registers with the loop, runs on_connect
//   ...
//   conn->Send("hello");          // from any thread
//   conn->Close();                // flushes, then closes
//
// Transport (Config::transport, net/transport.h): bytes on the wire may be other bytes than
// the user's (TLS). Everything above holds of the user's bytes, with on_connect after the
// transport's handshake (the connection is kHandshaking until then: not Connected(), Send
// refused); the output's limits and PendingOutput() count wire bytes.
//
// Thread safety: `Send`, `ShutdownWrite`, `Close`, `ForceClose`, `Connected`, `SetContext`,
// `Context` and the addresses are thread-safe. Everything else, callbacks included, is on
// the loop thread.

#ifndef GEV_NET_CONNECTION_H_
#define GEV_NET_CONNECTION_H_

#include <any>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "eventloop/event_loop.h"
#include "net/context_slot.h"
#include "net/deadline_timer.h"
#include "net/inet_address.h"
#include "net/output_budget.h"
#include "net/output_queue.h"
#include "net/socket_address.h"
#include "net/transport.h"
#include "ringbuffer/ring_buffer.h"

namespace gev {

class Connection;
using ConnectionPtr = std::shared_ptr<Connection>;

class Connection final : public std::enable_shared_from_this<Connection> {
 public:
  enum class State : uint8_t {
    kConnecting,
    kHandshaking,  // Its transport's handshake runs; on_connect follows it.
    kConnected,
    kDisconnecting,
    kDisconnected
  };

  struct Options {
    // Pending output above this calls on_high_water (once per crossing), and on_low_water
    // follows once it is below low_water_mark again.
    size_t high_water_mark = 64 * 1024 * 1024;
    size_t low_water_mark = 32 * 1024 * 1024;
    // The connection also stops reading from its peer between the two (gev's default: an echo
    // or request/response peer that does not read its replies is not read either). False
    // leaves reading to the owner (PauseReading/ResumeReading from the callbacks), as a relay
    // needs: it pauses the *other* side, and pausing this one too would deadlock it.
    bool pause_reading_at_high_water = true;
    // A peer's FIN ends only its direction: on_peer_shutdown runs, and the connection stays
    // writable (Send, replies) until the owner shuts its own side (ShutdownWrite, Close); it
    // closes, on_close(OK), once both directions are done. False (gev's default): a peer's FIN
    // ends the connection once what it was sent is written. Without on_peer_shutdown the
    // default applies either way.
    bool half_close = false;
    // Most bytes the input buffer keeps; a peer that sends more while the handler leaves them
    // unconsumed is closed with ResourceExhausted.
    size_t max_input_bytes = 64 * 1024 * 1024;
    // Close after this long without reading or writing; zero disables it. At most 12 days
    // (ActivityStamp::kMaxQuiet): a longer timeout is taken as that.
    absl::Duration idle_timeout = absl::ZeroDuration();
    // How long a Close() for an error (a protocol error's) lets what was already answered be
    // written before the connection ends with RST anyway (a peer that sent garbage and does
    // not read). Zero leaves it the writes that can be made at once.
    absl::Duration error_close_timeout = absl::Seconds(5);
    // Lingering (see Guarantees): a close of ours whose peer may still be sending (a close for
    // an error, or any with the peer's bytes unread) sends FIN after the output, then reads
    // and drops until the peer's FIN or this long without a byte, at most error_close_timeout
    // in all. Zero closes at once.
    absl::Duration linger_quiet = absl::Milliseconds(500);
    // Most bytes accepted for sending and not yet written to the socket (queued from other
    // threads or waiting in the output buffer). A Send that would pass it is refused whole with
    // ResourceExhausted. At most RingBuffer::kMaxLimit.
    size_t max_pending_output = RingBuffer::kMaxLimit;
    // Gather small sends made on the loop thread and write them once per loop iteration (see
    // Send). False writes each at once, as muduo does: more system calls, and the peer may see
    // the first reply of a batch a little sooner.
    bool gather_writes = true;
    // Most reads one readable event makes while each fills what it asked for (up to a 64 KiB
    // block): the rest waits for the next poll, after the other ready connections. Small
    // requests never make a second read; 8 keeps windowed streams cheaper than libuv's 32,
    // which moves a bulk flood (a relay's upload, say) at less CPU per byte. See HandleRead.
    // Plain sockets only: a transport's Read decides its own amount (TLS: up to 256 KiB of
    // plaintext). 1 to kMaxReadsPerEvent, as server::ConnectionOptionsFor checks.
    int reads_per_event = kDefaultReadsPerEvent;
  };
  static constexpr int kDefaultReadsPerEvent = 8;
  static constexpr int kMaxReadsPerEvent = 64;

  // Called on the connection's loop thread; one set serves every connection of a server, on
  // every loop at once, hence const.
  struct Callbacks {
    absl::AnyInvocable<void(const ConnectionPtr&) const> on_connect;
    absl::AnyInvocable<void(const ConnectionPtr&, RingBuffer& input) const> on_message;
    absl::AnyInvocable<void(const ConnectionPtr&, const absl::Status& reason) const> on_close;
    // With a transport: the connection ended before its handshake completed (it failed, timed
    // out, the peer left, or the owner closed it), so on_connect never ran. It runs in place
    // of on_close, exactly once, and is the connection's last callback.
    absl::AnyInvocable<void(const ConnectionPtr&, const absl::Status& reason) const>
        on_transport_error;
    absl::AnyInvocable<void(const ConnectionPtr&, size_t pending_bytes) const> on_high_water;
    // After an on_high_water: pending output is below the low-water mark again.
    absl::AnyInvocable<void(const ConnectionPtr&) const> on_low_water;
    // With Options::half_close: the peer has shut down its sending side (FIN).
    absl::AnyInvocable<void(const ConnectionPtr&) const> on_peer_shutdown;
    absl::AnyInvocable<void(const ConnectionPtr&) const> on_write_complete;
  };

  // What the connections of one loop did. Each counter is written by the loop thread only, so
  // a relaxed load and store count it; any thread may read them.
  struct Counters {
    // Closes are counted by their reason's absl::StatusCode (OK: orderly); 17 codes.
    static constexpr size_t kCodes = 17;
    std::atomic<uint64_t> opened{0};
    std::atomic<uint64_t> bytes_read{0};
    std::atomic<uint64_t> bytes_written{0};
    // System calls that wrote to a socket (write or writev): with the bytes written, how well
    // replies were gathered.
    std::atomic<uint64_t> writes{0};
    std::atomic<uint64_t> closed[kCodes] = {};
  };

  // What the connections of one loop have in common, the loop included. Shared rather than
  // copied into each connection (an idle connection's memory is part of the library's
  // promise), and owned by them: whatever a ConnectionPtr reaches (its loop, options and
  // callbacks) lives as long as the pointer, even past the owner that made them. Callbacks run
  // only on the loop thread while the loop runs, so they may capture owner state that lives
  // until the loop has stopped.
  struct Config {
    std::shared_ptr<EventLoop> loop;
    // Which of its owner's loops this is (a server's worker index); see LoopIndex().
    size_t loop_index = 0;
    Options options;
    Callbacks callbacks;
    mutable Counters counters;
    // Null: bytes go to and from the socket as they are. Otherwise each connection gets a
    // transport of its own (TLS, say; net/transport.h): on_connect waits for its handshake.
    std::shared_ptr<TransportFactory> transport;
    // What the transport is told (TransportContext): whether these connections were dialed,
    // and the name dialed.
    bool dialed = false;
    std::string server_name;

   private:
    friend class Connection;
    // Connections hold their Config by plain pointer, 8 bytes of each where a shared_ptr takes
    // 16; while any is alive, the Config holds itself through `self_`, from the shared_ptr the
    // first one was created with.
    mutable std::mutex holders_mutex_;
    mutable size_t holders_ = 0;                   // Guarded by holders_mutex_.
    mutable std::shared_ptr<const Config> self_;   // Guarded by holders_mutex_.
  };

  // Connection::Create() — takes ownership of the connected, non-blocking `fd`, to be served
  // on `config->loop`.
  static ConnectionPtr Create(std::shared_ptr<const Config> config, int fd,
                              const InetAddress& peer);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Connection::Establish() — registers with the loop and runs on_connect (with a transport,
  // once its handshake has completed). Loop thread only.
  void Establish();

  // Connection::Send() — queues `data` for sending, all of it or none. On the loop thread,
  // small sends are gathered: what a connection's own callbacks send while it handles an event
  // (a reply and whatever preceded it) is written with one writev when they return; what it is
  // sent otherwise (by timers, tasks, other connections' callbacks: a broadcast) is written
  // with one writev before the loop next polls. Once kGatherBytes are waiting, or the
  // high-water mark would be passed, they are written at once with the new bytes. What the
  // socket does not take waits in the output buffer. From another thread the bytes are copied
  // and handed to the loop, where they are gathered the same way. Bytes sent from one thread
  // arrive in order. Returns FailedPrecondition once the connection is closing or closed, and
  // ResourceExhausted, queueing nothing, when the pending output would pass
  // Options::max_pending_output. Thread-safe.
  absl::Status Send(std::string_view data);
  // Connection::SendAll() — Send() of several pieces, in order: all of them or none, written
  // as one stream (a header and a body without joining them first). On the loop thread, pieces
  // too large to gather (and at most kMaxSendAllPieces of them) leave in one writev with what
  // was gathered before them. Thread-safe.
  absl::Status SendAll(std::initializer_list<std::string_view> pieces);

  // Most bytes a connection gathers before it writes without waiting for the end of the
  // loop's iteration. Gathering pays for small replies (requests, pipelined replies: a write
  // system call each costs far more than their copy). A larger reply is already worth its
  // system call, and gathering it costs a copy and cache: a thousand connections' 4 KiB echoes
  // gathered took 10% more server CPU per message than writing each at once (measured with
  // tools/echo_compare.sh --gev-before). It also bounds what a loop holds gathered: this much
  // per connection of its batch.
  static constexpr size_t kGatherBytes = 2 * 1024;
  // Most pieces SendAll writes with one writev (more are sent one after another).
  static constexpr size_t kMaxSendAllPieces = 16;
  // Connection::SendFromBuffer() — sends and consumes the first `n` bytes of `buffer` without
  // an intermediate copy when the socket takes them (an echo's path). Errors as Send's.
  // Loop thread only.
  absl::Status SendFromBuffer(RingBuffer& buffer, size_t n);
  // Connection::SendSlices() — sends `slices` from the loop thread; unlike Send it still
  // accepts bytes while a Close() is flushing (a reply computed before the close). Errors as
  // Send's. Loop thread only.
  absl::Status SendSlices(const RingBuffer::Slices& slices) {
    loop()->AssertInLoopThread();
    return SendSlicesInLoop(slices);
  }
  // Bytes accepted by Send and not yet written to the socket. Thread-safe.
  size_t PendingOutput() const { return output_budget_.pending(); }

  // Connection::ShutdownWrite() — half-closes (FIN) once all pending output is written; the
  // connection keeps reading. Thread-safe.
  void ShutdownWrite();
  // Connection::Close() — stops reading (at once on the loop thread: no OnMessage follows)
  // and closes once everything accepted is written (the replies already produced: gathered,
  // buffered, queued from other threads, and what the current callback returns), with a FIN.
  // on_close gets `reason`: OK for an orderly close, or why (a protocol error); a close for an
  // error waits at most Options::error_close_timeout for that output, then ends with RST and
  // counts what was dropped. Thread-safe.
  void Close(absl::Status reason = absl::OkStatus());
  // Connection::ForceClose() — closes without flushing: on the loop thread it stops input and
  // output at once, from another thread when its task runs; the descriptor is closed (RST if
  // output was left, counted in the reason) after the current callback. With an OK `reason`,
  // small sends this loop iteration gathered get one write first, as they would have had
  // without gathering. `reason` reaches on_close (a protocol error, say). Thread-safe.
  void ForceClose(absl::Status reason = absl::OkStatus());

  // Connection::SetContext() / Context() — any user value. Thread-safe.
  void SetContext(std::any context);
  std::any Context() const;
  // Connection::ContextAs() — the context in place, typed: null when there is none or it holds
  // another type. For per-connection state (a parser, a session) used on every message without
  // copying the std::any. Loop thread only, and the pointer is good until the context is set
  // again: do not call SetContext from another thread while a callback uses it.
  template <typename T>
  T* ContextAs() {
    loop()->DcheckInLoopThread();
    ColdState* cold = cold_.load(std::memory_order_acquire);
    return cold != nullptr ? cold->context.As<T>() : nullptr;
  }
  // Connection::EmplaceContext() — makes a T the context (in OnConnect, say) and returns it.
  // Loop thread only, as ContextAs.
  template <typename T, typename... Args>
  T& EmplaceContext(Args&&... args) {
    loop()->DcheckInLoopThread();
    SetContext(std::any(std::in_place_type<T>, std::forward<Args>(args)...));
    return *ContextAs<T>();
  }

  bool Connected() const { return state_.load(std::memory_order_acquire) == State::kConnected; }
  State state() const { return state_.load(std::memory_order_acquire); }
  // Connection::PeerAddr() — the peer's address, as accepted or dialed (without an IPv6 flow
  // label: see PackedInetAddress).
  InetAddress PeerAddr() const { return peer_.Unpack(); }
  // Connection::LocalAddr() — asked of the socket (getsockname) rather than kept: it is rarely
  // needed and every connection would pay 28 bytes for it. Empty once closed.
  InetAddress LocalAddr() const;
  int fd() const { return fd_; }
  EventLoop* loop() const { return config_->loop.get(); }
  // Connection::LoopIndex() — which of the server's worker loops serves this connection (0 ..
  // NumLoops-1; Config::loop_index), to reach per-loop state (see Handler::OnLoopStart).
  // Thread-safe.
  size_t LoopIndex() const { return config_->loop_index; }

  // Buffered bytes, and whether the connection reads now. Loop thread only (checked in debug
  // builds).
  size_t ReadBufferLength() const {
    loop()->DcheckInLoopThread();
    return input_.Length();
  }
  size_t WriteBufferLength() const {
    loop()->DcheckInLoopThread();
    return output_.Length();
  }
  bool reading() const {
    loop()->DcheckInLoopThread();
    return reading_;
  }

  // Connection::PauseReading() / ResumeReading() — stop and restart reading from the peer, as
  // a proxy does to the side whose bytes the other side cannot take yet. Bytes the peer sends
  // meanwhile wait in the kernel (its window then closes), none are lost; a peer's FIN is seen
  // once reading resumes. Independent of the high-water pause: reading runs only when neither
  // holds it. When reading resumes (either way), or output drains below the low-water mark,
  // and the handler's last on_message consumed part of the input and left the rest, it gets
  // the rest again, in a task of its own: a handler may stop consuming a pipeline while its
  // replies drain, and go on from where it stopped. Loop thread only.
  void PauseReading();
  void ResumeReading();

  // Connection::PeerCredentials() — who is on the other end of a Unix socket: for an accepted
  // connection the process that connected, as at connect(); for a dialed one the listener, as
  // at its listen(). FailedPrecondition for TCP. Loop thread only.
  absl::StatusOr<gev::PeerCredentials> PeerCredentials() const;

  // The loop as a shared pointer: to run another connection on this one's loop (a proxy's
  // upstream beside its downstream). Thread-safe.
  const std::shared_ptr<EventLoop>& shared_loop() const { return config_->loop; }

 private:
  friend class TransportIo;
  friend Transport* TransportOf(const Connection& connection);
  struct PrivateTag {};

 public:
  // Use Create(); public only for std::make_shared (one allocation with the control block).
  Connection(PrivateTag, std::shared_ptr<const Config> config, int fd, const InetAddress& peer);

 private:
  // What few connections need; see cold_.
  struct ColdState {
    ContextSlot context;  // Any thread.
    // Loop thread only: the transport session (Config::transport) and its state, here rather
    // than in the connection's flags because only a transport's connections have them.
    std::unique_ptr<Transport> transport;
    // The reason the connection ends with once the peer's end of stream is handled (a
    // transport's peer_close_reason).
    absl::Status end_reason;
    bool transport_shut = false;        // Transport::Shutdown has run.
    bool transport_read_queued = false;  // A QueueTransportRead task is pending.
    // The transport read the peer's end while reading was paused with input undelivered: the
    // end is acted on after that input, on ResumeReading (as a paused plain connection does
    // not read the FIN).
    bool transport_end_pending = false;
    // The reason the first Close(reason) with an error gave, for on_close once output is
    // flushed: set once, by any thread, before that Close() marks the connection closing, so
    // that the loop cannot close it with OK in between.
    std::atomic<absl::Status*> close_reason{nullptr};
    // Loop thread only: when lingering ends at the latest (EventLoop::NowMs); set when a close
    // for an error begins, or else when lingering does.
    uint64_t linger_until_ms = 0;

    ColdState() = default;
    ColdState(const ColdState&) = delete;
    ColdState& operator=(const ColdState&) = delete;
    ~ColdState() { delete close_reason.load(std::memory_order_acquire); }
  };

  // The loop's callback for this connection's descriptor (EventLoop::AddHandler): a plain
  // function rather than a virtual one, so that no connection carries a virtual table pointer.
  static void DispatchEvent(void* connection, const PollEvent& event) {
    static_cast<Connection*>(connection)->HandleEvent(event);
  }
  void HandleEvent(const PollEvent& event);

  const Options& options() const { return config_->options; }
  ColdState* EnsureColdState();
  // Writes what the output holds, then: all written, the close or shutdown that waited for it;
  // some left, write interest until it drains. `drained_callback`: call on_write_complete when
  // output that waited for the socket has drained (not for output only gathered).
  void WriteBuffered(bool drained_callback);
  // SendAll's one writev of the gathered output and `pieces` (`total` bytes, reserved).
  absl::Status WriteAllNow(std::initializer_list<std::string_view> pieces, size_t total);
  // Writes what was gathered: when the connection's own event has been handled, or as the
  // before-poll task.
  void FlushGathered();
  // Arranges FlushGathered once: at the end of the connection's own event when it is being
  // handled, else before the loop next polls.
  void QueueGatheredFlush();
  // One write of the output, counted; false when it failed and closed the connection.
  bool WriteOutputOrClose();
  // The one try a closing connection gives what it holds: unless the output waits for the
  // socket already (the try would only say EAGAIN). Errors are left to the close.
  void TryWriteOnce();
  // Counts one write system call of `n` bytes.
  void CountWrite(size_t n);
  // Counts `n` bytes read from the socket, and the activity.
  void CountBytesRead(size_t n);
  const Callbacks& callbacks() const { return config_->callbacks; }

  void HandleRead(const ConnectionPtr& self);
  void HandleWrite();
  // Writes what it can of `slices` now (if nothing is pending), buffers the rest. When the
  // slices are all of `whole_source`, the rest is buffered by taking that buffer's storage.
  // `reserved`: the caller has already counted the bytes in output_budget_.
  absl::Status SendSlicesInLoop(const RingBuffer::Slices& slices,
                                RingBuffer* whole_source = nullptr, bool reserved = false);
  // SendSlicesInLoop of bytes on their way to the socket (the transport's, or the user's when
  // there is no transport).
  absl::Status SendWireInLoop(const RingBuffer::Slices& slices, RingBuffer* whole_source,
                              bool reserved);

  // The transport layer (net/connection_transport.cc): the plain paths above branch to it
  // once, at their entry (Establish, HandleRead, SendSlicesInLoop, SendAll), and at the two
  // places where a transport has last words (FinishIfFlushed, CloseInLoop).
  Transport* transport() const {
    ColdState* cold = has_transport_ ? cold_.load(std::memory_order_acquire) : nullptr;
    return cold != nullptr ? cold->transport.get() : nullptr;
  }
  // The transport's state; only while has_transport_ (the cold state exists then).
  ColdState& session() const { return *cold_.load(std::memory_order_acquire); }
  // Makes the transport, arms the handshake timer and starts the handshake (kHandshaking).
  void StartTransport(absl::Status registered);
  // The user's bytes through the transport: its wire bytes replace their reservation.
  absl::Status SendThroughTransport(const RingBuffer::Slices& slices, bool reserved);
  // TransportIo::Write: buffers the bytes (FlushTransportOutput writes them).
  bool WriteFromTransport(std::string_view wire_bytes);
  // After a transport call that may have written: gathers what it wrote if that is small and
  // `may_gather`, writes it otherwise (one writev for all its records). `before`:
  // output_.Length() before the call.
  void FlushTransportOutput(size_t before, bool may_gather = true);
  // Reads through the transport, runs on_connect when its handshake completes, delivers what
  // it yields.
  void HandleTransportRead(const ConnectionPtr& self);
  // The transport may hold input the socket will not signal again (read past its per-call
  // limit, or delivered while reading was paused): read and deliver it in a task of its own.
  void QueueTransportRead();
  // The transport's handshake completed: kConnected, on_connect, and the idle timer in place
  // of the handshake timer.
  void OnTransportEstablished(const ConnectionPtr& self);
  void OnHandshakeTimeout();
  // Before the FIN of an orderly end: the transport's last words (TLS close_notify), once,
  // unless the peer broke its stream off without its own. True when they were written now.
  bool WriteTransportLastWords();
  // The peer's end of stream (a FIN): deliver what is pending, then close.
  void OnPeerClosed();
  // Counts `n` more bytes as pending; false, counting nothing, if that would pass the cap.
  bool ReserveOutput(size_t n) { return output_budget_.Reserve(n, options().max_pending_output); }
  absl::Status PendingOutputExhausted(size_t n) const {
    return output_budget_.Exhausted(n, options().max_pending_output);
  }
  void AfterOutputDrained();
  void CheckHighWater(size_t before);
  // Output fell below the low-water mark after a crossing of the high one: reading resumes
  // (if the connection paused itself), and on_low_water follows an on_high_water.
  void CrossBelowLowWater();
  void SetReading(bool on);
  // Reading resumed with input the handler left: on_message gets it again in a task.
  void QueueInputDelivery();
  // on_message with the input, noting whether the handler left part of it on purpose.
  void DeliverInput(const ConnectionPtr& self);
  // HandleEvent's work: reads, writes, and closes for errors and hang-ups.
  void HandleReadiness(const ConnectionPtr& self, const PollEvent& event);
  void UpdateInterest();
  // Marks the connection closed and stops its events; Teardown() follows as a loop task.
  // `reset`: end with RST even if no output is left (the stream is known to be incomplete).
  void CloseInLoop(absl::Status reason, bool reset = false);
  // Closes the descriptor (RST if output is left, or `reset`), releases the buffers, runs
  // on_close.
  void Teardown(absl::Status reason, bool reset);
  // Once nothing is pending (buffered or queued from other threads): the half-close or close
  // that was asked for.
  void FinishIfFlushed();
  bool AcceptsSends() const {
    return state_.load(std::memory_order_seq_cst) == State::kConnected &&
           !write_closing_.load(std::memory_order_seq_cst);
  }
  void CloseWhenFlushed(absl::Status reason);
  // A close for an error did not get its output written within error_close_timeout.
  void OnErrorCloseTimeout();
  // The output of a Close() is written: FIN, and lingering (reading and dropping) while the
  // peer may still be sending. True when lingering; `reason` is the close's.
  bool LingerBeforeClose(const absl::Status& reason);
  // Lingering: reads and drops what the peer sends; its FIN, a reset or an error ends it.
  void DiscardLingeringInput();
  static constexpr int kMaxLingeringReads = 16;
  // Lingering: quiet for linger_quiet, or past the end of the whole linger: closes.
  void OnLingerTimer();
  // What Close(reason) was given, or OK.
  absl::Status CloseReason() const;
  void MarkActive();
  // The connection's one deadline (timer_) runs `on_fire` after `delay`, if the connection
  // is still there.
  void ArmTimer(absl::Duration delay, void (Connection::*on_fire)());
  void OnIdleTimer();

  // Holds `config` for a new connection: its self-reference, taken by the first (see Config).
  static const Config* HoldConfig(std::shared_ptr<const Config> config);
  void ReleaseConfig();

  // Laid out for size (an idle connection's bytes are part of the library's promise): 136
  // bytes, which with the shared_ptr's control block make one 160-byte heap chunk.
  const Config* const config_;
  const PackedInetAddress peer_;
  const int fd_;
  // When the connection was last active: read by the idle timer and while lingering only.
  ActivityStamp last_active_;
  std::atomic<State> state_{State::kConnecting};
  // ShutdownWrite() was called: Send refuses from then on (any thread).
  std::atomic<bool> write_closing_{false};

  // Loop-thread-only state.
  bool reading_ : 1;
  bool writing_ : 1;
  bool registered_ : 1;
  bool peer_closed_ : 1;  // We read the peer's FIN.
  bool shutdown_requested_ : 1;
  bool write_shut_ : 1;
  bool above_high_water_ : 1;
  bool high_water_reported_ : 1;  // on_high_water ran; on_low_water is owed.
  bool fd_closed_ : 1;
  bool read_paused_ : 1;  // PauseReading(), until ResumeReading().
  bool flush_queued_ : 1;  // Gathered output waits for its flush (see QueueGatheredFlush).
  bool input_delivery_queued_ : 1;  // A QueueInputDelivery task is pending.
  // The last on_message consumed part of the input and left the rest (see DeliverInput).
  bool input_left_by_handler_ : 1;
  bool has_transport_ : 1;         // cold_->transport is set (Config::transport).
  // on_connect has run: on_close ends the connection, not on_transport_error.
  bool connect_reported_ : 1;
  // Closing with the peer's unread bytes in the kernel: FIN sent after the output, reading
  // and discarding until the peer's FIN (a close with bytes unread would be a reset that can
  // destroy the replies just written before the peer reads them).
  bool lingering_ : 1;
  // Bytes accepted and not yet written or dropped; at most max_pending_output. In what would
  // otherwise be padding.
  OutputBudget output_budget_;

  // Allocated on first need: most connections never have a context or a backlog past the
  // ring. Set once (either thread may create it, hence atomic), freed by the destructor.
  std::atomic<ColdState*> cold_{nullptr};

  // Loop-thread-only state.
  RingBuffer input_;
  OutputQueue output_;
  // The idle timeout (activity noted only while options().idle_timeout is set); while a
  // transport's handshake runs, its timeout; while a close for an error flushes, its limit.
  DeadlineTimer timer_;
};

}  // namespace gev

#endif  // GEV_NET_CONNECTION_H_

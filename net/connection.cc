#include "net/connection.h"

#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#if defined(__linux__)
#include <linux/sockios.h>  // SIOCOUTQ
#endif
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "eventloop/log.h"
#include "net/socket_ops.h"

namespace gev {
namespace {

// The connection whose HandleEvent runs on this thread, if any: what its own callbacks send is
// flushed when they have returned (see QueueGatheredFlush).
thread_local const Connection* connection_in_event = nullptr;

// For counters with one writer (the loop thread): no read-modify-write instruction needed.
void Count(std::atomic<uint64_t>& counter, uint64_t n) {
  counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

}  // namespace

ConnectionPtr Connection::Create(std::shared_ptr<const Config> config, int fd,
                                 const InetAddress& peer) {
  return std::make_shared<Connection>(PrivateTag{}, std::move(config), fd, peer);
}

Connection::Connection(PrivateTag, std::shared_ptr<const Config> config, int fd,
                       const InetAddress& peer)
    : config_(HoldConfig(std::move(config))),
      peer_(peer),
      fd_(fd),
      reading_(false),
      writing_(false),
      registered_(false),
      peer_closed_(false),
      shutdown_requested_(false),
      write_shut_(false),
      above_high_water_(false),
      high_water_reported_(false),
      fd_closed_(false),
      read_paused_(false),
      flush_queued_(false),
      input_delivery_queued_(false),
      input_left_by_handler_(false),
      has_transport_(false),
      connect_reported_(false),
      lingering_(false) {
  input_.set_limit(options().max_input_bytes);
}

InetAddress Connection::LocalAddr() const {
  if (state() == State::kDisconnected) return InetAddress();
  absl::StatusOr<InetAddress> local = sockets::LocalAddress(fd_);
  return local.ok() ? *local : InetAddress();
}

Connection::~Connection() {
  // Closed by Teardown() unless the connection never got that far (never established, or its
  // loop stopped before the teardown task ran).
  if (!fd_closed_) ::close(fd_);
  delete cold_.load(std::memory_order_acquire);
  ReleaseConfig();  // Last: it may destroy the Config. No member's destructor reads it.
}

const Connection::Config* Connection::HoldConfig(std::shared_ptr<const Config> config) {
  const Config* held = config.get();
  std::lock_guard<std::mutex> lock(held->holders_mutex_);
  if (held->holders_++ == 0) held->self_ = std::move(config);
  return held;
}

void Connection::ReleaseConfig() {
  std::shared_ptr<const Config> last;
  {
    std::lock_guard<std::mutex> lock(config_->holders_mutex_);
    if (--config_->holders_ == 0) last = std::move(config_->self_);
  }
  // `last` goes out of scope here, after the lock: it may destroy the Config and its mutex.
}

Connection::ColdState* Connection::EnsureColdState() {
  ColdState* cold = cold_.load(std::memory_order_acquire);
  if (cold != nullptr) return cold;
  // SetContext (any thread) and the loop (spilling output) may race to create it.
  auto fresh = std::make_unique<ColdState>();
  if (cold_.compare_exchange_strong(cold, fresh.get(), std::memory_order_acq_rel)) {
    return fresh.release();
  }
  return cold;  // The other one won; `fresh` goes.
}

void Connection::Establish() {
  loop()->AssertInLoopThread();
  ConnectionPtr self = shared_from_this();
  bool handshake = config_->transport != nullptr;
  state_.store(handshake ? State::kHandshaking : State::kConnected, std::memory_order_release);
  reading_ = true;
  absl::Status registered = loop()->AddHandler(fd_, Interest::kRead, this, &DispatchEvent);
  registered_ = registered.ok();
  Count(config_->counters.opened, 1);
  MarkActive();
  if (handshake) {
    StartTransport(std::move(registered));
    return;
  }
  connect_reported_ = true;
  if (callbacks().on_connect) callbacks().on_connect(self);
  if (!registered.ok()) {
    CloseInLoop(registered);
    return;
  }
  if (options().idle_timeout > absl::ZeroDuration() && state() != State::kDisconnected) {
    ArmTimer(std::min(options().idle_timeout, ActivityStamp::kMaxQuiet),
             &Connection::OnIdleTimer);
  }
}

void Connection::CountBytesRead(size_t n) {
  Count(config_->counters.bytes_read, n);
  MarkActive();
}

void Connection::HandleEvent(const PollEvent& event) {
  loop()->DcheckInLoopThread();
  // Keeps this connection alive until the event is handled, whatever the callbacks release.
  ConnectionPtr self = shared_from_this();
  const bool flush_task_queued = flush_queued_;  // Bytes others gathered for it, flushed later.
  const Connection* outer = connection_in_event;
  connection_in_event = this;
  HandleReadiness(self, event);
  // Cleared before the flush: what the flush itself gathers (a transport's last words, after
  // the reply) goes to the before-poll task.
  connection_in_event = outer;
  // What this connection's own callbacks sent while it handled the event goes out now, with
  // one writev, while the connection and its buffer are in cache (QueueGatheredFlush left it
  // for here), rather than before the loop polls, after the rest of the batch. Its output
  // block is back in the pool before the next connection's event, too. Closed meanwhile:
  // CloseInLoop made its one try at writing it (an orderly close's).
  if (flush_queued_ && !flush_task_queued && state() != State::kDisconnected) FlushGathered();
}

void Connection::HandleReadiness(const ConnectionPtr& self, const PollEvent& event) {
  if (event.error && lingering_) {
    // The output was written and the peer gave up on the rest: the close's own reason.
    CloseInLoop(CloseReason());
    return;
  }
  if (event.error) {
    int error = event.error_code != 0 ? event.error_code : sockets::PendingError(fd_);
    CloseInLoop(absl::ErrnoToStatus(error != 0 ? error : EIO, "socket error"));
    return;
  }
  if (event.readable && reading_) {
    // Close() from another thread stops reading when its task runs; until then, no input is
    // read or delivered after it.
    if (state() == State::kConnected || state() == State::kHandshaking) {
      HandleRead(self);
    } else if (lingering_) {
      DiscardLingeringInput();
    } else {
      SetReading(false);
    }
  }
  if (state() == State::kDisconnected) return;
  if (event.writable && writing_) HandleWrite();
  if (state() == State::kDisconnected) return;
  // Not reading (paused, or after the peer's FIN) and the socket is hung up: nothing more can
  // be delivered, and level-triggered polling would report the hang-up forever.
  if (event.hangup && !reading_ && !event.writable) {
    CloseInLoop(absl::UnavailableError("peer hung up"));
  }
}

void Connection::HandleRead(const ConnectionPtr& self) {
  if (has_transport_) {
    HandleTransportRead(self);
    return;
  }
  ssize_t n;
  for (int reads = 1;; ++reads) {
    size_t offered = 0;
    n = input_.ReadFromFd(fd_, loop()->scratch_buffer(), EventLoop::kScratchSize, &offered);
    if (n <= 0) break;
    CountBytesRead(static_cast<size_t>(n));
    DeliverInput(self);
    // A read that took all it asked for (up to a 64 KiB block, see ReadFromFd) most likely
    // left more in the socket: a flood, or a large message. Read it now rather than after
    // another poll, as libuv does, up to Options::reads_per_event times, while nothing waits
    // for the socket (replies over kGatherBytes have gone; smaller ones leave at the event's
    // end). A read that took less emptied the socket, so request/response pays no extra read
    // for it.
    if (static_cast<size_t>(n) == offered && reads < options().reads_per_event && reading_ &&
        !writing_ && state() == State::kConnected) {
      continue;
    }
    break;
  }
  const int read_error = n < 0 ? errno : 0;
  // Leftover bytes (a partial frame) should not pin a burst-sized block.
  if (!input_.IsEmpty()) input_.ShrinkToFit();
  if (n > 0) return;
  if (n == 0) {
    OnPeerClosed();
    return;
  }
  if (read_error == EAGAIN || read_error == EWOULDBLOCK) return;
  if (read_error == ENOBUFS) {
    CloseInLoop(absl::ResourceExhaustedError("input buffer limit exceeded"));
    return;
  }
  CloseInLoop(absl::ErrnoToStatus(read_error, "read"));
}

void Connection::OnPeerClosed() {
  peer_closed_ = true;
  SetReading(false);
  if (options().half_close && callbacks().on_peer_shutdown && !write_shut_ &&
      state() == State::kConnected) {
    // Only the peer's direction has ended: this one stays open until the owner shuts it
    // (FinishIfFlushed closes once both are done). Not inside another callback: this runs
    // from the read path after on_message has returned.
    callbacks().on_peer_shutdown(shared_from_this());
    return;
  }
  State expected = State::kConnected;
  state_.compare_exchange_strong(expected, State::kDisconnecting);
  FinishIfFlushed();
}

void Connection::HandleWrite() { WriteBuffered(/*drained_callback=*/true); }

void Connection::FlushGathered() {
  flush_queued_ = false;
  // Closed meanwhile (Teardown owns the output now), or the output already waits for the
  // socket.
  if (state() == State::kDisconnected || writing_) return;
  if (output_.Length() == 0) {
    // A larger send wrote the gathered bytes at once; a close or shutdown that waited for
    // them (the peer's FIN came in between) happens now.
    FinishIfFlushed();
    return;
  }
  WriteBuffered(/*drained_callback=*/false);
}

void Connection::CountWrite(size_t n) {
  Count(config_->counters.writes, 1);
  Count(config_->counters.bytes_written, n);
  output_budget_.Release(n);
  MarkActive();
}

void Connection::QueueGatheredFlush() {
  if (flush_queued_) return;
  flush_queued_ = true;
  // In this connection's own event: HandleEvent flushes when its callbacks have returned.
  if (connection_in_event == this) return;
  loop()->QueueBeforePoll([self = shared_from_this()] { self->FlushGathered(); });
}

bool Connection::WriteOutputOrClose() {
  ssize_t n = output_.WriteTo(fd_).bytes;
  if (n >= 0) {
    CountWrite(static_cast<size_t>(n));
  } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
    CloseInLoop(absl::ErrnoToStatus(errno, "write"));
    return false;
  }
  return true;
}

void Connection::TryWriteOnce() {
  if (writing_ || output_.Length() == 0) return;
  ssize_t n = output_.WriteTo(fd_).bytes;
  if (n > 0) CountWrite(static_cast<size_t>(n));
}

void Connection::WriteBuffered(bool drained_callback) {
  if (!WriteOutputOrClose()) return;
  if (above_high_water_ && output_.Length() < options().low_water_mark) CrossBelowLowWater();
  if (output_.Length() != 0) {
    if (!writing_) {
      writing_ = true;
      UpdateInterest();
    }
    return;
  }
  if (!writing_) {
    // Gathered output that the socket took whole: as a send written at once.
    FinishIfFlushed();
    return;
  }
  writing_ = false;
  UpdateInterest();
  if (drained_callback) {
    AfterOutputDrained();
  } else {
    FinishIfFlushed();
  }
}

void Connection::AfterOutputDrained() {
  if (state() == State::kDisconnected) return;  // UpdateInterest may have failed.
  // A handshake's flight that had to wait for the socket is no output of the user's: no
  // callback before on_connect.
  if (connect_reported_ && callbacks().on_write_complete) {
    callbacks().on_write_complete(shared_from_this());
  }
  // The callback may have sent more (a producer resuming, its last chunk before a Close()):
  // the shutdown or close waits for that too.
  FinishIfFlushed();
}

void Connection::FinishIfFlushed() {
  if (state() == State::kDisconnected || writing_ || lingering_) return;
  // Bytes other threads had accepted are still queued to this loop: they go first.
  if (!output_budget_.NothingPending()) return;
  bool ending = (shutdown_requested_ && !write_shut_) || state() == State::kDisconnecting;
  if (ending && has_transport_) {
    size_t before = output_.Length();
    if (WriteTransportLastWords()) {
      // Before the FIN; once they are written this runs again (from the write path or the
      // gathered flush).
      FlushTransportOutput(before);
      if (state() == State::kDisconnected || writing_ || !output_budget_.NothingPending()) {
        return;
      }
    }
  }
  ColdState* cold = cold_.load(std::memory_order_acquire);
  bool peer_broke_off = cold != nullptr && !cold->end_reason.ok();
  if (shutdown_requested_ && !write_shut_) {
    ::shutdown(fd_, SHUT_WR);
    write_shut_ = true;
  }
  if (write_shut_ && peer_closed_) {
    // Both directions are done (a half-closed connection whose owner has shut its side).
    State expected = State::kConnected;
    state_.compare_exchange_strong(expected, State::kDisconnecting);
  }
  if (state() == State::kDisconnecting) {
    // The peer's broken end comes first; then a reason Close() was given; else an orderly end.
    absl::Status reason = peer_broke_off ? cold->end_reason : CloseReason();
    // Not when the peer's end has been read already (by a transport, while paused), nor before
    // anything was exchanged (a close during the handshake).
    bool peer_may_send = !peer_closed_ && !peer_broke_off && connect_reported_ &&
                         !(has_transport_ && session().transport_end_pending);
    if (peer_may_send && LingerBeforeClose(reason)) return;
    CloseInLoop(std::move(reason));
  }
}

bool Connection::LingerBeforeClose(const absl::Status& reason) {
  if (options().linger_quiet <= absl::ZeroDuration() ||
      options().error_close_timeout <= absl::ZeroDuration()) {
    return false;
  }
  // A peer that was sent an error is likely mid-stream; otherwise only bytes already waiting
  // say that it is still sending (an orderly close of an idle or finished peer stays prompt).
  int unread = 0;
  bool unread_bytes = ::ioctl(fd_, FIONREAD, &unread) == 0 && unread > 0;
  if (reason.ok() && !unread_bytes) return false;
  // What was written goes first, then the FIN; the kernel delivers them while the peer's bytes
  // are drained here, and closing after the peer's FIN (or its silence) resets nothing.
  if (!write_shut_) {
    ::shutdown(fd_, SHUT_WR);
    write_shut_ = true;
  }
  lingering_ = true;
  uint64_t now = loop()->NowMs();
  ColdState* cold = EnsureColdState();
  // A close for an error set its end when it began (CloseWhenFlushed): flushing and lingering
  // share error_close_timeout. An orderly close's linger starts its own.
  if (cold->linger_until_ms == 0) {
    cold->linger_until_ms =
        now + static_cast<uint64_t>(absl::ToInt64Milliseconds(options().error_close_timeout));
  }
  last_active_.Touch(now);
  uint64_t until = cold->linger_until_ms;
  // Capped as idle timeouts are, so that the stamp reads the quiet right when it fires.
  ArmTimer(std::min({options().linger_quiet, ActivityStamp::kMaxQuiet,
                     absl::Milliseconds(static_cast<int64_t>(until > now ? until - now : 0))}),
           &Connection::OnLingerTimer);
  SetReading(true);
  DiscardLingeringInput();
  return true;
}

void Connection::DiscardLingeringInput() {
  // A few reads per event, so that a fast sender cannot keep the loop from the others; polling
  // is level-triggered, so the rest is reported again.
  for (int reads = 0; reads < kMaxLingeringReads; ++reads) {
    ssize_t n = ::read(fd_, loop()->scratch_buffer(), EventLoop::kScratchSize);
    if (n > 0) {
      last_active_.Touch(loop()->NowMs());
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    // The peer's FIN (or its reset, or an error): nothing more to wait for. The reason is the
    // close's own: the output was written and these bytes were never the user's to read.
    CloseInLoop(CloseReason());
    return;
  }
}

void Connection::OnLingerTimer() {
  timer_.Fired();
  if (state() == State::kDisconnected) return;
  uint64_t now = loop()->NowMs();
  uint64_t until = cold_.load(std::memory_order_acquire)->linger_until_ms;
  absl::Duration quiet_left = last_active_.IdleRemaining(now, options().linger_quiet);
  if (quiet_left == absl::ZeroDuration() || now >= until) {
    // Everything was written; a peer still sending gets the kernel's reset for the rest.
    CloseInLoop(CloseReason());
    return;
  }
  ArmTimer(std::min(quiet_left, absl::Milliseconds(static_cast<int64_t>(until - now))),
           &Connection::OnLingerTimer);
}

absl::Status Connection::Send(std::string_view data) {
  if (!AcceptsSends()) return absl::FailedPreconditionError("connection is closing or closed");
  if (!ReserveOutput(data.size())) return PendingOutputExhausted(data.size());
  // Checked again after reserving (both sequentially consistent): a Close() or ShutdownWrite()
  // racing with this call either is seen here, or sees the reservation and waits for these
  // bytes before it closes.
  if (!AcceptsSends()) {
    output_budget_.Release(data.size());
    return absl::FailedPreconditionError("connection is closing or closed");
  }
  if (loop()->IsInLoopThread()) return SendSlicesInLoop({data, {}}, nullptr, /*reserved=*/true);
  bool queued = loop()->QueueInLoop([self = shared_from_this(), bytes = std::string(data)] {
    // Accepted while connected: delivered before a Close() or ShutdownWrite() that came after
    // it. A failure here closes the connection, and OnClose carries the reason (a
    // disconnected connection's OnClose counted these bytes as unsent).
    (void)self->SendSlicesInLoop({bytes, {}}, nullptr, /*reserved=*/true);
    self->FinishIfFlushed();
  });
  if (!queued) {
    output_budget_.Release(data.size());
    return absl::FailedPreconditionError("the connection's loop has stopped");
  }
  return absl::OkStatus();
}

absl::Status Connection::SendAll(std::initializer_list<std::string_view> pieces) {
  size_t total = 0;
  for (std::string_view piece : pieces) total += piece.size();
  if (!AcceptsSends()) return absl::FailedPreconditionError("connection is closing or closed");
  if (!ReserveOutput(total)) return PendingOutputExhausted(total);
  if (!AcceptsSends()) {  // As in Send.
    output_budget_.Release(total);
    return absl::FailedPreconditionError("connection is closing or closed");
  }
  if (!loop()->IsInLoopThread()) {
    std::string joined;
    joined.reserve(total);
    for (std::string_view piece : pieces) joined.append(piece);
    bool queued = loop()->QueueInLoop([self = shared_from_this(), bytes = std::move(joined)] {
      // As in Send: a failure here closes the connection with the reason.
      (void)self->SendSlicesInLoop({bytes, {}}, nullptr, /*reserved=*/true);
      self->FinishIfFlushed();
    });
    if (!queued) {
      output_budget_.Release(total);
      return absl::FailedPreconditionError("the connection's loop has stopped");
    }
    return absl::OkStatus();
  }
  size_t gathered = output_.Length();
  bool gather = options().gather_writes &&
                gathered + total <= std::min(kGatherBytes, options().high_water_mark);
  // With a transport each piece goes through it (below): its records are what is written.
  if (!gather && !writing_ && !has_transport_ && total > 0 &&
      pieces.size() <= kMaxSendAllPieces && state() != State::kDisconnected && !write_shut_) {
    return WriteAllNow(pieces, total);
  }
  // Each piece reserved already; pieces after one that fails would leave a hole, so the first
  // failure (which closes the connection) releases the rest.
  size_t left = total;
  for (std::string_view piece : pieces) {
    absl::Status sent = SendSlicesInLoop({piece, {}}, nullptr, /*reserved=*/true);
    left -= piece.size();
    if (!sent.ok()) {
      output_budget_.Release(left);
      return sent;
    }
  }
  return absl::OkStatus();
}

absl::Status Connection::WriteAllNow(std::initializer_list<std::string_view> pieces,
                                     size_t total) {
  // One writev of what this iteration gathered and every piece; what the socket does not take
  // is buffered in order.
  static_assert(kMaxSendAllPieces <= OutputQueue::kMaxPiecesAfter);
  OutputQueue::Written n =
      output_.WriteTo(fd_, absl::Span<const std::string_view>(pieces.begin(), pieces.size()));
  size_t skip = 0;
  if (n.bytes >= 0) {
    CountWrite(static_cast<size_t>(n.bytes));
    skip = n.of_pieces;
  } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
    // The gathered bytes stay counted as pending: Teardown reports them unsent.
    output_budget_.Release(total);
    absl::Status reason = absl::ErrnoToStatus(errno, "write");
    CloseInLoop(reason);
    return reason;
  }
  size_t before = output_.Length();
  size_t unbuffered = total - skip;  // `skip`: what the writev took of the pieces.
  for (std::string_view piece : pieces) {
    if (skip >= piece.size()) {
      skip -= piece.size();
      continue;
    }
    if (!output_.Append(piece.substr(skip))) {
      // The pieces not buffered are released (as SendAll's other path does); the connection
      // ends with RST, as in SendSlicesInLoop: no hole in the stream.
      output_budget_.Release(unbuffered);
      absl::Status reason = absl::ResourceExhaustedError("no memory for pending output");
      CloseInLoop(reason, /*reset=*/true);
      return reason;
    }
    unbuffered -= piece.size() - skip;
    skip = 0;
  }
  if (output_.Length() != 0 && !writing_) {
    writing_ = true;
    UpdateInterest();
  }
  CheckHighWater(before);
  return absl::OkStatus();
}

absl::Status Connection::SendFromBuffer(RingBuffer& buffer, size_t n) {
  loop()->AssertInLoopThread();
  RingBuffer::Slices slices = buffer.Peek(n);
  bool whole = slices.size() == buffer.Length();
  absl::Status status = SendSlicesInLoop(slices, whole ? &buffer : nullptr);
  // Consumed only when sent (a no-op if the output buffer took the storage); refused bytes
  // stay with the caller.
  if (status.ok()) buffer.Retrieve(slices.size());
  return status;
}

absl::Status Connection::SendSlicesInLoop(const RingBuffer::Slices& slices,
                                          RingBuffer* whole_source, bool reserved) {
  if (has_transport_) return SendThroughTransport(slices, reserved);
  return SendWireInLoop(slices, whole_source, reserved);
}

absl::Status Connection::SendWireInLoop(const RingBuffer::Slices& slices,
                                        RingBuffer* whole_source, bool reserved) {
  size_t total = slices.size();
  if (state() == State::kDisconnected || write_shut_) {
    if (reserved) output_budget_.Release(total);
    return absl::FailedPreconditionError("connection is closed for writing");
  }
  if (total == 0) return absl::OkStatus();
  if (!reserved && !ReserveOutput(total)) return PendingOutputExhausted(total);
  size_t written = 0;
  bool gathering = false;
  if (!writing_) {
    // Not writing_: nothing waits for the socket, and what the output holds was gathered in
    // this iteration (less than the gather limit, all in the ring).
    size_t gathered = output_.Length();
    if (options().gather_writes &&
        gathered + total <= std::min(kGatherBytes, options().high_water_mark)) {
      gathering = true;
      QueueGatheredFlush();
    } else {
      // The gathered bytes (in the ring: nothing has spilled while not writing_), then these.
      OutputQueue::Written n = output_.WriteSlicesAfter(fd_, slices);
      if (n.bytes >= 0) {
        CountWrite(static_cast<size_t>(n.bytes));
        written = n.of_pieces;
      } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
        // The gathered bytes stay counted as pending: Teardown reports them unsent.
        output_budget_.Release(total);
        absl::Status reason = absl::ErrnoToStatus(errno, "write");
        CloseInLoop(reason);
        return reason;
      }
    }
  }
  if (written == total) return absl::OkStatus();

  size_t before = output_.Length();
  bool buffered = true;
  if (whole_source != nullptr && before == 0 && !gathering) {
    // A bulk echo's path: the output buffer takes the source's storage, tail and all, instead
    // of a copy of the tail. Not for gathered bytes, which are few: the source (an input
    // buffer, holding a read-sized block) keeps its block for the next read, and the output
    // takes a block of the reply's size.
    whole_source->Retrieve(written);
    output_.TakeFrom(*whole_source);
  } else if (written < slices.first.size()) {
    buffered = output_.Append(slices.first.substr(written)) && output_.Append(slices.second);
  } else {
    buffered = output_.Append(slices.second.substr(written - slices.first.size()));
  }
  if (!buffered) {
    // Out of memory for the backlog. Part of the stream may be missing now, so the connection
    // ends (RST) with the reason rather than go on with a hole in it.
    absl::Status reason = absl::ResourceExhaustedError("no memory for pending output");
    CloseInLoop(reason, /*reset=*/true);
    return reason;
  }
  if (!writing_ && !gathering) {
    writing_ = true;
    UpdateInterest();
  }
  CheckHighWater(before);
  return absl::OkStatus();
}

void Connection::CheckHighWater(size_t before) {
  // A handshake in progress has only its own small flights out, and must not stop reading.
  if (!connect_reported_) return;
  size_t after = output_.Length();
  if (above_high_water_ || after <= options().high_water_mark ||
      before > options().high_water_mark) {
    return;
  }
  above_high_water_ = true;
  if (options().pause_reading_at_high_water && reading_) SetReading(false);
  if (!callbacks().on_high_water) return;
  // Send runs inside user callbacks; the user hears of the crossing after the current one.
  // Never refused: this runs on the loop thread, before Run() has returned.
  (void)loop()->QueueInLoop([self = shared_from_this(), after] {
    // Still above: the output may have drained in between (then OnWriteComplete came first and
    // a producer must not be told to pause after it). Not reported yet: on_low_water comes
    // between two of them.
    if (self->state() != State::kDisconnected && self->above_high_water_ &&
        !self->high_water_reported_) {
      self->high_water_reported_ = true;
      self->callbacks().on_high_water(self, after);
    }
  });
}

void Connection::CrossBelowLowWater() {
  above_high_water_ = false;
  if (options().pause_reading_at_high_water && !peer_closed_ && !read_paused_ &&
      state() == State::kConnected) {
    SetReading(true);
  }
  // A handler that stopped at the mark with reading left on (no self-pause): the rest of its
  // input too.
  if (reading_ && input_left_by_handler_ && !has_transport_ && state() == State::kConnected) {
    QueueInputDelivery();
  }
  if (!high_water_reported_) return;
  // As on_high_water: after the current callback or event, and only while still below.
  // Never refused: this runs on the loop thread, before Run() has returned.
  (void)loop()->QueueInLoop([self = shared_from_this()] {
    if (self->state() == State::kDisconnected || self->above_high_water_ ||
        !self->high_water_reported_) {
      return;
    }
    self->high_water_reported_ = false;
    if (self->callbacks().on_low_water) self->callbacks().on_low_water(self);
  });
}

void Connection::PauseReading() {
  loop()->AssertInLoopThread();
  // Lingering reads only to drop what comes; stopping would leave it unread for the reset.
  if (lingering_) return;
  read_paused_ = true;
  SetReading(false);
}

void Connection::ResumeReading() {
  loop()->AssertInLoopThread();
  read_paused_ = false;
  bool held_by_high_water = above_high_water_ && options().pause_reading_at_high_water;
  bool open = state() == State::kConnected || state() == State::kHandshaking;
  if (open && !peer_closed_ && !held_by_high_water) SetReading(true);
}

void Connection::SetReading(bool on) {
  if (reading_ == on) return;
  reading_ = on;
  UpdateInterest();
  if (!on) return;
  if (has_transport_) {
    // A transport may have read (and decrypted) more than it delivered before reading
    // stopped; the socket will not say so again.
    if (state() != State::kHandshaking) QueueTransportRead();
    return;
  }
  // Input the handler left when reading stopped (it stopped consuming to let its output
  // drain): the socket will not say so again either.
  if (input_left_by_handler_) QueueInputDelivery();
}

void Connection::QueueInputDelivery() {
  if (input_delivery_queued_) return;
  input_delivery_queued_ = true;
  // Never refused: this is the loop thread, before Run() has returned.
  (void)loop()->QueueInLoop([self = shared_from_this()] {
    self->input_delivery_queued_ = false;
    if (self->state() != State::kConnected || !self->reading_ || self->input_.IsEmpty()) return;
    self->DeliverInput(self);
    if (!self->input_.IsEmpty()) self->input_.ShrinkToFit();
  });
}

void Connection::DeliverInput(const ConnectionPtr& self) {
  if (!callbacks().on_message) return;
  size_t before = input_.Length();
  callbacks().on_message(self, input_);
  // It consumed some and left the rest: it stopped on purpose (its output must drain first),
  // and gets the rest again when it may go on. A handler that consumed nothing waits for more
  // bytes, and handing it the same ones again would only spin.
  input_left_by_handler_ = !input_.IsEmpty() && input_.Length() < before;
}

absl::StatusOr<PeerCredentials> Connection::PeerCredentials() const {
  loop()->AssertInLoopThread();
  if (fd_closed_) return absl::FailedPreconditionError("connection closed");
  if (peer_.family() != AF_UNIX) {
    return absl::FailedPreconditionError("peer credentials exist for unix sockets only");
  }
  return sockets::GetPeerCredentials(fd_);
}

void Connection::UpdateInterest() {
  if (!registered_) return;
  uint8_t bits = (reading_ ? static_cast<uint8_t>(Interest::kRead) : 0) |
                 (writing_ ? static_cast<uint8_t>(Interest::kWrite) : 0);
  absl::Status updated =
      loop()->UpdateInterest(fd_, static_cast<Interest>(bits), this, &DispatchEvent);
  // A connection whose interest cannot change would stall or spin: it ends, with the reason.
  if (!updated.ok()) CloseInLoop(updated);
}

void Connection::ShutdownWrite() {
  if (state() == State::kDisconnected) return;
  // From now on Send refuses; what was accepted before, and a reply the current callback
  // returns, still goes out before the FIN.
  write_closing_.store(true, std::memory_order_seq_cst);
  // Refused only by a loop that has finished, when there is no connection left to shut down.
  (void)loop()->QueueInLoop([self = shared_from_this()] {
    if (self->state() == State::kDisconnected || self->write_shut_) return;
    self->shutdown_requested_ = true;
    self->FinishIfFlushed();
  });
}

void Connection::Close(absl::Status reason) {
  State current = state();
  if (current != State::kConnected && current != State::kHandshaking) return;
  if (!reason.ok()) {
    // Published before the state says closing: whichever path then finishes the close (this
    // close's task, a write that drains the output first, the peer's FIN) closes with it.
    auto published = std::make_unique<absl::Status>(reason);
    absl::Status* none = nullptr;
    if (EnsureColdState()->close_reason.compare_exchange_strong(none, published.get(),
                                                                std::memory_order_acq_rel)) {
      (void)published.release();  // Owned by the cold state now.
    }
  }
  // The loop may move kHandshaking to kConnected meanwhile: that is no reason to give up.
  while (!state_.compare_exchange_weak(current, State::kDisconnecting)) {
    if (current != State::kConnected && current != State::kHandshaking) return;
  }
  // On the loop thread, input stops now: no OnMessage follows a Close() made in OnConnect or
  // OnMessage. Replies computed before it are still sent (SendSlices), so the close itself
  // waits for the end of the current callback.
  if (loop()->IsInLoopThread()) SetReading(false);
  // Refused only by a loop that has finished: then nothing is served and the destructor closes
  // the descriptor.
  (void)loop()->QueueInLoop([self = shared_from_this(), reason = std::move(reason)]() mutable {
    self->CloseWhenFlushed(std::move(reason));
  });
}

void Connection::CloseWhenFlushed(absl::Status reason) {
  // Lingering: a send's task that ran first wrote the output and began the end already.
  if (state() == State::kDisconnected || lingering_) return;
  SetReading(false);
  if (!reason.ok()) {
    // In place of the idle timer: this close ends within the timeout either way.
    ArmTimer(options().error_close_timeout, &Connection::OnErrorCloseTimeout);
    EnsureColdState()->linger_until_ms =
        loop()->NowMs() +
        static_cast<uint64_t>(absl::ToInt64Milliseconds(options().error_close_timeout));
  }
  FinishIfFlushed();
}

absl::Status Connection::CloseReason() const {
  ColdState* cold = cold_.load(std::memory_order_acquire);
  absl::Status* reason =
      cold != nullptr ? cold->close_reason.load(std::memory_order_acquire) : nullptr;
  return reason != nullptr ? *reason : absl::OkStatus();
}

void Connection::OnErrorCloseTimeout() {
  timer_.Fired();
  if (state() == State::kDisconnected) return;
  absl::Status reason = CloseReason();
  // Teardown adds what was dropped; the stream is cut short, so RST.
  CloseInLoop(absl::Status(reason.code(),
                           absl::StrCat(reason.message(), "; the output was not written within ",
                                        absl::FormatDuration(options().error_close_timeout))),
              /*reset=*/true);
}

void Connection::ForceClose(absl::Status reason) {
  if (state() == State::kDisconnected) return;
  // An error reason means the stream did not end as the peer expects: it sees RST, not FIN.
  bool reset = !reason.ok();
  if (loop()->IsInLoopThread()) {
    // Safe inside a callback: CloseInLoop only marks the connection closed; the teardown and
    // OnClose run after the callback has returned.
    CloseInLoop(std::move(reason), reset);
    return;
  }
  // Refused only by a loop that has finished (see Close()). Sends accepted until the task runs
  // are dropped with the rest (an OK reason gives gathered ones one write) and counted in the
  // reason.
  (void)loop()->QueueInLoop(
      [self = shared_from_this(), reason = std::move(reason), reset]() mutable {
        self->CloseInLoop(std::move(reason), reset);
      });
}

void Connection::CloseInLoop(absl::Status reason, bool reset) {
  loop()->AssertInLoopThread();
  if (state() == State::kDisconnected) return;
  if (reason.ok() && !reset) {
    // An orderly close (ForceClose() with no reason). Gathered replies were as good as written
    // when they were sent (a send that is not gathered reaches the kernel at once), and a
    // transport's last words (TLS close_notify) let the peer tell the end from a truncation:
    // both get the one try that send would have made. What the socket does not take counts
    // as unsent in the reason. Closes for errors (a failed write, a reset, a timeout) drop
    // them as before.
    bool last_words = has_transport_ && !writing_ && WriteTransportLastWords();
    if (last_words || flush_queued_) TryWriteOnce();
  }
  state_.store(State::kDisconnected, std::memory_order_release);
  timer_.Cancel(*loop());
  if (registered_) {
    registered_ = false;
    // Either way no event of this descriptor reaches us after this line (the loop forgets the
    // handler first), and closing the descriptor takes it out of the kernel's interest list.
    absl::Status removed = loop()->RemoveHandler(fd_, this);
    if (!removed.ok()) {
      Log(LogSeverity::kWarning, absl::StrCat("connection fd ", fd_, ": ", removed.ToString()));
    }
  }
  reading_ = writing_ = false;
  // The descriptor stays open, and the buffers stay as they are, until the loop has finished
  // the current callback and poll batch: the number cannot be reused by a connection accepted
  // later in the batch (which would receive this one's stale events), and a caller's
  // RingBuffer& stays valid. Never refused: this is the loop thread, before Run() has returned.
  (void)loop()->QueueInLoop(
      [self = shared_from_this(), reason = std::move(reason), reset]() mutable {
        self->Teardown(std::move(reason), reset);
      });
}

void Connection::Teardown(absl::Status reason, bool reset) {
  // An orderly close by the owner (a server stopping) before on_connect is still a handshake
  // that did not complete, and on_transport_error says so.
  if (!connect_reported_ && reason.ok()) {
    reason = absl::CancelledError("closed before the handshake completed");
  }
  // Accepted and never written: buffered here, or still queued from other threads (those tasks
  // release their own count when they find the connection closed).
  size_t unsent = output_budget_.pending();
  output_budget_.Release(output_.Length());
  size_t kernel_unsent = 0;
#ifdef SIOCOUTQ
  int queued = 0;
  if (unsent > 0 && ::ioctl(fd_, SIOCOUTQ, &queued) == 0 && queued > 0) {
    kernel_unsent = static_cast<size_t>(queued);
  }
#endif
  if (unsent > 0) {
    std::string unsent_text = absl::StrCat(unsent, " bytes of output unsent");
    // The reset also drops what the kernel still held for the peer.
    if (kernel_unsent > 0) {
      absl::StrAppend(&unsent_text, " (and ", kernel_unsent, " in the kernel)");
    }
    reason = reason.ok() ? absl::AbortedError(absl::StrCat("closed with ", unsent_text))
                         : absl::Status(reason.code(),
                                        absl::StrCat(reason.message(), "; ", unsent_text));
  }
  // A FIN would make a truncated stream look complete: end it with RST.
  if (unsent > 0 || reset) sockets::SetLingerZero(fd_);
  ::close(fd_);
  fd_closed_ = true;
  size_t code = static_cast<size_t>(reason.code());
  if (code >= Counters::kCodes) code = static_cast<size_t>(absl::StatusCode::kUnknown);
  Count(config_->counters.closed[code], 1);
  input_.Reset();
  output_.Clear();
  if (connect_reported_) {
    if (callbacks().on_close) callbacks().on_close(shared_from_this(), reason);
  } else if (callbacks().on_transport_error) {
    callbacks().on_transport_error(shared_from_this(), reason);
  }
}

void Connection::MarkActive() {
  // Only the idle timer reads the time of last activity; without one, a clock read per read and
  // per write (about 20 ns each here) would be spent on every message for nothing.
  if (options().idle_timeout > absl::ZeroDuration()) last_active_.Touch(loop()->NowMs());
}

void Connection::ArmTimer(absl::Duration delay, void (Connection::*on_fire)()) {
  timer_.Arm(*loop(), delay, [weak = weak_from_this(), on_fire] {
    if (ConnectionPtr self = weak.lock()) ((*self).*on_fire)();
  });
}

void Connection::OnIdleTimer() {
  timer_.Fired();
  if (state() == State::kDisconnected) return;
  absl::Duration left = last_active_.IdleRemaining(loop()->NowMs(), options().idle_timeout);
  if (left == absl::ZeroDuration()) {
    CloseInLoop(absl::DeadlineExceededError("idle timeout"));
    return;
  }
  // Active since the timer was set: sleep until the new last-activity time plus the timeout.
  ArmTimer(left, &Connection::OnIdleTimer);
}

void Connection::SetContext(std::any context) {
  EnsureColdState()->context.Set(std::move(context));
}

std::any Connection::Context() const {
  ColdState* cold = cold_.load(std::memory_order_acquire);
  return cold != nullptr ? cold->context.Get() : std::any();
}

}  // namespace gev

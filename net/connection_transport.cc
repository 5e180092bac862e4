// The transport layer of Connection (net/transport.h): the handshake, reads and writes
// through the transport, its last words. The plain paths in connection.cc branch here once, at
// their entry; nothing here runs for a connection without a transport.

#include <algorithm>
#include <memory>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "net/connection.h"
#include "net/transport.h"

namespace gev {

int TransportIo::fd() const { return connection_->fd(); }

EventLoop* TransportIo::loop() const { return connection_->loop(); }

bool TransportIo::Write(std::string_view wire_bytes) {
  return connection_->WriteFromTransport(wire_bytes);
}

void TransportIo::CountRead(size_t n) { connection_->CountBytesRead(n); }

void TransportIo::Abort(absl::Status reason) {
  connection_->CloseInLoop(std::move(reason), /*reset=*/true);
}

Transport* TransportOf(const Connection& connection) { return connection.transport(); }

void Connection::StartTransport(absl::Status registered) {
  if (!registered.ok()) {
    CloseInLoop(std::move(registered));
    return;
  }
  absl::StatusOr<std::unique_ptr<Transport>> made = config_->transport->NewTransport(
      TransportContext{config_->dialed, config_->server_name});
  if (!made.ok()) {
    CloseInLoop(made.status());
    return;
  }
  EnsureColdState()->transport = std::move(*made);
  has_transport_ = true;
  absl::Duration limit = transport()->handshake_timeout();
  if (limit <= absl::ZeroDuration()) limit = options().idle_timeout;
  if (limit > absl::ZeroDuration()) ArmTimer(limit, &Connection::OnHandshakeTimeout);
  absl::Status started = transport()->Start(TransportIo(this));
  FlushTransportOutput(0, /*may_gather=*/false);  // A ClientHello: at once.
  if (!started.ok()) CloseInLoop(started, /*reset=*/true);
  // on_connect follows the handshake (HandleTransportRead).
}

void Connection::OnHandshakeTimeout() {
  timer_.Fired();
  // Not only while kHandshaking: a Close() during the handshake waits for its flights too.
  if (state() == State::kDisconnected || connect_reported_) return;
  CloseInLoop(absl::DeadlineExceededError(
                  absl::StrCat(transport()->name(), " handshake not completed in time")),
              /*reset=*/true);
}

bool Connection::WriteTransportLastWords() {
  if (!connect_reported_ || session().transport_shut || write_shut_) return false;
  // Not to a peer that broke its stream off without its own: it gets what was pending and the
  // FIN.
  if (!session().end_reason.ok()) return false;
  session().transport_shut = true;
  transport()->Shutdown(TransportIo(this));
  return true;
}

void Connection::OnTransportEstablished(const ConnectionPtr& self) {
  State handshaking = State::kHandshaking;
  if (!state_.compare_exchange_strong(handshaking, State::kConnected)) return;  // Closing.
  timer_.Cancel(*loop());
  connect_reported_ = true;
  MarkActive();
  if (callbacks().on_connect) callbacks().on_connect(self);
  if (options().idle_timeout > absl::ZeroDuration() && state() != State::kDisconnected &&
      !timer_.armed()) {
    ArmTimer(std::min(options().idle_timeout, ActivityStamp::kMaxQuiet),
             &Connection::OnIdleTimer);
  }
}

void Connection::HandleTransportRead(const ConnectionPtr& self) {
  Transport::ReadResult result;
  if (session().transport_end_pending) {
    // The end was read before; what came ahead of it is delivered first (below).
    session().transport_end_pending = false;
    result.peer_closed = true;
  } else {
    size_t before = output_.Length();
    result = transport()->Read(TransportIo(this), input_);
    // What reading made the transport say (handshake messages, alerts, tickets) goes first. A
    // handshake's flights are written at once, not gathered to the end of the loop's batch:
    // each can cost a signature (0.5 ms with RSA 2048), and a batch of them would leave every
    // client of the batch waiting for the last one's.
    FlushTransportOutput(before, /*may_gather=*/connect_reported_);
  }
  if (result.established) OnTransportEstablished(self);
  // As after a plain read: what arrived is delivered unless the connection stopped reading
  // (Close() or PauseReading() in on_connect; a paused connection gets it on ResumeReading).
  if (!input_.IsEmpty() && state() == State::kConnected && reading_) {
    DeliverInput(self);
    if (!input_.IsEmpty()) input_.ShrinkToFit();
  }
  if (state() == State::kDisconnected) return;
  if (!result.error.ok()) {
    // The alert the transport wrote gets one try now (it may have been queued to be gathered,
    // and the close would drop it), so the peer learns why; then a FIN, not a reset.
    TryWriteOnce();
    CloseInLoop(std::move(result.error));
    return;
  }
  if (result.peer_closed) {
    if (!result.peer_close_reason.ok()) {
      session().end_reason = std::move(result.peer_close_reason);
    }
    if (!connect_reported_) {
      // Ended before its handshake did: nothing to deliver or flush for the user.
      absl::Status reason = session().end_reason;
      CloseInLoop(reason.ok() ? absl::UnavailableError(absl::StrCat(
                                    transport()->name(), ": peer closed during the handshake"))
                              : reason);
      return;
    }
    if (!input_.IsEmpty() && !reading_) {
      // Paused (in on_connect, say) with plaintext that came ahead of the end: it is delivered
      // on ResumeReading, and then the end.
      session().transport_end_pending = true;
      return;
    }
    OnPeerClosed();
    return;
  }
  if (result.more) QueueTransportRead();
}

void Connection::QueueTransportRead() {
  if (session().transport_read_queued) return;
  session().transport_read_queued = true;
  // Never refused: this is the loop thread, before Run() has returned.
  (void)loop()->QueueInLoop([self = shared_from_this()] {
    self->session().transport_read_queued = false;
    if (self->state() == State::kConnected && self->reading_) self->HandleTransportRead(self);
  });
}

bool Connection::WriteFromTransport(std::string_view wire_bytes) {
  if (state() == State::kDisconnected || write_shut_) return false;
  if (wire_bytes.empty()) return true;
  // The user's bytes these stand for were accepted (and are released by the caller), so the
  // cap does not refuse them. Buffered only: the caller writes once for all the records of
  // one transport call (FlushTransportOutput).
  output_budget_.Add(wire_bytes.size());
  if (!output_.Append(wire_bytes)) {
    output_budget_.Release(wire_bytes.size());
    // As in SendWireInLoop: no hole in the stream, so the connection ends.
    CloseInLoop(absl::ResourceExhaustedError("no memory for pending output"), /*reset=*/true);
    return false;
  }
  return true;
}

void Connection::FlushTransportOutput(size_t before, bool may_gather) {
  if (state() == State::kDisconnected || output_.Length() == before) return;
  if (writing_) {
    // Behind output that waits for the socket: written with it, and counted against the
    // high-water mark as a plain send is.
    CheckHighWater(before);
    return;
  }
  size_t length = output_.Length();
  if (may_gather && options().gather_writes &&
      length <= std::min(kGatherBytes, options().high_water_mark)) {
    // Small (a record of a small reply, a ticket): gathered as a plain send would be.
    QueueGatheredFlush();
    return;
  }
  if (!WriteOutputOrClose()) return;
  if (output_.Length() != 0) {
    writing_ = true;
    UpdateInterest();
  }
  CheckHighWater(before);
}

absl::Status Connection::SendThroughTransport(const RingBuffer::Slices& slices, bool reserved) {
  size_t total = slices.size();
  if (state() == State::kDisconnected || write_shut_ || session().transport_shut) {
    if (reserved) output_budget_.Release(total);
    return absl::FailedPreconditionError("connection is closed for writing");
  }
  if (!connect_reported_) {
    // Only a Connection made by hand can be reached before its handshake (Server and Client
    // publish it in on_connect); what it sends would wait unbounded and uncounted.
    if (reserved) output_budget_.Release(total);
    return absl::FailedPreconditionError(absl::StrCat(
        "connection not established: ", transport()->name(), " handshake under way"));
  }
  if (total == 0) return absl::OkStatus();
  if (!reserved && !ReserveOutput(total)) return PendingOutputExhausted(total);
  Transport* wire = transport();
  size_t before = output_.Length();
  absl::Status written = wire->Write(TransportIo(this), slices.first);
  if (written.ok() && !slices.second.empty()) {
    written = wire->Write(TransportIo(this), slices.second);
  }
  // The wire bytes are reserved now in their place (WriteFromTransport).
  output_budget_.Release(total);
  FlushTransportOutput(before);
  if (!written.ok()) {
    CloseInLoop(written, /*reset=*/true);
    return written;
  }
  if (state() == State::kDisconnected) {
    return absl::FailedPreconditionError("connection closed while writing");
  }
  return absl::OkStatus();
}

}  // namespace gev

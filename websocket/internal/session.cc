#include "websocket/internal/session.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"

namespace gev::websocket::internal {
namespace {

using Phase = ConnectionState::Phase;

// Pending output past which a ping goes unanswered.
constexpr size_t kPongBacklog = 64 * 1024;

uint64_t Millis(absl::Duration duration) {
  return static_cast<uint64_t>(absl::ToInt64Milliseconds(duration));
}

// How long a connection has waited. NowMs() reads the clock afresh, so a connection linked
// during this sweep (a close begun by it) can carry a time after the sweep's own.
uint64_t Waited(uint64_t now, const ConnectionState* state) {
  return now > state->since_ms ? now - state->since_ms : 0;
}

// The reader's events, for one connection's socket.
class SocketEvents : public MessageReader::Sink {
 public:
  SocketEvents(Handler* handler, ConnectionState& state) : handler_(handler), state_(state) {}

  void OnMessage(MessageType type, std::string_view payload) override {
    // After our close frame, messages are not delivered (RFC 6455, 1.4: the closing side
    // discards what comes).
    if (state_.phase == Phase::kOpen) handler_->OnMessage(*state_.socket, payload, type);
  }
  void OnMessagePart(MessageType type, std::string_view part, bool last) override {
    if (state_.phase == Phase::kOpen) handler_->OnMessagePart(*state_.socket, part, type, last);
  }
  void OnPing(std::string_view payload) override {
    // Answered while little output waits. A peer that pings and does not read would otherwise
    // have pongs pile up without end; RFC 6455 (5.5.3) lets an endpoint answer only the
    // latest ping, and one that waits behind output proves nothing sooner. Refused only when
    // the socket is closing; a pong is then owed to nobody.
    if (state_.connection->PendingOutput() <= kPongBacklog) {
      (void)SocketInternals::SendFrame(*state_.socket, Opcode::kPong, payload);
    }
    if (state_.phase == Phase::kOpen) handler_->OnPing(*state_.socket, payload);
  }
  void OnPong(std::string_view payload) override {
    if (state_.phase == Phase::kOpen) handler_->OnPong(*state_.socket, payload);
  }
  void OnClose(uint16_t code, std::string_view reason) override {
    state_.peer_closed = true;
    state_.peer_code = code;
    state_.peer_reason = std::make_unique<std::string>(reason);
    state_.phase = Phase::kDone;
    // Bounded: a peer that does not read what is left is reset close_timeout from now.
    state_.LinkLast(&state_.loop->closing, state_.connection->loop()->NowMs());
    // Once the frame is out, the TCP connection ends: the server closes it first (RFC 6455,
    // 7.1.1), and a client whose server did not would wait for nothing else.
    ConnectionPtr connection = state_.connection->shared_from_this();
    auto close = [connection] { connection->Close(); };
    // Answered with the same code (none for a close without one), unless ours went first:
    // then the connection is closed after ours.
    absl::Status answered = SocketInternals::SendCloseFrame(
        *state_.socket, code == kCloseNoStatus ? std::string() : ClosePayloadFor(code, {}), close);
    if (!answered.ok()) {
      // Refused only by a finished loop, whose connections are closed already.
      (void)connection->loop()->QueueInLoop(close);
    }
  }

 private:
  Handler* const handler_;
  ConnectionState& state_;
};

}  // namespace

void ConnectionState::Unlink() {
  if (list == nullptr) return;
  (previous != nullptr ? previous->next : list->front) = next;
  (next != nullptr ? next->previous : list->back) = previous;
  list = nullptr;
  previous = next = nullptr;
}

void ConnectionState::LinkLast(WaitList* to, uint64_t now_ms) {
  Unlink();
  list = to;
  since_ms = now_ms;
  previous = to->back;
  (to->back != nullptr ? to->back->next : to->front) = this;
  to->back = this;
}

ConnectionState* StateOf(Connection& conn) {
  ConnectionState** state = conn.ContextAs<ConnectionState*>();
  return state != nullptr ? *state : nullptr;
}

ConnectionState& NewState(Connection& conn, LoopState* loop) {
  // Owned by the connection until EndSession, which every OnConnect is followed by (OnClose).
  auto* owned = new ConnectionState;
  conn.SetContext(owned);
  ConnectionState& state = *owned;
  state.connection = &conn;
  state.loop = loop;
  state.LinkLast(&loop->http, conn.loop()->NowMs());
  return state;
}

Deflater& SharedDeflater(int window_bits, int level) {
  thread_local std::map<std::pair<int, int>, std::unique_ptr<Deflater>> deflaters;
  std::unique_ptr<Deflater>& deflater = deflaters[{window_bits, level}];
  if (deflater == nullptr) {
    DeflateAgreement agreement;
    agreement.server_no_context_takeover = true;
    agreement.server_max_window_bits = window_bits;
    deflater = std::make_unique<Deflater>(agreement, Role::kServer, level);
  }
  return *deflater;
}

void OpenSocket(ConnectionState& state, std::shared_ptr<Socket> socket,
                const std::optional<DeflateAgreement>& deflate, const Options& options,
                Role role) {
  MessageReader::Limits limits;
  limits.max_message = options.max_message;
  limits.stream_above = options.stream_above;
  limits.max_streamed_message = options.max_streamed_message;
  state.reader.emplace(role, limits);
  SocketInternals::deflate(*socket) = deflate;
  if (deflate.has_value()) {
    state.inflater = std::make_unique<Inflater>(*deflate, role);
    state.reader->set_inflater(state.inflater.get());
    const bool keeps_context = role == Role::kServer ? !deflate->server_no_context_takeover
                                                     : !deflate->client_no_context_takeover;
    if (keeps_context) {
      SocketInternals::own_deflater(*socket) =
          std::make_unique<Deflater>(*deflate, role, options.deflate.level);
    }
  }
  state.socket = std::move(socket);
  state.phase = Phase::kOpen;
  state.LinkLast(&state.loop->open, state.connection->loop()->NowMs());
}

void ReadFrames(ConnectionState& state, RingBuffer& input, Handler* handler) {
  if (state.phase == Phase::kOpen) {
    state.pinged = false;
    state.LinkLast(&state.loop->open, state.connection->loop()->NowMs());
  }
  SocketEvents events(handler, state);
  ReadResult result = state.reader->Read(input, events);
  if (result.ok) return;
  // Fail the WebSocket connection (RFC 6455, 7.1.7): a close frame saying why, then the end
  // (bounded: a close for an error waits at most the connection's error-close timeout).
  state.phase = Phase::kDone;
  state.Unlink();
  input.RetrieveAll();
  ConnectionPtr connection = state.connection->shared_from_this();
  absl::Status why = absl::InvalidArgumentError(
      absl::StrCat("WebSocket ", result.close_code, ": ", result.reason));
  auto close = [connection, why] { connection->Close(why); };
  absl::Status sent = SocketInternals::SendCloseFrame(
      *state.socket, ClosePayloadFor(result.close_code, result.reason), close);
  if (!sent.ok()) {
    // Ours went already: the connection ends after it. Refused only by a finished loop.
    (void)connection->loop()->QueueInLoop(close);
  }
}

void CloseSent(Socket& socket) {
  Connection& conn = *SocketInternals::connection(socket);
  ConnectionState* state = StateOf(conn);
  if (state == nullptr || state->phase != Phase::kOpen) return;
  state->phase = Phase::kClosing;
  state->LinkLast(&state->loop->closing, conn.loop()->NowMs());
}

void EndSession(Connection& conn, const absl::Status& reason, Handler* handler) {
  ConnectionState* state = StateOf(conn);
  if (state == nullptr) return;
  state->Unlink();
  state->connection = nullptr;
  if (std::shared_ptr<Socket> socket = std::move(state->socket)) {
    std::vector<std::string>& topics = SocketInternals::topics(*socket);
    for (const std::string& topic : topics) {
      auto found = state->loop->topics.find(topic);
      if (found == state->loop->topics.end()) continue;
      found->second.erase(socket.get());
      if (found->second.empty()) state->loop->topics.erase(found);
    }
    topics.clear();
    // Sends after this fail (the connection is closed); the flag says so without a lock.
    SocketInternals::close_sent(*socket).store(true, std::memory_order_release);
    std::string why = state->peer_closed && state->peer_reason != nullptr
                          ? *state->peer_reason
                          : std::string(reason.message());
    handler->OnClose(*socket, state->peer_closed ? state->peer_code : kCloseAbnormal, why);
  }
  conn.SetContext(std::any());  // The state goes; the socket lives while the user keeps it.
  delete state;
}

void Sweep(LoopState& loop, const Options& options) {
  const uint64_t now = loop.loop->NowMs();
  if (options.handshake_timeout > absl::ZeroDuration()) {
    const uint64_t limit = Millis(options.handshake_timeout);
    while (loop.http.front != nullptr && Waited(now, loop.http.front) >= limit) {
      ConnectionState* state = loop.http.front;
      state->Unlink();
      state->phase = Phase::kDone;
      if (!state->client) {  // A server's: the client is told.
        // Refused only when the connection is closing already.
        (void)state->connection->Send(RefusalResponse({"408 Request Timeout", "too slow"}));
      }
      state->connection->Close(absl::DeadlineExceededError("the HTTP exchange took too long"));
    }
  }
  const uint64_t idle = options.idle_timeout > absl::ZeroDuration()
                            ? Millis(options.idle_timeout) : UINT64_MAX;
  const uint64_t ping = options.ping_interval > absl::ZeroDuration()
                            ? Millis(options.ping_interval) : UINT64_MAX;
  for (ConnectionState* state = loop.open.front;
       state != nullptr && Waited(now, state) >= std::min(idle, ping);) {
    ConnectionState* next = state->next;
    if (Waited(now, state) >= idle) {
      // Refused only if the socket is closing already.
      (void)state->socket->Close(kCloseGoingAway, "idle");
    } else if (!state->pinged) {
      state->pinged = true;
      // Refused only when the socket is closing or at its pending cap; the idle timeout
      // decides then.
      (void)SocketInternals::SendFrame(*state->socket, Opcode::kPing, {});
    }
    state = next;
  }
  if (options.close_timeout > absl::ZeroDuration()) {
    const uint64_t limit = Millis(options.close_timeout);
    while (loop.closing.front != nullptr && Waited(now, loop.closing.front) >= limit) {
      ConnectionState* state = loop.closing.front;
      state->Unlink();
      state->phase = Phase::kDone;
      state->connection->ForceClose(
          absl::DeadlineExceededError("the peer did not answer the close frame"));
    }
  }
}

absl::Duration SweepInterval(const Options& options) {
  absl::Duration shortest = absl::InfiniteDuration();
  for (absl::Duration d : {options.ping_interval, options.idle_timeout,
                           options.handshake_timeout, options.close_timeout}) {
    if (d > absl::ZeroDuration()) shortest = std::min(shortest, d);
  }
  if (shortest == absl::InfiniteDuration()) return shortest;
  // A quarter of the shortest deadline: each is kept within a quarter of its length.
  return std::clamp(shortest / 4, absl::Milliseconds(10), absl::Seconds(1));
}

}  // namespace gev::websocket::internal

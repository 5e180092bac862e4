#include <algorithm>
#include <array>
#include <map>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "websocket/websocket.h"

namespace gev::websocket {
namespace internal {

struct WaitList {
  ConnectionState* front = nullptr;
  ConnectionState* back = nullptr;
};

// One connection, from accept to close: its HTTP requests, then its socket. Lives in the
// connection's context; loop thread only.
struct ConnectionState {
  enum class Phase {
    kHttp,     // Reading requests until an upgrade.
    kOpen,     // Upgraded.
    kClosing,  // Our close frame is sent; waiting for the peer's.
    kDone,     // Closing the TCP connection; nothing more is read.
  };
  Phase phase = Phase::kHttp;
  Connection* connection = nullptr;  // Until OnClose.
  LoopState* loop = nullptr;
  std::shared_ptr<Socket> socket;  // From the upgrade.
  std::unique_ptr<MessageReader> reader;
  std::unique_ptr<Inflater> inflater;
  // The peer's close frame, if one came.
  bool peer_closed = false;
  uint16_t peer_code = kCloseAbnormal;
  std::string peer_reason;
  // Keepalive: one ping per quiet spell.
  bool pinged = false;

  // Its place in one of the loop's waiting lists, oldest first.
  WaitList* list = nullptr;
  ConnectionState* previous = nullptr;
  ConnectionState* next = nullptr;
  uint64_t since_ms = 0;

  void Unlink() {
    if (list == nullptr) return;
    (previous != nullptr ? previous->next : list->front) = next;
    (next != nullptr ? next->previous : list->back) = previous;
    list = nullptr;
    previous = next = nullptr;
  }
  void LinkLast(WaitList* to, uint64_t now_ms) {
    Unlink();
    list = to;
    since_ms = now_ms;
    previous = to->back;
    (to->back != nullptr ? to->back->next : to->front) = this;
    to->back = this;
  }
};

struct LoopState {
  EventLoop* loop = nullptr;
  WaitList http;     // In the HTTP phase, by when their current request began.
  WaitList open;     // Upgraded, by when a byte last came.
  WaitList closing;  // Our close frame sent, by when.
  absl::flat_hash_map<std::string, absl::flat_hash_set<Socket*>> topics;
  char head[http::kMaxHeadBytes];  // A request head that wraps around the input ring.
};

}  // namespace internal

using internal::ConnectionState;
using internal::LoopState;
using Phase = internal::ConnectionState::Phase;

namespace {

// Compressors without context takeover are reset after each message, so one per thread and
// window serves every socket: the loop threads' for their sockets, a publisher's for its
// messages.
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

// A whole server frame (unmasked) of `payload`.
std::string ServerFrame(Opcode opcode, bool rsv1, std::string_view payload) {
  char header[kMaxFrameHeader];
  size_t n = WriteFrameHeader(header, opcode, /*fin=*/true, rsv1, payload.size(), std::nullopt);
  std::string frame;
  frame.reserve(n + payload.size());
  frame.append(header, n);
  frame.append(payload.data(), payload.size());
  return frame;
}

std::string HttpResponseBytes(const HttpResponse& response, const http::Request& request) {
  std::string out = absl::StrCat("HTTP/1.1 ", response.status_line, "\r\nServer: gev\r\n");
  if (!response.body.empty() || response.status_line.rfind("200", 0) == 0) {
    absl::StrAppend(&out, "Content-Type: ", response.content_type, "\r\n");
  }
  absl::StrAppend(&out, "Content-Length: ", response.body.size(), "\r\n");
  for (const auto& [name, value] : response.headers) absl::StrAppend(&out, name, ": ", value, "\r\n");
  if (!request.keep_alive) {
    out += "Connection: close\r\n";
  } else if (request.minor_version == 0) {
    out += "Connection: keep-alive\r\n";
  }
  out += "\r\n";
  if (request.method != "HEAD") out += response.body;
  return out;
}

uint64_t Millis(absl::Duration duration) {
  return static_cast<uint64_t>(absl::ToInt64Milliseconds(duration));
}

}  // namespace

// ---- Socket ----

Socket::Socket(Service* service, ConnectionPtr connection)
    : service_(service), connection_(std::move(connection)) {}

absl::Status Socket::SendFrame(Opcode opcode, std::string_view payload) {
  if (close_sent_.load(std::memory_order_acquire)) {
    return absl::FailedPreconditionError("the WebSocket is closing");
  }
  const DeflateOptions& deflate = service_->options_.deflate;
  std::string compressed;
  bool rsv1 = false;
  if (deflate_.has_value() && !IsControl(opcode) && payload.size() >= deflate.min_size) {
    Deflater* deflater = nullptr;
    if (deflate_->server_no_context_takeover) {
      deflater = &SharedDeflater(deflate_->server_max_window_bits, deflate.level);
    } else if (connection_->loop()->IsInLoopThread()) {
      deflater = own_deflater_.get();
    }
    if (deflater != nullptr && deflater->Compress(payload, &compressed)) {
      rsv1 = true;
      payload = compressed;
    }
  }
  char header[kMaxFrameHeader];
  size_t n = WriteFrameHeader(header, opcode, /*fin=*/true, rsv1, payload.size(), std::nullopt);
  absl::Status sent = connection_->SendAll({std::string_view(header, n), payload});
  size_t max_backlog = service_->options_.max_backlog;
  if (sent.ok() && max_backlog != 0 && connection_->PendingOutput() > max_backlog) {
    // A close frame behind the backlog would not arrive either: the connection ends now.
    connection_->ForceClose(absl::ResourceExhaustedError(
        absl::StrCat("pending output passed max_backlog (", max_backlog, " bytes)")));
  }
  return sent;
}

absl::Status Socket::Send(std::string_view message, MessageType type) {
  return SendFrame(type == MessageType::kText ? Opcode::kText : Opcode::kBinary, message);
}

absl::Status Socket::Ping(std::string_view payload) {
  if (payload.size() > kMaxControlPayload) {
    return absl::InvalidArgumentError("a ping carries at most 125 bytes");
  }
  return SendFrame(Opcode::kPing, payload);
}

absl::Status Socket::SendCloseFrame(std::string_view payload) {
  if (close_sent_.exchange(true, std::memory_order_acq_rel)) {
    return absl::FailedPreconditionError("a close frame was sent already");
  }
  char header[kMaxFrameHeader];
  size_t n = WriteFrameHeader(header, Opcode::kClose, true, false, payload.size(), std::nullopt);
  return connection_->SendAll({std::string_view(header, n), payload});
}

absl::Status Socket::Close(uint16_t code, std::string_view reason) {
  if (!IsValidCloseCode(code)) {
    return absl::InvalidArgumentError(absl::StrCat("close code ", code, " is not one to send"));
  }
  absl::Status sent = SendCloseFrame(ClosePayloadFor(code, reason));
  if (!sent.ok()) {
    // Sent before, or refused by a connection that is ending: it ends either way. Refused at
    // the pending cap: the peer reads nothing, so the connection ends now.
    if (absl::IsResourceExhausted(sent)) {
      connection_->ForceClose(absl::Status(sent.code(), absl::StrCat(
                                                            "close frame refused: ", sent.message())));
    }
    return sent;
  }
  // The close deadline starts on the socket's loop. Refused only by a finished loop, whose
  // connections are closed already.
  std::shared_ptr<Socket> self = shared_from_this();
  (void)connection_->loop()->RunInLoop([self] { self->service_->CloseSent(*self); });
  return sent;
}

void Socket::Subscribe(std::string topic) {
  std::shared_ptr<Socket> self = shared_from_this();
  // Refused only by a finished loop, whose sockets are closed already.
  (void)connection_->loop()->RunInLoop([self, topic = std::move(topic)]() mutable {
    self->service_->SubscribeInLoop(*self, std::move(topic), true);
  });
}

void Socket::Unsubscribe(std::string topic) {
  std::shared_ptr<Socket> self = shared_from_this();
  // As in Subscribe.
  (void)connection_->loop()->RunInLoop([self, topic = std::move(topic)]() mutable {
    self->service_->SubscribeInLoop(*self, std::move(topic), false);
  });
}

bool Socket::IsSubscribed(std::string_view topic) const {
  return std::find(topics_.begin(), topics_.end(), topic) != topics_.end();
}

void Socket::Publish(std::string_view topic, std::string_view message, MessageType type) {
  service_->Publish(topic, message, type, this);
}

HttpResponse Handler::OnHttpRequest(const http::Request& request) {
  HttpResponse response;
  if (request.target == "/") {
    response.status_line = "426 Upgrade Required";
    response.headers = {{"Upgrade", "websocket"}, {"Sec-WebSocket-Version", "13"}};
    response.body = "a WebSocket endpoint: upgrade to talk\n";
  } else {
    response.body = "Not Found\n";
  }
  return response;
}

// ---- Service ----

Service::Service(SocketHandler* handler, Options options)
    : handler_(handler), options_(std::move(options)) {}

Service::~Service() = default;

void Service::OnLoopStart(EventLoop& loop, size_t loop_index) {
  auto state = std::make_unique<LoopState>();
  state->loop = &loop;
  LoopState* raw = state.get();
  {
    std::lock_guard<std::mutex> lock(loops_mutex_);
    if (loops_.size() <= loop_index) loops_.resize(loop_index + 1);
    loops_[loop_index] = std::move(state);
  }
  absl::Duration shortest = absl::InfiniteDuration();
  for (absl::Duration d : {options_.ping_interval, options_.idle_timeout,
                           options_.handshake_timeout, options_.close_timeout}) {
    if (d > absl::ZeroDuration()) shortest = std::min(shortest, d);
  }
  if (shortest == absl::InfiniteDuration()) return;
  // A quarter of the shortest deadline: each is kept within a quarter of its length.
  absl::Duration every = std::clamp(shortest / 4, absl::Milliseconds(10), absl::Seconds(1));
  loop.RunEvery(every, [this, raw] { Sweep(*raw); });
}

LoopState& Service::LoopOf(const Connection& conn) {
  std::lock_guard<std::mutex> lock(loops_mutex_);
  return *loops_[conn.LoopIndex()];
}

ConnectionState* Service::StateOf(Connection& conn) {
  auto* state = conn.ContextAs<std::shared_ptr<ConnectionState>>();
  return state != nullptr ? state->get() : nullptr;
}

void Service::OnConnect(Connection& conn) {
  // A shared_ptr because a context must be copyable; it is the only owner.
  ConnectionState& state =
      *conn.EmplaceContext<std::shared_ptr<ConnectionState>>(std::make_shared<ConnectionState>());
  state.connection = &conn;
  state.loop = &LoopOf(conn);
  state.LinkLast(&state.loop->http, conn.loop()->NowMs());
}

Reply Service::OnMessage(Connection& conn, RingBuffer& input) {
  ConnectionState* state = StateOf(conn);
  if (state == nullptr || state->phase == Phase::kDone) {
    input.RetrieveAll();  // Closing: what the peer sends now is not read.
    return {};
  }
  if (state->phase == Phase::kHttp && !ReadRequests(*state, input)) return {};
  if (state->phase == Phase::kOpen || state->phase == Phase::kClosing) ReadFrames(*state, input);
  return {};
}

bool Service::ReadRequests(ConnectionState& state, RingBuffer& input) {
  Connection& conn = *state.connection;
  LoopState& loop = *state.loop;
  auto answer_and_close = [&](std::string_view response, absl::Status reason) {
    // Refused only when the connection is closing already; then it ends on its own.
    (void)conn.Send(response);
    state.phase = Phase::kDone;
    state.Unlink();
    input.RetrieveAll();
    conn.Close(std::move(reason));
    return false;
  };
  while (true) {
    // Empty lines before a request line are skipped (RFC 9112, section 2.2).
    while (!input.IsEmpty() && (input.At(0) == '\n' ||
                                (input.At(0) == '\r' && input.Length() >= 2 && input.At(1) == '\n'))) {
      input.Retrieve(input.At(0) == '\n' ? 1 : 2);
    }
    if (input.IsEmpty()) return true;
    std::string_view window = input.Contiguous(std::min(input.Length(), http::kMaxHeadBytes),
                                               loop.head, sizeof(loop.head));
    size_t head_length = http::HeadLength(window);
    if (head_length == std::string_view::npos) {
      if (input.Length() < http::kMaxHeadBytes) return true;  // More of the head is coming.
      return answer_and_close(RefusalResponse({std::string(http::StatusLine(
                                                   http::HeadStatus::kHeadTooLarge)),
                                               "request head too large"}),
                              absl::InvalidArgumentError("request head too large"));
    }
    http::Request request;
    http::HeadStatus status = http::ParseHead(window.substr(0, head_length), &request);
    if (status != http::HeadStatus::kOk) {
      std::string line(http::StatusLine(status));
      return answer_and_close(RefusalResponse({line, "malformed request"}),
                              absl::InvalidArgumentError(absl::StrCat("HTTP ", line)));
    }
    if (IsUpgradeRequest(request)) {
      AcceptUpgrade(state, request, input, head_length);
      return state.phase == Phase::kOpen;
    }
    if (input.Length() - head_length < request.content_length) return true;  // Body to come.
    std::string response = HttpResponseBytes(handler_->OnHttpRequest(request), request);
    bool keep_alive = request.keep_alive;
    input.Retrieve(head_length + request.content_length);
    if (!keep_alive) return answer_and_close(response, absl::OkStatus());
    // Refused only when the connection is closing already; then it ends on its own.
    (void)conn.Send(response);
    state.LinkLast(&loop.http, conn.loop()->NowMs());  // The next request's time starts.
  }
}

void Service::AcceptUpgrade(ConnectionState& state, const http::Request& request,
                            RingBuffer& input, size_t head_length) {
  Connection& conn = *state.connection;
  auto refuse = [&](const HandshakeError& error) {
    // Refused only when the connection is closing already; then it ends on its own.
    (void)conn.Send(RefusalResponse(error));
    state.phase = Phase::kDone;
    state.Unlink();
    input.RetrieveAll();
    conn.Close(absl::InvalidArgumentError(absl::StrCat("upgrade refused: ", error.status_line,
                                                       ": ", error.reason)));
  };
  UpgradeRequest offer;
  HandshakeError error;
  if (!ReadUpgradeRequest(request, &offer, &error)) return refuse(error);

  Upgrade upgrade;
  upgrade.request = &request;
  upgrade.offer = &offer;
  upgrade.peer = conn.PeerAddr();
  for (const std::string& mine : options_.protocols) {
    if (std::find(offer.protocols.begin(), offer.protocols.end(), mine) != offer.protocols.end()) {
      upgrade.protocol = mine;
      break;
    }
  }
  handler_->OnUpgrade(upgrade);
  if (upgrade.refusal.has_value()) return refuse(*upgrade.refusal);
  if (!upgrade.protocol.empty() &&
      std::find(offer.protocols.begin(), offer.protocols.end(), upgrade.protocol) ==
          offer.protocols.end()) {
    return refuse({"500 Internal Server Error",
                   "the server chose a subprotocol the client did not offer"});
  }
  std::string extension_response;
  std::optional<DeflateAgreement> deflate =
      NegotiateDeflate(offer.extensions, options_.deflate, &extension_response);

  auto socket = std::shared_ptr<Socket>(new Socket(this, conn.shared_from_this()));
  socket->protocol_ = upgrade.protocol;
  socket->target_ = std::string(offer.target);
  socket->deflate_ = deflate;
  socket->user_data_ = std::move(upgrade.user_data);
  state.reader = std::make_unique<MessageReader>(
      Role::kServer, MessageReader::Limits{options_.max_message});
  if (deflate.has_value()) {
    state.inflater = std::make_unique<Inflater>(*deflate, Role::kServer);
    state.reader->set_inflater(state.inflater.get());
    if (!deflate->server_no_context_takeover) {
      socket->own_deflater_ =
          std::make_unique<Deflater>(*deflate, Role::kServer, options_.deflate.level);
    }
  }
  absl::Status sent = conn.Send(AcceptResponse(offer.key, upgrade.protocol, extension_response));
  input.Retrieve(head_length);  // The request's views are not used past here.
  if (!sent.ok()) {  // Closing already (the server stopping): no socket to open.
    state.phase = Phase::kDone;
    state.Unlink();
    return;
  }
  state.socket = std::move(socket);
  state.phase = Phase::kOpen;
  state.LinkLast(&state.loop->open, conn.loop()->NowMs());
  sockets_.fetch_add(1, std::memory_order_relaxed);
  handler_->OnOpen(*state.socket);
}

namespace internal {

// The reader's events, for one connection's socket.
class SocketEvents : public MessageReader::Sink {
 public:
  SocketEvents(SocketHandler* handler, ConnectionState& state)
      : handler_(handler), state_(state) {}

  void OnMessage(MessageType type, std::string_view payload) override {
    // After our close frame, messages are not delivered (RFC 6455, 1.4: the closing side
    // discards what comes).
    if (state_.phase == Phase::kOpen) handler_->OnMessage(*state_.socket, payload, type);
  }
  void OnPing(std::string_view payload) override {
    // Refused only when the socket is closing; a pong is then owed to nobody.
    (void)state_.socket->SendFrame(Opcode::kPong, payload);
    if (state_.phase == Phase::kOpen) handler_->OnPing(*state_.socket, payload);
  }
  void OnPong(std::string_view payload) override {
    if (state_.phase == Phase::kOpen) handler_->OnPong(*state_.socket, payload);
  }
  void OnClose(uint16_t code, std::string_view reason) override {
    state_.peer_closed = true;
    state_.peer_code = code;
    state_.peer_reason = std::string(reason);
    // Answered with the same code (none for a close without one), unless ours went first.
    // Refused only when ours went first or the connection is ending: nothing is owed then.
    (void)state_.socket->SendCloseFrame(
        code == kCloseNoStatus ? std::string() : ClosePayloadFor(code, {}));
    state_.phase = Phase::kDone;
    state_.Unlink();
    // The server closes the TCP connection first (RFC 6455, 7.1.1), once the frame is out.
    state_.connection->Close();
  }

 private:
  SocketHandler* const handler_;
  ConnectionState& state_;
};

}  // namespace internal

void Service::ReadFrames(ConnectionState& state, RingBuffer& input) {
  if (state.phase == Phase::kOpen) {
    state.pinged = false;
    state.LinkLast(&state.loop->open, state.connection->loop()->NowMs());
  }
  internal::SocketEvents events(handler_, state);
  ReadResult result = state.reader->Read(input, events);
  if (result.ok) return;
  // Fail the WebSocket connection (RFC 6455, 7.1.7): a close frame saying why, then the end.
  // Refused only if our close frame went already; the connection ends either way.
  (void)state.socket->SendCloseFrame(ClosePayloadFor(result.close_code, result.reason));
  state.phase = Phase::kDone;
  state.Unlink();
  input.RetrieveAll();
  state.connection->Close(absl::InvalidArgumentError(
      absl::StrCat("WebSocket ", result.close_code, ": ", result.reason)));
}

void Service::CloseSent(Socket& socket) {
  ConnectionState* state = StateOf(*socket.connection_);
  if (state == nullptr || state->phase != Phase::kOpen) return;
  state->phase = Phase::kClosing;
  state->LinkLast(&state->loop->closing, socket.connection_->loop()->NowMs());
}

void Service::OnLowWater(Connection& conn) {
  ConnectionState* state = StateOf(conn);
  if (state != nullptr && state->phase == Phase::kOpen) handler_->OnDrain(*state->socket);
}

void Service::OnClose(Connection& conn, const absl::Status& reason) {
  ConnectionState* state = StateOf(conn);
  if (state == nullptr) return;
  state->Unlink();
  state->connection = nullptr;
  if (std::shared_ptr<Socket> socket = std::move(state->socket)) {
    sockets_.fetch_sub(1, std::memory_order_relaxed);
    for (const std::string& topic : socket->topics_) {
      auto found = state->loop->topics.find(topic);
      if (found == state->loop->topics.end()) continue;
      found->second.erase(socket.get());
      if (found->second.empty()) state->loop->topics.erase(found);
    }
    socket->topics_.clear();
    // Sends after this fail (the connection is closed); the flag says so without a lock.
    socket->close_sent_.store(true, std::memory_order_release);
    std::string why = state->peer_closed ? state->peer_reason : std::string(reason.message());
    handler_->OnClose(*socket, state->peer_closed ? state->peer_code : kCloseAbnormal,
                      state->peer_closed ? std::string_view(state->peer_reason)
                                         : std::string_view(why));
  }
  conn.SetContext(std::any());  // The state goes; the socket lives while the user keeps it.
}

void Service::SubscribeInLoop(Socket& socket, std::string topic, bool subscribe) {
  ConnectionState* state = StateOf(*socket.connection_);
  if (state == nullptr || state->socket.get() != &socket) return;  // Closed meanwhile.
  auto& subscribers = state->loop->topics;
  auto known = std::find(socket.topics_.begin(), socket.topics_.end(), topic);
  if (subscribe) {
    if (known != socket.topics_.end()) return;
    subscribers[topic].insert(&socket);
    socket.topics_.push_back(std::move(topic));
    return;
  }
  if (known == socket.topics_.end()) return;
  socket.topics_.erase(known);
  auto found = subscribers.find(topic);
  if (found == subscribers.end()) return;
  found->second.erase(&socket);
  if (found->second.empty()) subscribers.erase(found);
}

void Service::Publish(std::string_view topic, std::string_view message, MessageType type,
                      const Socket* except) {
  const Opcode opcode = type == MessageType::kText ? Opcode::kText : Opcode::kBinary;
  auto plain = std::make_shared<const std::string>(ServerFrame(opcode, false, message));
  // Compressed once, for the sockets that agreed no server context takeover at 15 bits (what
  // clients ask for); others get the plain frame, which RFC 7692 allows per message.
  std::shared_ptr<const std::string> compressed;
  if (options_.deflate.enabled && message.size() >= options_.deflate.min_size) {
    std::string payload;
    if (SharedDeflater(15, options_.deflate.level).Compress(message, &payload)) {
      compressed = std::make_shared<const std::string>(ServerFrame(opcode, true, payload));
    }
  }
  std::vector<LoopState*> loops;
  {
    std::lock_guard<std::mutex> lock(loops_mutex_);
    for (const auto& loop : loops_) {
      if (loop != nullptr) loops.push_back(loop.get());
    }
  }
  for (LoopState* loop : loops) {
    // Refused only by a finished loop, whose sockets are closed already.
    (void)loop->loop->RunInLoop([this, loop, topic = std::string(topic), plain, compressed,
                                 except] {
      auto found = loop->topics.find(topic);
      if (found == loop->topics.end()) return;
      // A copy: a send that ends a socket changes no set here (its close comes later), but a
      // handler's reaction might.
      std::vector<Socket*> subscribers(found->second.begin(), found->second.end());
      for (Socket* socket : subscribers) {
        if (socket == except) continue;
        const bool deflated = compressed != nullptr && socket->deflate_.has_value() &&
                              socket->deflate_->server_no_context_takeover &&
                              socket->deflate_->server_max_window_bits == 15;
        if (socket->close_sent_.load(std::memory_order_acquire)) continue;
        absl::Status sent = socket->connection_->Send(deflated ? *compressed : *plain);
        if (!sent.ok()) {
          socket->connection_->ForceClose(absl::Status(
              sent.code(), absl::StrCat("a published message was refused: ", sent.message())));
        } else if (options_.max_backlog != 0 &&
                   socket->connection_->PendingOutput() > options_.max_backlog) {
          socket->connection_->ForceClose(absl::ResourceExhaustedError(absl::StrCat(
              "pending output passed max_backlog (", options_.max_backlog, " bytes)")));
        }
      }
    });
  }
}

void Service::Sweep(LoopState& loop) {
  const uint64_t now = loop.loop->NowMs();
  if (options_.handshake_timeout > absl::ZeroDuration()) {
    const uint64_t limit = Millis(options_.handshake_timeout);
    while (loop.http.front != nullptr && now - loop.http.front->since_ms >= limit) {
      ConnectionState* state = loop.http.front;
      state->Unlink();
      state->phase = Phase::kDone;
      // Refused only when the connection is closing already.
      (void)state->connection->Send(RefusalResponse({"408 Request Timeout", "too slow"}));
      state->connection->Close(absl::DeadlineExceededError("request not whole in time"));
    }
  }
  const uint64_t idle = options_.idle_timeout > absl::ZeroDuration()
                            ? Millis(options_.idle_timeout) : UINT64_MAX;
  const uint64_t ping = options_.ping_interval > absl::ZeroDuration()
                            ? Millis(options_.ping_interval) : UINT64_MAX;
  for (ConnectionState* state = loop.open.front;
       state != nullptr && now - state->since_ms >= std::min(idle, ping);) {
    ConnectionState* next = state->next;
    if (now - state->since_ms >= idle) {
      // Refused only if the socket is closing already.
      (void)state->socket->Close(kCloseGoingAway, "idle");
    } else if (!state->pinged) {
      state->pinged = true;
      // Refused only when the socket is closing or at its pending cap; the idle timeout
      // decides then.
      (void)state->socket->SendFrame(Opcode::kPing, {});
    }
    state = next;
  }
  if (options_.close_timeout > absl::ZeroDuration()) {
    const uint64_t limit = Millis(options_.close_timeout);
    while (loop.closing.front != nullptr && now - loop.closing.front->since_ms >= limit) {
      ConnectionState* state = loop.closing.front;
      state->Unlink();
      state->phase = Phase::kDone;
      state->connection->ForceClose(
          absl::DeadlineExceededError("the peer did not answer the close frame"));
    }
  }
}

}  // namespace gev::websocket

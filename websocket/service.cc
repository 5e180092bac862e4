#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "websocket/internal/session.h"
#include "websocket/websocket.h"

namespace gev::websocket {

using internal::ConnectionState;
using internal::LoopState;
using internal::SocketInternals;
using internal::StateOf;
using Phase = internal::ConnectionState::Phase;

namespace {

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

}  // namespace

// ---- Service ----

Service::Service(SocketHandler* handler, Options options)
    : handler_(handler), options_(std::move(options)) {}

Service::~Service() = default;

void Service::OnLoopStart(EventLoop& loop, size_t) {
  auto state = std::make_unique<LoopState>();
  state->loop = &loop;
  LoopState* raw = state.get();
  {
    std::lock_guard<std::mutex> lock(loops_mutex_);
    loops_[&loop] = std::move(state);
  }
  absl::Duration every = internal::SweepInterval(options_);
  if (every == absl::InfiniteDuration()) return;
  loop.RunEvery(every, [this, raw] { internal::Sweep(*raw, options_); });
}

LoopState& Service::LoopOf(const Connection& conn) {
  std::lock_guard<std::mutex> lock(loops_mutex_);
  return *loops_.at(conn.loop());
}

void Service::OnConnect(Connection& conn) { internal::NewState(conn, &LoopOf(conn)); }

Reply Service::OnMessage(Connection& conn, RingBuffer& input) {
  ConnectionState* state = StateOf(conn);
  if (state == nullptr || state->phase == Phase::kDone) {
    input.RetrieveAll();  // Closing: what the peer sends now is not read.
    return {};
  }
  if (state->phase == Phase::kHttp && !ReadRequests(*state, input)) return {};
  if (state->phase == Phase::kOpen || state->phase == Phase::kClosing) {
    internal::ReadFrames(*state, input, handler_);
  }
  return {};
}

bool Service::ReadRequests(ConnectionState& state, RingBuffer& input) {
  Connection& conn = *state.connection;
  LoopState& loop = *state.loop;
  auto answer_and_close = [&](std::string_view response, absl::Status reason) {
    // Refused only when the connection is closing already; then it ends on its own.
    (void)conn.Send(response);
    state.phase = Phase::kDone;
    // Bounded: a client that does not read its response is reset close_timeout from now.
    state.LinkLast(&loop.closing, conn.loop()->NowMs());
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
      return state.phase != Phase::kDone;  // Open, or closing from OnOpen: frames may follow.
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

  std::shared_ptr<Socket> socket =
      SocketInternals::Make(this, &options_, Role::kServer, conn.shared_from_this());
  socket->protocol_ = upgrade.protocol;
  socket->target_ = std::string(offer.target);
  socket->user_data_ = std::move(upgrade.user_data);
  absl::Status sent = conn.Send(AcceptResponse(offer.key, upgrade.protocol, extension_response));
  input.Retrieve(head_length);  // The request's views are not used past here.
  if (!sent.ok()) {  // Closing already (the server stopping): no socket to open.
    state.phase = Phase::kDone;
    state.Unlink();
    return;
  }
  internal::OpenSocket(state, std::move(socket), deflate, options_, Role::kServer);
  sockets_.fetch_add(1, std::memory_order_relaxed);
  handler_->OnOpen(*state.socket);
}

void Service::OnLowWater(Connection& conn) {
  ConnectionState* state = StateOf(conn);
  if (state != nullptr && state->phase == Phase::kOpen) handler_->OnDrain(*state->socket);
}

void Service::OnClose(Connection& conn, const absl::Status& reason) {
  ConnectionState* state = StateOf(conn);
  if (state != nullptr && state->socket != nullptr) {
    sockets_.fetch_sub(1, std::memory_order_relaxed);
  }
  internal::EndSession(conn, reason, handler_);
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
                      const Socket* except, Compression compression) {
  const Opcode opcode = type == MessageType::kText ? Opcode::kText : Opcode::kBinary;
  auto plain = std::make_shared<const std::string>(ServerFrame(opcode, false, message));
  // Compressed once, for the sockets that agreed no server context takeover at 15 bits (what
  // clients ask for); others get the plain frame, which RFC 7692 allows per message.
  std::shared_ptr<const std::string> compressed;
  if (options_.deflate.enabled && compression == Compression::kAuto &&
      message.size() >= options_.deflate.min_size) {
    std::string payload;
    if (internal::SharedDeflater(15, options_.deflate.level).Compress(message, &payload)) {
      compressed = std::make_shared<const std::string>(ServerFrame(opcode, true, payload));
    }
  }
  std::vector<LoopState*> loops;
  {
    std::lock_guard<std::mutex> lock(loops_mutex_);
    for (const auto& [key, loop] : loops_) loops.push_back(loop.get());
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
        if (absl::IsResourceExhausted(sent)) {
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

}  // namespace gev::websocket

#include "websocket/client.h"

#include <openssl/rand.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "http/request.h"
#include "websocket/internal/session.h"

namespace gev::websocket {

using internal::ConnectionState;
using internal::SocketInternals;
using internal::StateOf;
using Phase = internal::ConnectionState::Phase;

namespace {

// A fresh Sec-WebSocket-Key: base64 of 16 random bytes (RFC 6455, 4.1).
std::string NewKey() {
  unsigned char nonce[16];
  if (RAND_bytes(nonce, sizeof(nonce)) != 1) {
    // OpenSSL's generator cannot fail once seeded; the key is a nonce, not a secret.
    uint64_t now = static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
    std::memcpy(nonce, &now, sizeof(now));
    std::memcpy(nonce + 8, &now, sizeof(now));
  }
  return absl::Base64Escape(
      absl::string_view(reinterpret_cast<const char*>(nonce), sizeof(nonce)));
}

}  // namespace

// The gev::Handler of the client's connection: the upgrade, then the session.
class Client::Bridge : public gev::Handler, public std::enable_shared_from_this<Bridge> {
 public:
  Bridge(SocketHandler* handler, Target target, ClientOptions options)
      : handler_(handler), target_(std::move(target)), options_(std::move(options)) {}
  ~Bridge() override { delete current_; }

  const ClientOptions& options() const { return options_; }
  std::shared_ptr<Socket> socket() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return socket_;
  }
  // Its client is going. Inside one of the connection's callbacks, that connection's OnClose
  // is still to come (gev::Client ends it once the callback returns): this bridge keeps itself
  // for it. Elsewhere the client's Stop has waited for it.
  void Orphan() {
    if (current_ != nullptr && loop_.loop != nullptr && loop_.loop->IsInLoopThread()) {
      self_ = shared_from_this();
    }
  }

  void OnConnect(Connection& conn) override {
    loop_.loop = conn.loop();
    ConnectionState& state = internal::NewState(conn, &loop_);
    state.client = true;
    key_ = NewKey();
    current_ = &state;
    const ClientOptions& options = options_;
    std::string request = absl::StrCat(
        "GET ", target_.path, " HTTP/1.1\r\nHost: ", target_.host_header,
        "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ", key_,
        "\r\nSec-WebSocket-Version: 13\r\n");
    if (!options.websocket.protocols.empty()) {
      absl::StrAppend(&request, "Sec-WebSocket-Protocol: ",
                      absl::StrJoin(options.websocket.protocols, ", "), "\r\n");
    }
    if (options.websocket.deflate.enabled) {
      absl::StrAppend(&request, "Sec-WebSocket-Extensions: ",
                      DeflateOffer(options.websocket.deflate), "\r\n");
    }
    for (const auto& [name, value] : options.headers) {
      absl::StrAppend(&request, name, ": ", value, "\r\n");
    }
    request += "\r\n";
    // Refused only when the connection is closing already; it ends on its own then.
    (void)conn.Send(request);
    absl::Duration every = internal::SweepInterval(options.websocket);
    if (every != absl::InfiniteDuration() && sweep_timer_ == 0) {
      sweep_timer_ = conn.loop()->RunEvery(
          every, [this] { internal::Sweep(loop_, options_.websocket); });
    }
  }

  Reply OnMessage(Connection& conn, RingBuffer& input) override {
    ConnectionState* state = StateOf(conn);
    if (state == nullptr || state->phase == Phase::kDone) {
      input.RetrieveAll();
      return {};
    }
    if (state->phase == Phase::kHttp && !ReadResponse(*state, input)) return {};
    if (state->phase == Phase::kOpen || state->phase == Phase::kClosing) {
      internal::ReadFrames(*state, input, handler_);
    }
    return {};
  }

  void OnLowWater(Connection& conn) override {
    ConnectionState* state = StateOf(conn);
    if (state != nullptr && state->phase == Phase::kOpen) handler_->OnDrain(*state->socket);
  }

  void OnClose(Connection& conn, const absl::Status& reason) override {
    // An orphaned bridge goes when this returns; its own state is settled before the handler
    // hears of the close (which may destroy the client, or a new one).
    std::shared_ptr<Bridge> keep = std::move(self_);
    if (sweep_timer_ != 0) {
      conn.loop()->Cancel(sweep_timer_);
      sweep_timer_ = 0;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      socket_.reset();
    }
    current_ = nullptr;  // EndSession frees it.
    internal::EndSession(conn, reason, handler_);
  }

 private:
  // The upgrade's response: false while it is incomplete or once it failed.
  bool ReadResponse(ConnectionState& state, RingBuffer& input) {
    Connection& conn = *state.connection;
    std::string_view window = input.Contiguous(std::min(input.Length(), http::kMaxHeadBytes),
                                               loop_.head, sizeof(loop_.head));
    size_t head_length = http::HeadLength(window);
    if (head_length == std::string_view::npos) {
      if (input.Length() < http::kMaxHeadBytes) return false;  // More is coming.
      return Refuse(state, input, absl::InvalidArgumentError("the upgrade's response head is too large"));
    }
    http::Response response;
    if (http::ParseResponseHead(window.substr(0, head_length), &response) !=
        http::HeadStatus::kOk) {
      return Refuse(state, input, absl::InvalidArgumentError("a malformed upgrade response"));
    }
    if (response.status != 101) {
      return Refuse(state, input,
                    absl::FailedPreconditionError(absl::StrCat(
                        "the server answered the upgrade with ", response.status, " ",
                        std::string(response.reason))));
    }
    if (!response.HasToken("upgrade", "websocket") || !response.HasToken("connection", "upgrade")) {
      return Refuse(state, input, absl::InvalidArgumentError(
                                      "a 101 without Upgrade: websocket and Connection: upgrade"));
    }
    std::optional<std::string_view> accept = response.Find("sec-websocket-accept");
    if (!accept.has_value() || *accept != AcceptKey(key_)) {
      return Refuse(state, input, absl::InvalidArgumentError(
                                      "Sec-WebSocket-Accept does not match the key sent"));
    }
    const ClientOptions& options = options_;
    std::string protocol(response.Find("sec-websocket-protocol").value_or(std::string_view()));
    if (!protocol.empty() &&
        std::find(options.websocket.protocols.begin(), options.websocket.protocols.end(),
                  protocol) == options.websocket.protocols.end()) {
      return Refuse(state, input, absl::InvalidArgumentError(absl::StrCat(
                                      "the server chose subprotocol \"", protocol,
                                      "\", which was not offered")));
    }
    std::vector<std::string_view> extensions;
    for (const http::Field& field : response.fields) {
      if (http::EqualsIgnoreCase(field.name, "sec-websocket-extensions")) {
        extensions.push_back(field.value);
      }
    }
    std::optional<DeflateAgreement> deflate;
    if (!AcceptDeflateResponse(extensions, options.websocket.deflate, &deflate)) {
      return Refuse(state, input, absl::InvalidArgumentError(
                                      "the server answered with extensions not offered"));
    }
    input.Retrieve(head_length);  // The response's views are not used past here.
    std::shared_ptr<Socket> socket = SocketInternals::Make(
        nullptr, &options.websocket, Role::kClient, conn.shared_from_this());
    SocketInternals::protocol(*socket) = protocol;
    SocketInternals::target(*socket) = target_.path;
    internal::OpenSocket(state, socket, deflate, options.websocket, Role::kClient);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      socket_ = socket;
    }
    handler_->OnOpen(*socket);
    return true;
  }

  bool Refuse(ConnectionState& state, RingBuffer& input, const absl::Status& why) {
    state.phase = Phase::kDone;
    state.Unlink();
    input.RetrieveAll();
    if (options_.on_handshake_error) options_.on_handshake_error(why);
    state.connection->Close(why);
    return false;
  }

  SocketHandler* const handler_;  // The user's (gev::Handler is this bridge's base).
  const Target target_;
  const ClientOptions options_;
  internal::LoopState loop_;  // This client's one connection at a time; its loop thread only.
  TimerId sweep_timer_ = 0;
  std::string key_;  // The current upgrade request's Sec-WebSocket-Key.
  // The connection's state until its OnClose. A client on a loop that finished with the
  // connection open gets no OnClose (gev::Client's rule): then the state is freed here.
  ConnectionState* current_ = nullptr;
  std::shared_ptr<Bridge> self_;  // Set by Orphan() until OnClose.
  mutable std::mutex mutex_;
  std::shared_ptr<Socket> socket_;  // Guarded by mutex_.
};

absl::StatusOr<Client::Target> Client::ParseUrl(std::string_view url) {
  Target target;
  std::string_view rest;
  if (url.substr(0, 5) == "ws://") {
    rest = url.substr(5);
  } else if (url.substr(0, 6) == "wss://") {
    target.secure = true;
    rest = url.substr(6);
  } else {
    return absl::InvalidArgumentError(absl::StrCat("not a ws:// or wss:// URL: ", std::string(url)));
  }
  size_t slash = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, slash);
  target.path = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (target.path[0] == '?') target.path.insert(0, "/");
  if (target.path.find_first_of(" \t\r\n#") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("a URL path with spaces or a fragment: ",
                                                   std::string(url)));
  }
  if (authority.empty() || authority.find('@') != std::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("no host (or user info) in ", std::string(url)));
  }
  std::string_view host = authority;
  std::string_view port;
  if (authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return absl::InvalidArgumentError("an unclosed [ in the host");
    host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return absl::InvalidArgumentError("junk after the host's ]");
      port = after.substr(1);
    }
  } else {
    size_t colon = authority.rfind(':');
    if (colon != std::string_view::npos) {
      host = authority.substr(0, colon);
      port = authority.substr(colon + 1);
    }
  }
  int port_number = target.secure ? 443 : 80;
  if (!port.empty() && (!absl::SimpleAtoi(absl::string_view(port.data(), port.size()), &port_number) ||
                        port_number <= 0 || port_number > 65535)) {
    return absl::InvalidArgumentError(absl::StrCat("a bad port in ", std::string(url)));
  }
  if (host.empty()) return absl::InvalidArgumentError(absl::StrCat("no host in ", std::string(url)));
  target.host = std::string(host);
  const bool v6 = authority.front() == '[';
  std::string bracketed = v6 ? absl::StrCat("[", target.host, "]") : target.host;
  target.address = absl::StrCat(bracketed, ":", port_number);
  target.host_header = port.empty() ? bracketed : absl::StrCat(bracketed, ":", port_number);
  return target;
}

absl::StatusOr<std::unique_ptr<Client>> Client::Dial(Handler* handler, std::string_view url,
                                                     ClientOptions options) {
  if (handler == nullptr) return absl::InvalidArgumentError("handler is null");
  absl::StatusOr<Target> target = ParseUrl(url);
  if (!target.ok()) return target.status();
  if (target->secure && options.connection.transport == nullptr) {
    return absl::FailedPreconditionError(
        "wss:// needs connection.transport: tls::ClientTransport (from //tls)");
  }
  if (!target->secure && options.connection.transport != nullptr) {
    return absl::InvalidArgumentError("a transport for a ws:// URL: use wss://");
  }
  options.connection.address = target->address;
  if (options.connection.server_name.empty()) options.connection.server_name = target->host;
  std::unique_ptr<Client> client(new Client);
  client->bridge_ = std::make_shared<Bridge>(handler, *std::move(target), std::move(options));
  absl::StatusOr<std::unique_ptr<gev::Client>> connection =
      gev::Client::Create(client->bridge_.get(), client->bridge_->options().connection);
  if (!connection.ok()) return connection.status();
  client->connection_ = std::move(*connection);
  client->connection_->Connect();
  return client;
}

Client::~Client() {
  Stop();
  if (bridge_ != nullptr) bridge_->Orphan();
  connection_.reset();  // Before the bridge, whose callbacks it calls.
}

void Client::Stop() {
  std::shared_ptr<Socket> open = socket();
  if (open != nullptr) {
    // Refused only if a close frame went already; the connection ends below either way.
    (void)open->Close(kCloseGoingAway, "client stopping");
  }
  if (connection_ == nullptr) return;
  if (open != nullptr && connection_->loop()->IsInLoopThread()) {
    // The close frame is a task queued on this loop (behind what other threads sent), and a
    // stop run here, now, would end the connection before it: the stop queues behind it.
    // Refused only by a finished loop, where the connection has ended already.
    (void)connection_->loop()->QueueInLoop([connection = connection_] { connection->Stop(); });
    return;
  }
  connection_->Stop();
}

std::shared_ptr<Socket> Client::socket() const {
  return bridge_ != nullptr ? bridge_->socket() : nullptr;
}

}  // namespace gev::websocket

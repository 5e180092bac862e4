// -----------------------------------------------------------------------------
// File: websocket/websocket.h
// -----------------------------------------------------------------------------
//
// WebSocket servers (RFC 6455, with RFC 7692 permessage-deflate) on gev's loops. A
// `websocket::Service` is the `gev::Handler` of an ordinary `gev::Server`: it answers the
// HTTP/1.1 upgrade, serves plain HTTP on the same port for what is not one, and turns frames
// into whole messages for a `websocket::Handler`, which the user writes:
//
//   class Chat : public gev::websocket::Handler {
//     void OnOpen(gev::websocket::Socket& socket) override { socket.Subscribe("room"); }
//     void OnMessage(gev::websocket::Socket& socket, std::string_view message,
//                    gev::websocket::MessageType type) override {
//       service->Publish("room", message, type);   // to every subscriber, on every loop
//     }
//   };
//   Chat chat;
//   gev::websocket::Service service(&chat, {.deflate = {.enabled = true}});
//   auto server = gev::NewServer(&service, gev::Address(":8080"), gev::NumLoops(4));
//   (*server)->Start();
//
// Every server option applies (loops, ReusePort, MaxConnections, TLS through WithTransport
// for wss://). A `Socket` is one upgraded connection; keep `socket.shared_from_this()` to use
// it later from any thread.
//
// What it promises:
//   - Messages arrive whole (fragments reassembled), text checked as UTF-8 as it arrives;
//     anything RFC 6455 forbids closes that connection with the code the RFC names
//     (websocket/message_reader.h lists them), after a close frame saying why.
//   - Send() takes a whole message or refuses it with a Status: ResourceExhausted past the
//     connection's pending-output cap (gev's MaxPendingOutput), FailedPrecondition once the
//     socket is closing. A socket whose pending output passes Options::max_backlog (16 MiB by
//     default) is dropped, as uWebSockets' maxBackpressure. OnDrain says when pending output
//     that passed the high-water mark has drained. Pings are answered while little output
//     waits (RFC 6455 lets an endpoint answer only the latest): a peer that pings and never
//     reads cannot make pongs pile up.
//   - The close handshake: the peer's close frame is answered with its code and the TCP
//     connection closed; Close() sends ours and waits Options::close_timeout for the peer's.
//     Either way a connection that has not ended close_timeout later (its peer not reading what
//     is left) is reset. Nothing is sent after a close frame, from any thread. OnClose runs once
//     per OnOpen, with the peer's code, or 1006 when none came.
//   - Keepalive: a socket quiet for ping_interval is pinged; one quiet for idle_timeout is
//     closed (1001). An upgrade request not whole within handshake_timeout is answered 408.
//   - Publish() frames (and compresses) a message once per form and hands it to every
//     subscriber's loop; from any thread.
//
// Thread safety: Handler callbacks run on the socket's loop thread. Socket::Send, Close,
// Ping, Subscribe, Unsubscribe and Service::Publish are thread-safe.

#ifndef GEV_WEBSOCKET_WEBSOCKET_H_
#define GEV_WEBSOCKET_WEBSOCKET_H_

#include <any>
#include <map>
#include <atomic>
#include <functional>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "http/request.h"
#include "net/connection.h"
#include "server/handler.h"
#include "websocket/deflate.h"
#include "websocket/frame.h"
#include "websocket/handshake.h"
#include "websocket/message_reader.h"

namespace gev::websocket {

class Service;
namespace internal {
struct LoopState;
struct ConnectionState;
struct SocketInternals;
}  // namespace internal

// Whether a message may go compressed: kAuto compresses it when permessage-deflate was agreed
// and it is at least DeflateOptions::min_size; kNone sends it as it is.
enum class Compression { kAuto, kNone };

struct Options {
  // The largest message accepted whole, in bytes (after inflating); a larger one closes with
  // 1009 (unless streamed).
  uint64_t max_message = 16 << 20;
  // Streaming for large messages: one that passes this many bytes reaches
  // Handler::OnMessagePart in parts as its bytes arrive, never held whole, up to
  // max_streamed_message (then 1009); zero: every message whole, to OnMessage.
  uint64_t stream_above = 0;
  uint64_t max_streamed_message = uint64_t{1} << 30;
  DeflateOptions deflate;  // permessage-deflate; off unless enabled.
  // Subprotocols this server speaks, preferred first: the first the client offers is chosen.
  std::vector<std::string> protocols;
  // A socket from which nothing has come for this long is pinged; zero: never.
  absl::Duration ping_interval = absl::Seconds(30);
  // A socket from which nothing has come for this long is closed (1001); zero: never.
  absl::Duration idle_timeout = absl::Seconds(120);
  // An HTTP request (the upgrade, or a plain request) must be whole this long after it began
  // (or after the connection opened, or the last response): else 408 and close.
  absl::Duration handshake_timeout = absl::Seconds(10);
  // After our close frame, how long the peer has to answer before the connection is dropped.
  absl::Duration close_timeout = absl::Seconds(5);
  // Pending output past which a socket is dropped (a reset: its peer is not reading, so a close
  // frame would not reach it either; OnClose gets 1006) rather than sent more, a published
  // message included; zero: only what would pass the connection's pending cap is refused.
  size_t max_backlog = 16 << 20;
};

// What OnUpgrade sees and may change.
struct Upgrade {
  const http::Request* request = nullptr;  // Every field of the upgrade request.
  const UpgradeRequest* offer = nullptr;   // Its target, Origin, subprotocols, extensions.
  InetAddress peer;
  // The subprotocol to answer with (the first of Options::protocols the client offered, or
  // empty); the hook may choose another of those offered.
  std::string protocol;
  // Set to refuse: the response's status line and body ({"403 Forbidden", "bad origin"}).
  std::optional<HandshakeError> refusal;
  // Becomes the socket's user data.
  std::any user_data;
};

// A plain HTTP response, for requests that are not upgrades.
struct HttpResponse {
  std::string status_line = "404 Not Found";
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // Extra fields.
};

// One upgraded connection. Made by the Service; the handler gets it by reference, and
// `shared_from_this()` keeps it (and its connection) for use from other threads.
class Socket : public std::enable_shared_from_this<Socket> {
 public:
  // Socket::Send() — one message, whole: all of it or none (see the header comment).
  // Compressed when permessage-deflate was agreed, the message is at least
  // DeflateOptions::min_size and `compression` is kAuto; Compression::kNone sends it as it is
  // (bytes that are compressed already: images, archives). Thread-safe.
  absl::Status Send(std::string_view message, MessageType type = MessageType::kText,
                    Compression compression = Compression::kAuto);
  // Socket::Ping() — a ping with up to 125 bytes of payload. Thread-safe.
  absl::Status Ping(std::string_view payload = {});
  // Socket::Close() — starts the close handshake with `code` (1000, 1001, 1008, 1011, or
  // 3000-4999 for the application's own) and a reason (cut at a character to fit a control
  // frame); the connection ends when the peer answers or close_timeout passes. InvalidArgument
  // for a code no endpoint may send (nothing is sent); FailedPrecondition if a close frame was
  // sent already. Thread-safe.
  absl::Status Close(uint16_t code = kCloseNormal, std::string_view reason = {});
  // Socket::Subscribe() / Unsubscribe() — whether Publish(topic) reaches this socket (a
  // server's socket; a client's has no topics and ignores them). Thread-safe (applied on the
  // socket's loop, in order with its other calls from that thread).
  void Subscribe(std::string topic);
  void Unsubscribe(std::string topic);
  // Socket::Publish() — Service::Publish to `topic`, except to this socket (a server's; a
  // client's publishes nothing). Thread-safe.
  void Publish(std::string_view topic, std::string_view message,
               MessageType type = MessageType::kText,
               Compression compression = Compression::kAuto);
  // Whether this socket is subscribed to `topic`. Loop thread only.
  bool IsSubscribed(std::string_view topic) const;

  const std::string& protocol() const { return protocol_; }  // The subprotocol agreed.
  const std::string& target() const { return target_; }      // The upgrade's path and query.
  bool compressed() const { return deflate_.has_value(); }   // permessage-deflate agreed.
  InetAddress PeerAddr() const { return connection_->PeerAddr(); }
  // Bytes accepted by Send and not yet written. Thread-safe.
  size_t BufferedAmount() const { return connection_->PendingOutput(); }
  Connection& connection() const { return *connection_; }
  // What OnUpgrade put in Upgrade::user_data, in place. Loop thread only.
  std::any& user_data() { return user_data_; }

 public:
  // Only //websocket makes sockets (std::make_shared needs a public constructor).
  class PassKey {
    friend struct internal::SocketInternals;
    PassKey() = default;
  };
  Socket(PassKey, Service* service, const Options* options, Role role, ConnectionPtr connection);

 private:
  friend class Service;
  friend struct internal::SocketInternals;
  // Frames `payload` (compressing a data frame when it should be, masking it on a client) and
  // sends it. Any thread.
  absl::Status SendFrame(Opcode opcode, std::string_view payload,
                         Compression compression = Compression::kAuto);
  // The close frame, once (FailedPrecondition if one went already), then `then` (close the
  // connection, start the close deadline). Both run as one task queued on the loop, after
  // every message another thread sent before it: nothing follows a close frame on the wire
  // (RFC 6455, 5.5.1), and nothing sent before it is overtaken by it.
  absl::Status SendCloseFrame(std::string_view payload, std::function<void()> then);

  Service* const service_;   // Null on a client.
  const Options* const options_;
  const Role role_;          // kServer: frames go unmasked; kClient: masked.
  const ConnectionPtr connection_;
  std::string protocol_;
  std::string target_;
  std::optional<DeflateAgreement> deflate_;
  // With context takeover on our side: this socket's own compressor, used on its loop thread
  // only (a send from another thread goes uncompressed, which RFC 7692 allows per message).
  std::unique_ptr<Deflater> own_deflater_;
  std::any user_data_;
  std::vector<std::string> topics_;  // Loop thread only.
  // Set once our close frame is sent (by any thread); nothing is sent after it.
  std::atomic<bool> close_sent_{false};
  // Held by a send from another thread from its check of close_sent_ until its bytes are
  // queued, and by SendCloseFrame while it sets the flag and queues the frame: so a message is
  // either queued before the close frame or refused. A one-byte lock, not a 40-byte mutex:
  // every socket has one, and two threads sending to one socket at once are rare.
  class OrderLock {
   public:
    void lock() {
      while (held_.exchange(true, std::memory_order_acquire)) std::this_thread::yield();
    }
    void unlock() { held_.store(false, std::memory_order_release); }

   private:
    std::atomic<bool> held_{false};
  };
  OrderLock order_lock_;
};

class Handler {
 public:
  virtual ~Handler() = default;
  // Handler::OnUpgrade() — a valid upgrade request, before it is answered: refuse it (set
  // upgrade.refusal: a bad Origin, no such path) or choose the subprotocol and user data.
  virtual void OnUpgrade(Upgrade& upgrade) { (void)upgrade; }
  virtual void OnOpen(Socket& socket) { (void)socket; }
  // Handler::OnMessage() — one whole message; `message` is good until the call returns.
  virtual void OnMessage(Socket& socket, std::string_view message, MessageType type) = 0;
  // Handler::OnMessagePart() — with Options::stream_above: the next part of a large message,
  // in order, `last` on its final one (possibly empty). A text part ends between characters
  // and is valid UTF-8 on its own. Messages not past the threshold still come to OnMessage.
  virtual void OnMessagePart(Socket& socket, std::string_view part, MessageType type,
                             bool last) {
    (void)socket;
    (void)part;
    (void)type;
    (void)last;
  }
  // Handler::OnClose() — once per OnOpen: the peer's close code and reason, or 1006 when the
  // connection ended without one (a reset, a timeout, a protocol error of ours to report).
  virtual void OnClose(Socket& socket, uint16_t code, std::string_view reason) {
    (void)socket;
    (void)code;
    (void)reason;
  }
  // Handler::OnDrain() — pending output that had passed the high-water mark has drained
  // below half of it: a producer that paused may go on.
  virtual void OnDrain(Socket& socket) { (void)socket; }
  // Handler::OnPing() / OnPong() — a control frame arrived (a ping is answered already).
  virtual void OnPing(Socket& socket, std::string_view payload) {
    (void)socket;
    (void)payload;
  }
  virtual void OnPong(Socket& socket, std::string_view payload) {
    (void)socket;
    (void)payload;
  }
  // Handler::OnHttpRequest() — a request that is not an upgrade (a page, a health check).
  // By default 426 Upgrade Required for the root, 404 for anything else.
  virtual HttpResponse OnHttpRequest(const http::Request& request);
};

// The user's handler, named apart from gev::Handler, which Service is.
using SocketHandler = Handler;

class Service : public gev::Handler {
 public:
  Service(SocketHandler* handler, Options options);
  ~Service() override;

  // Service::Publish() — `message` to every socket subscribed to `topic`, on every loop:
  // framed once (and compressed once, for the sockets that agreed deflate without context
  // takeover at the full window), then handed to each loop. A subscriber that refuses it (its
  // pending output at the cap) is closed, as max_backlog would: a published message is never
  // dropped silently. `compression` as Socket::Send. Thread-safe.
  void Publish(std::string_view topic, std::string_view message,
               MessageType type = MessageType::kText, const Socket* except = nullptr,
               Compression compression = Compression::kAuto);
  // Open sockets (upgraded and not yet closed), on every loop. Thread-safe.
  size_t SocketCount() const { return sockets_.load(std::memory_order_relaxed); }
  const Options& options() const { return options_; }

  // gev::Handler.
  void OnLoopStart(EventLoop& loop, size_t loop_index) override;
  void OnConnect(Connection& conn) override;
  Reply OnMessage(Connection& conn, RingBuffer& input) override;
  void OnLowWater(Connection& conn) override;
  void OnClose(Connection& conn, const absl::Status& reason) override;

 private:
  friend class Socket;
  internal::LoopState& LoopOf(const Connection& conn);
  // The HTTP phase: requests until an upgrade. False once the connection is closing.
  bool ReadRequests(internal::ConnectionState& state, RingBuffer& input);
  void AcceptUpgrade(internal::ConnectionState& state, const http::Request& request,
                     RingBuffer& input, size_t head_length);
  void SubscribeInLoop(Socket& socket, std::string topic, bool subscribe);

  SocketHandler* const handler_;
  const Options options_;
  std::atomic<size_t> sockets_{0};
  std::mutex loops_mutex_;
  // Each loop's state, by loop (a Service may serve several servers: ws:// and wss://, say).
  std::map<const EventLoop*, std::unique_ptr<internal::LoopState>> loops_;
};

}  // namespace gev::websocket

#endif  // GEV_WEBSOCKET_WEBSOCKET_H_

// -----------------------------------------------------------------------------
// File: websocket/internal/session.h
// -----------------------------------------------------------------------------
//
// What a WebSocket connection is once upgraded, on either side: its state in the connection's
// context, the loop's waiting lists that the keepalive, close and handshake deadlines are kept
// with, reading frames into the user's handler, and ending. websocket::Service (the server)
// and websocket::Client both run their connections through it. Internal to //websocket.
//
// Thread safety: loop thread only, except SharedDeflater (per thread) and the Socket.

#ifndef GEV_WEBSOCKET_INTERNAL_SESSION_H_
#define GEV_WEBSOCKET_INTERNAL_SESSION_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "http/request.h"
#include "net/connection.h"
#include "ringbuffer/ring_buffer.h"
#include "websocket/deflate.h"
#include "websocket/message_reader.h"
#include "websocket/websocket.h"

namespace gev::websocket::internal {

// Socket's private parts, for this file's functions, the Service and the Client.
struct SocketInternals {
  static std::shared_ptr<Socket> Make(Service* service, const Options* options, Role role,
                                      ConnectionPtr connection) {
    // One allocation for the socket and its count.
    return std::make_shared<Socket>(Socket::PassKey(), service, options, role,
                                    std::move(connection));
  }
  static absl::Status SendFrame(Socket& socket, Opcode opcode, std::string_view payload) {
    return socket.SendFrame(opcode, payload);
  }
  static absl::Status SendCloseFrame(Socket& socket, std::string_view payload,
                                     std::function<void()> then) {
    return socket.SendCloseFrame(payload, std::move(then));
  }
  static std::string& protocol(Socket& socket) { return socket.protocol_; }
  static std::string& target(Socket& socket) { return socket.target_; }
  static std::optional<DeflateAgreement>& deflate(Socket& socket) { return socket.deflate_; }
  static std::unique_ptr<Deflater>& own_deflater(Socket& socket) { return socket.own_deflater_; }
  static std::vector<std::string>& topics(Socket& socket) { return socket.topics_; }
  static std::atomic<bool>& close_sent(Socket& socket) { return socket.close_sent_; }
  static const ConnectionPtr& connection(const Socket& socket) { return socket.connection_; }
};

struct WaitList {
  ConnectionState* front = nullptr;
  ConnectionState* back = nullptr;
};

// One connection, from its start to its close: the HTTP exchange (requests until an upgrade
// on a server; the upgrade's response on a client), then its socket. Lives in the connection's
// context.
struct ConnectionState {
  enum class Phase {
    kHttp,     // Server: reading requests until an upgrade. Client: awaiting the 101.
    kOpen,     // Upgraded.
    kClosing,  // Our close frame is sent; waiting for the peer's.
    kDone,     // Closing the TCP connection; nothing more is read.
  };
  Phase phase = Phase::kHttp;
  Connection* connection = nullptr;  // Until OnClose.
  LoopState* loop = nullptr;
  std::shared_ptr<Socket> socket;  // From the upgrade.
  std::optional<MessageReader> reader;
  std::unique_ptr<Inflater> inflater;
  // The peer's close frame, if one came.
  bool peer_closed = false;
  uint16_t peer_code = kCloseAbnormal;
  std::unique_ptr<std::string> peer_reason;  // Allocated only when the peer closes.
  // Keepalive: one ping per quiet spell.
  bool pinged = false;
  // A client's upgrade, which the server does not answer 408 when it is slow.
  bool client = false;

  // Its place in one of the loop's waiting lists, oldest first.
  WaitList* list = nullptr;
  ConnectionState* previous = nullptr;
  ConnectionState* next = nullptr;
  uint64_t since_ms = 0;

  void Unlink();
  void LinkLast(WaitList* to, uint64_t now_ms);
};

// A loop's connections by what they wait for, and its topics. A server has one per loop; a
// client has its own.
struct LoopState {
  EventLoop* loop = nullptr;
  WaitList http;     // In the HTTP phase, by when their current request (or response) began.
  WaitList open;     // Upgraded, by when a byte last came.
  // Closing, by when: our close frame sent (kClosing), or the peer's answered or an HTTP
  // exchange ended (kDone); reset at close_timeout if the connection has not ended by then.
  WaitList closing;
  absl::flat_hash_map<std::string, absl::flat_hash_set<Socket*>> topics;
  char head[http::kMaxHeadBytes];  // An HTTP head that wraps around the input ring.
};

// The connection's state (its context, as a plain pointer: no allocation for the context's
// value), or null once closed.
ConnectionState* StateOf(Connection& conn);
// Makes the connection's state (in OnConnect); EndSession frees it.
ConnectionState& NewState(Connection& conn, LoopState* loop);

// A compressor without context takeover, reset after each message, so one per thread, window
// and level serves every socket of that thread and every message it publishes.
Deflater& SharedDeflater(int window_bits, int level);

// The socket of `state` is open: its reader, inflater and (with context takeover) deflater
// are made, and it joins the loop's open list.
void OpenSocket(ConnectionState& state, std::shared_ptr<Socket> socket,
                const std::optional<DeflateAgreement>& deflate, const Options& options,
                Role role);
// Reads what `input` holds of frames into `handler`; fails the connection (a close frame with
// the code, then the end) on anything RFC 6455 forbids.
void ReadFrames(ConnectionState& state, RingBuffer& input, Handler* handler);
// The socket's close frame went out: its close deadline starts.
void CloseSent(Socket& socket);
// The connection closed: the socket leaves its topics, and `handler` hears OnClose (if the
// socket opened). The state is freed.
void EndSession(Connection& conn, const absl::Status& reason, Handler* handler);
// The deadlines of `loop` that have passed: slow HTTP (408), quiet sockets (a ping, then 1001),
// unanswered close frames (dropped).
void Sweep(LoopState& loop, const Options& options);
// How often Sweep should run for `options`; infinite when nothing needs it.
absl::Duration SweepInterval(const Options& options);

}  // namespace gev::websocket::internal

#endif  // GEV_WEBSOCKET_INTERNAL_SESSION_H_

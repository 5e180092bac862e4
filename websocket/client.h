// -----------------------------------------------------------------------------
// File: websocket/client.h
// -----------------------------------------------------------------------------
//
// `gev::websocket::Client` dials a ws:// or wss:// URL on gev's loops, upgrades (RFC 6455,
// 4.1: a fresh key, the accept value checked, subprotocols and permessage-deflate offered and
// the answer checked against the offer), and serves the same `websocket::Handler` a server
// does: OnOpen, whole messages in OnMessage, OnClose once per OnOpen. Its frames are masked
// with keys from OpenSSL's generator. It is a gev::Client underneath, so it reconnects as
// that one does (`connection.reconnect`), runs on its own loop or a given one, and takes a
// transport: wss:// needs `connection.transport` (tls::ClientTransport, from //tls).
//
//   class Printer : public gev::websocket::Handler {
//     void OnOpen(gev::websocket::Socket& socket) override { (void)socket.Send("hello"); }
//     void OnMessage(gev::websocket::Socket&, std::string_view message,
//                    gev::websocket::MessageType) override { std::puts(...); }
//   };
//   gev::websocket::ClientOptions options;
//   options.websocket.deflate.enabled = true;
//   options.headers = {{"Origin", "https://example.com"}};
//   auto client = gev::websocket::Client::Dial(&printer, "ws://127.0.0.1:8080/chat", options);
//   ...
//   (*client)->Stop();   // a close frame (1001), then the connection ends
//
// Thread safety: Dial, Stop and socket() are thread-safe; callbacks run on the client's loop
// thread; the Socket is as on a server (Send from any thread). The handler must outlive the
// client's last OnClose (as gev::Client's). A client may be destroyed inside its own callback.

#ifndef GEV_WEBSOCKET_CLIENT_H_
#define GEV_WEBSOCKET_CLIENT_H_

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/client.h"
#include "websocket/websocket.h"

namespace gev::websocket {

struct ClientOptions {
  // Limits, keepalive and deadlines as a server's; `protocols` are offered in this order, and
  // `deflate` offered when enabled. handshake_timeout bounds the wait for the 101 response.
  Options websocket;
  // The connection: reconnect, connect_timeout, its loop, and the transport (TLS for wss://:
  // tls::ClientTransport; server_name defaults to the URL's host). Its address is the URL's.
  gev::ClientOptions connection;
  // Extra fields for the upgrade request (Origin, Authorization, Cookie).
  std::vector<std::pair<std::string, std::string>> headers;
  // An upgrade the server did not accept (its status, a wrong accept value, a subprotocol or
  // extension not offered): the connection ends, and with reconnect it is tried again. On the
  // loop thread.
  std::function<void(const absl::Status& why)> on_handshake_error;
};

class Client {
 public:
  // Client::Dial() — starts connecting to `url`. Errors: InvalidArgument for a URL that is not
  // ws:// or wss://host[:port][/path], FailedPrecondition for wss:// without a transport, and
  // what gev::Client::Create returns.
  static absl::StatusOr<std::unique_ptr<Client>> Dial(Handler* handler, std::string_view url,
                                                      ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Client::Stop() — sends a close frame (1001) if a socket is open, then ends the connection
  // and any reconnecting, as gev::Client::Stop, without waiting for the server's answer (so
  // the handler's OnClose says 1006). On the client's loop thread (from a callback, or a
  // server's callback when the client shares its loop) the connection ends just after the
  // close frame is written, in a task queued behind it. Idempotent.
  void Stop();
  // Client::socket() — the open socket, or null (connecting, between reconnects, stopped).
  std::shared_ptr<Socket> socket() const;

 private:
  class Bridge;
  struct Target {
    bool secure = false;
    std::string host;         // As in the URL, without brackets.
    std::string host_header;  // "host" or "host:port", brackets kept.
    std::string address;      // For gev::Client: "host:port" ([v6]:port).
    std::string path;         // The request target: path and query.
  };
  static absl::StatusOr<Target> ParseUrl(std::string_view url);

  Client() = default;

  // What the connection's callbacks use, shared with them: a client destroyed inside one of
  // its own callbacks leaves it alive until the connection's OnClose.
  std::shared_ptr<Bridge> bridge_;
  // Shared with a stop queued on its loop behind the close frame (see Stop), which may outlive
  // this client by one task.
  std::shared_ptr<gev::Client> connection_;
};

}  // namespace gev::websocket

#endif  // GEV_WEBSOCKET_CLIENT_H_

// -----------------------------------------------------------------------------
// File: examples/websocket/flags.h
// -----------------------------------------------------------------------------
//
// The flags the WebSocket examples share (port, loops, deflate, limits, timeouts, TLS for
// wss://), and what they make: the Service's options and the server's transport.
//
//   gev::websocket::Options options = gev::examples::WebSocketOptionsFromFlags();
//   absl::StatusOr<std::shared_ptr<gev::TransportFactory>> tls = gev::examples::TlsFromFlags();
//
// Thread safety: call from main() after absl::ParseCommandLine.

#ifndef GEV_EXAMPLES_WEBSOCKET_FLAGS_H_
#define GEV_EXAMPLES_WEBSOCKET_FLAGS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "net/transport.h"
#include "server/server.h"
#include "websocket/websocket.h"

namespace gev::examples {

gev::websocket::Options WebSocketOptionsFromFlags();
// TLS from --tls_cert and --tls_key (ALPN http/1.1), or null without them.
absl::StatusOr<std::shared_ptr<TransportFactory>> TlsFromFlags();
// Serves `service` as the flags say (--port, --loops, --reuseport) until a signal.
int ServeWebSocket(gev::websocket::Service& service);

}  // namespace gev::examples

#endif  // GEV_EXAMPLES_WEBSOCKET_FLAGS_H_

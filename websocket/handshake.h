// -----------------------------------------------------------------------------
// File: websocket/handshake.h
// -----------------------------------------------------------------------------
//
// The opening handshake of RFC 6455, section 4, both sides: a server checks an upgrade
// request (parsed by //http:request) and answers it; a client makes a request with a fresh key
// and checks the server's answer against it.
//
//   // Server, once a request head is parsed:
//   if (gev::websocket::IsUpgradeRequest(request)) {
//     gev::websocket::UpgradeRequest upgrade;
//     gev::websocket::HandshakeError error;
//     if (!gev::websocket::ReadUpgradeRequest(request, &upgrade, &error)) {
//       send(gev::websocket::RefusalResponse(error));   // 400, or 426 with the version
//     } else {
//       send(gev::websocket::AcceptResponse(upgrade.key, "chat", ""));
//     }
//   }
//
// Thread safety: functions of their arguments only.

#ifndef GEV_WEBSOCKET_HANDSHAKE_H_
#define GEV_WEBSOCKET_HANDSHAKE_H_

#include <string>
#include <string_view>
#include <vector>

#include "http/request.h"

namespace gev::websocket {

// What a valid upgrade request asks for; views into the parsed request.
struct UpgradeRequest {
  std::string_view target;  // The path and query.
  std::string_view key;     // Sec-WebSocket-Key, as sent (base64 of 16 bytes).
  std::string_view origin;  // Empty when the request has none (a non-browser client).
  // Sec-WebSocket-Protocol: every subprotocol offered, in the client's order.
  std::vector<std::string_view> protocols;
  // Sec-WebSocket-Extensions: every field's value, in order (websocket/deflate.h reads them).
  std::vector<std::string_view> extensions;
};

// Why a handshake was refused: the status line to answer with, or for a client the reason.
struct HandshakeError {
  std::string status_line;  // "400 Bad Request", "426 Upgrade Required", "403 Forbidden" ...
  std::string reason;       // For the log and the response body.
};

// IsUpgradeRequest() — whether `request` asks for a WebSocket (its Upgrade field names
// "websocket"); anything else is plain HTTP for the server to answer.
bool IsUpgradeRequest(const http::Request& request);

// ReadUpgradeRequest() — checks an upgrade request as RFC 6455, 4.2.1 asks: GET, HTTP/1.1,
// Connection holding "upgrade", one Sec-WebSocket-Key that is base64 of 16 bytes, no body,
// and Sec-WebSocket-Version 13 (else 426, and RefusalResponse says which version is spoken).
bool ReadUpgradeRequest(const http::Request& request, UpgradeRequest* upgrade,
                        HandshakeError* error);

// AcceptKey() — Sec-WebSocket-Accept for a key: base64 of SHA-1 of the key and the GUID.
std::string AcceptKey(std::string_view key);

// AcceptResponse() — the 101 response; `protocol` and `extensions` are left out when empty.
std::string AcceptResponse(std::string_view key, std::string_view protocol,
                           std::string_view extensions);

// RefusalResponse() — the error as a complete response that closes the connection (426 says
// "Sec-WebSocket-Version: 13").
std::string RefusalResponse(const HandshakeError& error);

}  // namespace gev::websocket

#endif  // GEV_WEBSOCKET_HANDSHAKE_H_

#include "websocket/handshake.h"

#include <openssl/evp.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace gev::websocket {
namespace {

constexpr std::string_view kGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

// This abseil predates its string_view being std::string_view.
absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

bool Refuse(HandshakeError* error, std::string status_line, std::string reason) {
  error->status_line = std::move(status_line);
  error->reason = std::move(reason);
  return false;
}

// A key is base64 of 16 bytes: 24 characters, the last two "==".
bool IsValidKey(std::string_view key) {
  if (key.size() != 24) return false;
  std::string decoded;
  return absl::Base64Unescape(AbslView(key), &decoded) && decoded.size() == 16 &&
         absl::Base64Escape(decoded) == key;  // The one canonical spelling.
}

}  // namespace

bool IsUpgradeRequest(const http::Request& request) {
  return request.HasToken("upgrade", "websocket");
}

bool ReadUpgradeRequest(const http::Request& request, UpgradeRequest* upgrade,
                        HandshakeError* error) {
  if (request.method != "GET") {
    return Refuse(error, "400 Bad Request", "a WebSocket upgrade must be a GET");
  }
  if (request.minor_version < 1) {
    return Refuse(error, "400 Bad Request", "a WebSocket upgrade needs HTTP/1.1");
  }
  if (!request.HasToken("connection", "upgrade")) {
    return Refuse(error, "400 Bad Request", "Connection does not hold \"upgrade\"");
  }
  if (request.content_length != 0 || request.Find("transfer-encoding").has_value()) {
    return Refuse(error, "400 Bad Request", "an upgrade request has no body");
  }
  std::optional<std::string_view> version = request.Find("sec-websocket-version");
  if (request.Count("sec-websocket-version") != 1 || *version != "13") {
    return Refuse(error, "426 Upgrade Required", "only WebSocket version 13 is spoken here");
  }
  std::optional<std::string_view> key = request.Find("sec-websocket-key");
  if (request.Count("sec-websocket-key") != 1 || !IsValidKey(*key)) {
    return Refuse(error, "400 Bad Request", "Sec-WebSocket-Key is not base64 of 16 bytes");
  }
  upgrade->target = request.target;
  upgrade->key = *key;
  upgrade->origin = request.Find("origin").value_or(std::string_view());
  upgrade->protocols.clear();
  upgrade->extensions.clear();
  bool protocols_valid = true;
  for (const http::Field& field : request.fields) {
    if (http::EqualsIgnoreCase(field.name, "sec-websocket-protocol")) {
      protocols_valid &= http::ForEachListItem(field.value, [&](std::string_view protocol) {
        if (!http::IsToken(protocol)) return false;
        upgrade->protocols.push_back(protocol);
        return true;
      });
    } else if (http::EqualsIgnoreCase(field.name, "sec-websocket-extensions")) {
      upgrade->extensions.push_back(field.value);
    }
  }
  if (!protocols_valid) {
    return Refuse(error, "400 Bad Request", "Sec-WebSocket-Protocol holds a non-token");
  }
  return true;
}

std::string AcceptKey(std::string_view key) {
  std::string input(key);
  input.append(kGuid.data(), kGuid.size());
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  // SHA-1 cannot fail on a buffer in memory; an empty answer would fail every handshake.
  if (EVP_Digest(input.data(), input.size(), digest, &length, EVP_sha1(), nullptr) != 1) {
    return std::string();
  }
  return absl::Base64Escape(
      absl::string_view(reinterpret_cast<const char*>(digest), static_cast<size_t>(length)));
}

std::string AcceptResponse(std::string_view key, std::string_view protocol,
                           std::string_view extensions) {
  std::string response = absl::StrCat(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: ",
      AcceptKey(key), "\r\n");
  if (!protocol.empty()) {
    absl::StrAppend(&response, "Sec-WebSocket-Protocol: ", AbslView(protocol), "\r\n");
  }
  if (!extensions.empty()) {
    absl::StrAppend(&response, "Sec-WebSocket-Extensions: ", AbslView(extensions), "\r\n");
  }
  response += "\r\n";
  return response;
}

std::string RefusalResponse(const HandshakeError& error) {
  std::string body = error.reason + "\n";
  std::string response = absl::StrCat("HTTP/1.1 ", error.status_line, "\r\n");
  if (error.status_line.rfind("426", 0) == 0) {
    response += "Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n";
  }
  absl::StrAppend(&response, "Content-Type: text/plain\r\nContent-Length: ", body.size(),
                  "\r\nConnection: close\r\n\r\n", body);
  return response;
}

}  // namespace gev::websocket

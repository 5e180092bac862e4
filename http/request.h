// -----------------------------------------------------------------------------
// File: http/request.h
// -----------------------------------------------------------------------------
//
// `gev::http` parses HTTP/1.0 and 1.1 request heads (the request line and the header fields)
// as RFC 9112 reads them, strictly: anything malformed is a 400, a head longer than
// kMaxHeadBytes or with more than kMaxFields fields a 431, an HTTP/1.1 request without exactly
// one Host field a 400, two Content-Length fields that disagree a 400 (the request smuggling
// shapes), Transfer-Encoding a 501 (bodies are not decoded here). It is what examples/http
// serves with and what //websocket reads its upgrade requests with.
//
// `ParseHead` takes a contiguous view of one whole head, through the blank line that ends it;
// finding that line (HeadLength, across a ring buffer's wrap with RingBuffer::Contiguous) is the
// caller's part. The request's views point into that head:
//
//   gev::http::Request request;
//   gev::http::HeadStatus status = gev::http::ParseHead(head, &request);
//   if (status != gev::http::HeadStatus::kOk) {
//     reply(gev::http::StatusLine(status));   // "400 Bad Request", ..., then close
//   }
//   if (request.HasToken("connection", "upgrade")) ...
//   std::optional<std::string_view> origin = request.Find("origin");
//
// Thread safety: functions of their arguments only; a Request is a plain value.

#ifndef GEV_HTTP_REQUEST_H_
#define GEV_HTTP_REQUEST_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "absl/container/inlined_vector.h"

namespace gev::http {

// The most bytes a request head may take (request line, fields and the blank line), about what
// nginx's default large_client_header_buffers allows.
inline constexpr size_t kMaxHeadBytes = 8 * 1024;
// The most header fields a head may have.
inline constexpr size_t kMaxFields = 100;
// ParseHead's default for the largest body it lets through.
inline constexpr uint64_t kDefaultMaxBodyBytes = 1 << 20;

// One header field: the name as sent (compare with EqualsIgnoreCase), the value without the
// spaces and tabs around it.
struct Field {
  std::string_view name;
  std::string_view value;
};

struct Request {
  std::string_view method;
  std::string_view target;
  int minor_version = 1;   // HTTP/1.<minor>.
  bool keep_alive = true;  // After the defaults of the version and any Connection field.
  uint64_t content_length = 0;
  // Every field in the order sent; sixteen fit without an allocation.
  absl::InlinedVector<Field, 16> fields;

  // Request::Find() — the value of the first field called `name` (any case); nullopt when
  // there is none.
  std::optional<std::string_view> Find(std::string_view name) const;
  // Request::Count() — how many fields are called `name`.
  size_t Count(std::string_view name) const;
  // Request::HasToken() — whether a comma-separated list in any field called `name` holds
  // `token` (any case): HasToken("connection", "upgrade").
  bool HasToken(std::string_view name, std::string_view token) const;
};

enum class HeadStatus {
  kOk,
  kBadRequest,           // 400
  kHeadTooLarge,         // 431: more than kMaxHeadBytes or kMaxFields
  kBodyTooLarge,         // 413
  kNotImplemented,       // 501: Transfer-Encoding, which is not decoded here
  kVersionNotSupported,  // 505: HTTP/2 and later in an HTTP/1 request line
};

// StatusLine() — the status code and reason phrase for `status` ("400 Bad Request").
std::string_view StatusLine(HeadStatus status);

// HeadLength() — how many bytes of `bytes` the head takes, through the blank line that ends it
// (lines end with CRLF or a bare LF), or npos when that line has not arrived.
size_t HeadLength(std::string_view bytes);

// ParseHead() — parses `head` (HeadLength() bytes: through the blank line; leading empty lines
// allowed, as RFC 9112 asks servers to skip them). Views in `request` point into `head`. A
// Content-Length above `max_body_bytes` is kBodyTooLarge.
HeadStatus ParseHead(std::string_view head, Request* request,
                     uint64_t max_body_bytes = kDefaultMaxBodyBytes);

// A response head (RFC 9112, 4), as a client reads one: the status and every field.
struct Response {
  int minor_version = 1;
  int status = 0;  // 100..999
  std::string_view reason;
  absl::InlinedVector<Field, 16> fields;

  std::optional<std::string_view> Find(std::string_view name) const;
  bool HasToken(std::string_view name, std::string_view token) const;
};

// ParseResponseHead() — parses `head` (HeadLength() bytes) strictly, as ParseHead does a
// request: kBadRequest for anything malformed, kHeadTooLarge past the limits. Views point
// into `head`.
HeadStatus ParseResponseHead(std::string_view head, Response* response);

// Helpers for what follows a parse (an upgrade's fields, say).
bool EqualsIgnoreCase(std::string_view a, std::string_view b);
// TrimSpaces() — `s` without the spaces and tabs at its ends.
std::string_view TrimSpaces(std::string_view s);
// IsToken() — whether `s` is an RFC 9110 token (a method, a field name, a protocol name).
bool IsToken(std::string_view s);
// ForEachListItem() — calls `each` with every element of the comma-separated list `value`,
// trimmed, skipping empty ones (RFC 9110, 5.6.1). Returns false as soon as `each` does.
template <typename Each>
bool ForEachListItem(std::string_view value, Each&& each) {
  while (true) {
    size_t comma = value.find(',');
    std::string_view item = TrimSpaces(value.substr(0, comma));
    if (!item.empty() && !each(item)) return false;
    if (comma == std::string_view::npos) return true;
    value.remove_prefix(comma + 1);
  }
}

}  // namespace gev::http

#endif  // GEV_HTTP_REQUEST_H_

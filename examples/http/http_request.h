// -----------------------------------------------------------------------------
// File: examples/http/http_request.h
// -----------------------------------------------------------------------------
//
// The HTTP example's request parser: HTTP/1.0 and 1.1 request heads (request line, header
// fields) as RFC 9112 reads them, strictly: anything malformed is a 400, a head longer than
// kMaxHeadBytes a 431 (an HTTP/1.1 request needs exactly one Host field, as RFC 9112 says). `ParseHead` takes a contiguous view of one whole head, up to and
// including the blank line that ends it; finding that line (across a ring buffer's wrap) is
// the caller's part.
//
//   gev::http::Request request;
//   gev::http::HeadStatus status = gev::http::ParseHead(head, &request);
//   if (status != gev::http::HeadStatus::kOk) ...   // answer status_code(status), close
//
// Thread safety: functions of their arguments only.

#ifndef GEV_EXAMPLES_HTTP_HTTP_REQUEST_H_
#define GEV_EXAMPLES_HTTP_HTTP_REQUEST_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace gev::http {

// The most bytes a request head may take (request line, fields and the blank line), as
// nginx's default large_client_header_buffers allows about.
inline constexpr size_t kMaxHeadBytes = 8 * 1024;
// The largest body the example accepts (it reads and discards it).
inline constexpr uint64_t kMaxBodyBytes = 1 << 20;

struct Request {
  std::string_view method;
  std::string_view target;
  int minor_version = 1;   // HTTP/1.<minor>.
  bool keep_alive = true;  // After the defaults of the version and any Connection field.
  uint64_t content_length = 0;
};

enum class HeadStatus {
  kOk,
  kBadRequest,           // 400
  kVersionNotSupported,  // 505: HTTP/2 and later in an HTTP/1 request line
  kNotImplemented,       // 501: Transfer-Encoding, which the example does not decode
  kBodyTooLarge,         // 413
};

// HeadLength() — how many bytes of `bytes` the head takes, through the blank line that ends it
// (lines end with CRLF or a bare LF), or npos when that line has not arrived.
size_t HeadLength(std::string_view bytes);

// ParseHead() — parses `head` (HeadLength() bytes: through the blank line; leading empty lines
// allowed, as RFC 9112 asks servers to skip them). Views in `request` point into `head`.
HeadStatus ParseHead(std::string_view head, Request* request);

}  // namespace gev::http

#endif  // GEV_EXAMPLES_HTTP_HTTP_REQUEST_H_

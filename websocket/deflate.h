// -----------------------------------------------------------------------------
// File: websocket/deflate.h
// -----------------------------------------------------------------------------
//
// permessage-deflate (RFC 7692) with zlib: the negotiation of its parameters on both sides,
// and the streams that compress and inflate messages.
//
//   // Server, with the client's Sec-WebSocket-Extensions values:
//   std::optional<DeflateAgreement> agreed = NegotiateDeflate(offers, options, &response_value);
//   if (agreed) answer with "Sec-WebSocket-Extensions: " + response_value, and
//     Deflater deflater(*agreed, Role::kServer); Inflater inflater(*agreed, Role::kServer);
//
// Memory, per connection: without context takeover a Deflater is reset after each message (it
// compresses a whole message in one call), so one per loop serves every connection on it, and
// an Inflater lets its stream go at each message's end. With context takeover a connection
// keeps its own streams: about 256 KiB to compress at 15 window bits and memory level 8
// (zlib's deflate state is 2^(windowBits+2) + 2^(memLevel+9) bytes and a little more), and
// about 44 KiB to inflate (the 32 KiB window and the inflate state). The defaults ask for no
// context takeover both ways, so an idle connection holds no zlib memory.
//
// Inflating is bounded: output past the message limit stops the inflate (a zip bomb is a
// 1009, after at most the limit plus one 16 KiB chunk of work).
//
// Thread safety: negotiation functions are pure; a stream is used by one thread at a time.

#ifndef GEV_WEBSOCKET_DEFLATE_H_
#define GEV_WEBSOCKET_DEFLATE_H_

#include <zlib.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "websocket/frame.h"
#include "websocket/message_reader.h"

namespace gev::websocket {

struct DeflateOptions {
  bool enabled = false;
  // Ask that neither side keeps its compression context between messages: less compression
  // for small similar messages, no zlib memory per idle connection. Offered (client) or
  // answered (server) whatever the peer offered.
  bool server_no_context_takeover = true;
  bool client_no_context_takeover = true;
  // The most window bits this side compresses with (9..15; zlib's raw deflate has no 8) and
  // lets the peer use.
  int server_max_window_bits = 15;
  int client_max_window_bits = 15;
  int level = 6;  // 1 (fast) .. 9 (small).
  // Messages shorter than this are sent uncompressed (RSV1 clear): compressing them costs more
  // than it saves.
  size_t min_size = 64;
};

// What both sides agreed, from the server's and the client's point of view alike.
struct DeflateAgreement {
  bool server_no_context_takeover = false;
  bool client_no_context_takeover = false;
  int server_max_window_bits = 15;
  int client_max_window_bits = 15;
};

// One extension offer of a Sec-WebSocket-Extensions value: "name; param; param=value".
struct ExtensionOffer {
  struct Param {
    std::string name;
    std::optional<std::string> value;  // Unquoted.
  };
  std::string name;
  std::vector<Param> params;
};

// ParseExtensions() — every offer in the fields' values, in order (RFC 6455, 9.1; quoted
// values allowed). False for a value that is not that grammar.
bool ParseExtensions(const std::vector<std::string_view>& values,
                     std::vector<ExtensionOffer>* offers);

// NegotiateDeflate() — the server's choice among the client's offers (its
// Sec-WebSocket-Extensions values): the first permessage-deflate offer it can accept, as
// RFC 7692 section 7 allows, or nullopt (none offered or acceptable, or deflate disabled).
// `*response` is the extension's response value. Malformed offers are declined, not errors.
std::optional<DeflateAgreement> NegotiateDeflate(const std::vector<std::string_view>& values,
                                                 const DeflateOptions& options,
                                                 std::string* response);

// DeflateOffer() — the client's offer for `options` ("permessage-deflate; ...").
std::string DeflateOffer(const DeflateOptions& options);
// AcceptDeflateResponse() — the client's check of the server's Sec-WebSocket-Extensions
// values: nullopt with `*agreement` unset when the server chose no extension; false when it
// answered something the offer did not allow (the client must fail the connection).
bool AcceptDeflateResponse(const std::vector<std::string_view>& values,
                           const DeflateOptions& options,
                           std::optional<DeflateAgreement>* agreement);

// Compresses messages for one side of a connection (its window and context takeover).
class Deflater {
 public:
  Deflater(const DeflateAgreement& agreement, Role self, int level);
  ~Deflater();
  Deflater(const Deflater&) = delete;
  Deflater& operator=(const Deflater&) = delete;
  // Deflater::Compress() — appends the compressed payload of `message` to `out` (without the
  // 00 00 FF FF tail, RFC 7692 7.2.1). False, with `out` as it was, when the message must go
  // uncompressed: zlib failed (out of memory), or the agreed window is 8 bits, which zlib's
  // raw deflate cannot keep to.
  bool Compress(std::string_view message, std::string* out);
  // Bytes of zlib state held now (zero between messages without context takeover).
  size_t StateBytes() const { return stream_ != nullptr ? state_bytes_ : 0; }

 private:
  bool Start();
  const int window_bits_;
  const bool keep_context_;
  const int level_;
  std::unique_ptr<z_stream> stream_;
  size_t state_bytes_ = 0;
};

// Inflates messages for one side of a connection; the MessageReader's inflater.
class Inflater : public MessageInflater {
 public:
  Inflater(const DeflateAgreement& agreement, Role self);
  ~Inflater() override;
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;
  Result Inflate(std::string_view compressed, bool last, size_t max_size,
                 std::string* out) override;
  size_t StateBytes() const { return stream_ != nullptr ? 44 * 1024 : 0; }

 private:
  bool Start();
  Result Run(const char* data, size_t size, size_t max_size, std::string* out);
  const bool keep_context_;
  // The last input ended exactly where a final block ended its deflate stream.
  bool stream_ended_ = false;
  // Final blocks in the message so far (see kMaxStreamEndsPerMessage).
  int stream_ends_in_message_ = 0;
  std::unique_ptr<z_stream> stream_;
};

}  // namespace gev::websocket

#endif  // GEV_WEBSOCKET_DEFLATE_H_

#include "websocket/deflate.h"

#include <algorithm>
#include <cstring>

#include "http/request.h"

namespace gev::websocket {
namespace {

constexpr std::string_view kName = "permessage-deflate";
constexpr char kTail[4] = {0x00, 0x00, static_cast<char>(0xFF), static_cast<char>(0xFF)};
constexpr size_t kChunk = 16 * 1024;
// The largest deflate window (windowBits 15): what a stream can refer back into.
constexpr uInt kMaxWindow = 32 * 1024;
// Deflate streams a message may end (final blocks) before it is taken for an attack.
constexpr int kMaxStreamEndsPerMessage = 4;

// The window-bits value grammar of RFC 7692 (8..15, no leading zero).
std::optional<int> WindowBits(const std::optional<std::string>& value) {
  if (!value.has_value()) return std::nullopt;
  const std::string& v = *value;
  if (v.size() == 1 && (v[0] == '8' || v[0] == '9')) return v[0] - '0';
  if (v.size() == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5') return 10 + (v[1] - '0');
  return std::nullopt;
}

bool IsTokenChar(char c) { return http::IsToken(std::string_view(&c, 1)); }

class ExtensionParser {
 public:
  explicit ExtensionParser(std::string_view text) : text_(text) {}

  bool Parse(std::vector<ExtensionOffer>* offers) {
    while (true) {
      SkipSpaces();
      if (AtEnd()) return true;
      if (Peek() == ',') {  // An empty list element.
        ++pos_;
        continue;
      }
      ExtensionOffer offer;
      if (!Token(&offer.name)) return false;
      SkipSpaces();
      while (!AtEnd() && Peek() == ';') {
        ++pos_;
        SkipSpaces();
        ExtensionOffer::Param param;
        if (!Token(&param.name)) return false;
        SkipSpaces();
        if (!AtEnd() && Peek() == '=') {
          ++pos_;
          SkipSpaces();
          std::string value;
          if (!AtEnd() && Peek() == '"') {
            if (!Quoted(&value)) return false;
          } else if (!Token(&value)) {
            return false;
          }
          param.value = std::move(value);
          SkipSpaces();
        }
        offer.params.push_back(std::move(param));
      }
      offers->push_back(std::move(offer));
      if (AtEnd()) return true;
      if (Peek() != ',') return false;
      ++pos_;
    }
  }

 private:
  bool AtEnd() const { return pos_ >= text_.size(); }
  char Peek() const { return text_[pos_]; }
  void SkipSpaces() {
    while (!AtEnd() && (Peek() == ' ' || Peek() == '\t')) ++pos_;
  }
  bool Token(std::string* out) {
    size_t start = pos_;
    while (!AtEnd() && IsTokenChar(Peek())) ++pos_;
    if (pos_ == start) return false;
    out->assign(text_.substr(start, pos_ - start));
    return true;
  }
  bool Quoted(std::string* out) {
    ++pos_;  // The opening quote.
    while (!AtEnd()) {
      char c = Peek();
      ++pos_;
      if (c == '"') return true;
      if (c == '\\') {
        if (AtEnd()) return false;
        c = Peek();
        ++pos_;
      }
      out->push_back(c);
    }
    return false;  // No closing quote.
  }

  std::string_view text_;
  size_t pos_ = 0;
};

// Checks the parameter names of one offer or response: known, each at most once.
const ExtensionOffer::Param* FindParam(const ExtensionOffer& offer, std::string_view name) {
  for (const ExtensionOffer::Param& param : offer.params) {
    if (param.name == name) return &param;
  }
  return nullptr;
}

bool KnownAndUnique(const ExtensionOffer& offer) {
  static constexpr std::string_view kParams[] = {
      "server_no_context_takeover", "client_no_context_takeover", "server_max_window_bits",
      "client_max_window_bits"};
  for (size_t i = 0; i < offer.params.size(); ++i) {
    const std::string& name = offer.params[i].name;
    if (std::find(std::begin(kParams), std::end(kParams), name) == std::end(kParams)) {
      return false;
    }
    for (size_t j = 0; j < i; ++j) {
      if (offer.params[j].name == name) return false;
    }
  }
  return true;
}

std::optional<DeflateAgreement> TryOffer(const ExtensionOffer& offer,
                                         const DeflateOptions& options, std::string* response) {
  if (!KnownAndUnique(offer)) return std::nullopt;
  const ExtensionOffer::Param* server_no_takeover = FindParam(offer, "server_no_context_takeover");
  const ExtensionOffer::Param* client_no_takeover = FindParam(offer, "client_no_context_takeover");
  const ExtensionOffer::Param* server_bits = FindParam(offer, "server_max_window_bits");
  const ExtensionOffer::Param* client_bits = FindParam(offer, "client_max_window_bits");
  if ((server_no_takeover != nullptr && server_no_takeover->value.has_value()) ||
      (client_no_takeover != nullptr && client_no_takeover->value.has_value())) {
    return std::nullopt;
  }
  DeflateAgreement agreement;
  int server_limit = std::clamp(options.server_max_window_bits, 9, 15);
  if (server_bits != nullptr) {
    std::optional<int> offered = WindowBits(server_bits->value);
    if (!offered.has_value() || *offered < 9) return std::nullopt;  // zlib has no raw 8.
    server_limit = std::min(server_limit, *offered);
  }
  agreement.server_max_window_bits = server_limit;
  if (client_bits != nullptr) {
    int client_limit = std::clamp(options.client_max_window_bits, 8, 15);
    if (client_bits->value.has_value()) {
      std::optional<int> offered = WindowBits(client_bits->value);
      if (!offered.has_value()) return std::nullopt;
      client_limit = std::min(client_limit, *offered);
    }
    agreement.client_max_window_bits = client_limit;
  }
  agreement.server_no_context_takeover =
      server_no_takeover != nullptr || options.server_no_context_takeover;
  agreement.client_no_context_takeover =
      client_no_takeover != nullptr || options.client_no_context_takeover;

  *response = std::string(kName);
  if (agreement.server_no_context_takeover) *response += "; server_no_context_takeover";
  if (agreement.client_no_context_takeover) *response += "; client_no_context_takeover";
  if (server_bits != nullptr || agreement.server_max_window_bits < 15) {
    *response += "; server_max_window_bits=" + std::to_string(agreement.server_max_window_bits);
  }
  if (client_bits != nullptr && agreement.client_max_window_bits < 15) {
    *response += "; client_max_window_bits=" + std::to_string(agreement.client_max_window_bits);
  }
  return agreement;
}

}  // namespace

bool ParseExtensions(const std::vector<std::string_view>& values,
                     std::vector<ExtensionOffer>* offers) {
  for (std::string_view value : values) {
    if (!ExtensionParser(value).Parse(offers)) return false;
  }
  return true;
}

std::optional<DeflateAgreement> NegotiateDeflate(const std::vector<std::string_view>& values,
                                                 const DeflateOptions& options,
                                                 std::string* response) {
  if (!options.enabled) return std::nullopt;
  std::vector<ExtensionOffer> offers;
  if (!ParseExtensions(values, &offers)) return std::nullopt;
  for (const ExtensionOffer& offer : offers) {
    if (offer.name != kName) continue;
    std::optional<DeflateAgreement> agreed = TryOffer(offer, options, response);
    if (agreed.has_value()) return agreed;
  }
  return std::nullopt;
}

std::string DeflateOffer(const DeflateOptions& options) {
  std::string offer(kName);
  if (options.server_no_context_takeover) offer += "; server_no_context_takeover";
  if (options.client_no_context_takeover) offer += "; client_no_context_takeover";
  int server_bits = std::clamp(options.server_max_window_bits, 9, 15);
  if (server_bits < 15) offer += "; server_max_window_bits=" + std::to_string(server_bits);
  int client_bits = std::clamp(options.client_max_window_bits, 9, 15);
  offer += "; client_max_window_bits";
  if (client_bits < 15) offer += "=" + std::to_string(client_bits);
  return offer;
}

bool AcceptDeflateResponse(const std::vector<std::string_view>& values,
                           const DeflateOptions& options,
                           std::optional<DeflateAgreement>* agreement) {
  agreement->reset();
  std::vector<ExtensionOffer> answers;
  if (!ParseExtensions(values, &answers)) return false;
  if (answers.empty()) return true;
  if (!options.enabled || answers.size() != 1 || answers[0].name != kName) return false;
  const ExtensionOffer& answer = answers[0];
  if (!KnownAndUnique(answer)) return false;
  DeflateAgreement agreed;
  const ExtensionOffer::Param* server_no_takeover =
      FindParam(answer, "server_no_context_takeover");
  const ExtensionOffer::Param* client_no_takeover =
      FindParam(answer, "client_no_context_takeover");
  if ((server_no_takeover != nullptr && server_no_takeover->value.has_value()) ||
      (client_no_takeover != nullptr && client_no_takeover->value.has_value())) {
    return false;
  }
  agreed.server_no_context_takeover = server_no_takeover != nullptr;
  if (options.server_no_context_takeover && !agreed.server_no_context_takeover) {
    return false;  // Asked for and not granted: RFC 7692 7.1.1.1 lets the client fail.
  }
  agreed.client_no_context_takeover =
      client_no_takeover != nullptr || options.client_no_context_takeover;
  if (const ExtensionOffer::Param* bits = FindParam(answer, "server_max_window_bits")) {
    std::optional<int> value = WindowBits(bits->value);
    int offered = std::clamp(options.server_max_window_bits, 9, 15);
    if (!value.has_value() || *value > offered) return false;
    agreed.server_max_window_bits = *value;
  }
  if (const ExtensionOffer::Param* bits = FindParam(answer, "client_max_window_bits")) {
    std::optional<int> value = WindowBits(bits->value);
    int offered = std::clamp(options.client_max_window_bits, 9, 15);
    if (!value.has_value() || *value > offered) return false;
    agreed.client_max_window_bits = *value;
  } else {
    agreed.client_max_window_bits = std::clamp(options.client_max_window_bits, 9, 15);
  }
  *agreement = agreed;
  return true;
}

Deflater::Deflater(const DeflateAgreement& agreement, Role self, int level)
    : window_bits_(self == Role::kServer ? agreement.server_max_window_bits
                                         : agreement.client_max_window_bits),
      keep_context_(self == Role::kServer ? !agreement.server_no_context_takeover
                                          : !agreement.client_no_context_takeover),
      level_(std::clamp(level, 1, 9)) {}

Deflater::~Deflater() {
  if (stream_ != nullptr) deflateEnd(stream_.get());
}

bool Deflater::Start() {
  if (window_bits_ < 9) return false;
  auto stream = std::make_unique<z_stream>();
  std::memset(stream.get(), 0, sizeof(z_stream));
  if (deflateInit2(stream.get(), level_, Z_DEFLATED, -window_bits_, 8, Z_DEFAULT_STRATEGY) !=
      Z_OK) {
    return false;
  }
  stream_ = std::move(stream);
  state_bytes_ = (size_t{1} << (window_bits_ + 2)) + (size_t{1} << (8 + 9));
  return true;
}

bool Deflater::Compress(std::string_view message, std::string* out) {
  // zlib counts in 32 bits; a message this large goes as it is (and meets the pending cap).
  if (message.size() > (size_t{1} << 31)) return false;
  if (stream_ == nullptr && !Start()) return false;
  if (message.empty()) {
    // An empty stored block's header byte (RFC 7692, 7.2.3.6). zlib would write nothing for a
    // flush with no input right after another flush, and the receiver's 00 00 FF FF alone is
    // no block at a byte boundary: its inflater would lose its place in the stream.
    out->push_back('\0');
    return true;
  }
  const size_t start = out->size();
  z_stream* stream = stream_.get();
  stream->next_in = reinterpret_cast<Bytef*>(const_cast<char*>(message.data()));
  stream->avail_in = static_cast<uInt>(message.size());
  size_t used = start;
  do {
    const size_t room = std::max(kChunk, deflateBound(stream, stream->avail_in) + 16);
    out->resize(used + room);
    stream->next_out = reinterpret_cast<Bytef*>(out->data() + used);
    stream->avail_out = static_cast<uInt>(room);
    int status = deflate(stream, Z_SYNC_FLUSH);
    used += room - stream->avail_out;
    if (status != Z_OK && status != Z_BUF_ERROR) {
      out->resize(start);
      deflateEnd(stream);  // The stream is in an unknown state: the next message starts over.
      stream_.reset();
      return false;
    }
  } while (stream->avail_in > 0 || stream->avail_out == 0);
  out->resize(used);
  // A sync flush ends with an empty stored block, 00 00 FF FF, which the receiver adds back.
  if (used - start >= 4 && std::memcmp(out->data() + used - 4, kTail, 4) == 0) {
    out->resize(used - 4);
  }
  if (!keep_context_) deflateReset(stream);
  return true;
}

Inflater::Inflater(const DeflateAgreement& agreement, Role self)
    : keep_context_(self == Role::kServer ? !agreement.client_no_context_takeover
                                          : !agreement.server_no_context_takeover) {}

Inflater::~Inflater() {
  if (stream_ != nullptr) inflateEnd(stream_.get());
}

bool Inflater::Start() {
  auto stream = std::make_unique<z_stream>();
  std::memset(stream.get(), 0, sizeof(z_stream));
  // The largest window inflates what any smaller one produced.
  if (inflateInit2(stream.get(), -15) != Z_OK) return false;
  stream_ = std::move(stream);
  return true;
}

MessageInflater::Result Inflater::Run(const char* data, size_t size, size_t max_size,
                                      std::string* out) {
  z_stream* stream = stream_.get();
  stream->next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data));
  stream->avail_in = static_cast<uInt>(size);
  size_t used = out->size();
  if (size > 0) stream_ended_ = false;
  while (true) {
    if (used > max_size) {
      out->resize(used);
      return kTooBig;
    }
    // At most one byte past the limit is made room for: enough to know it was passed.
    const size_t room = std::min(kChunk, max_size + 1 - used);
    out->resize(used + room);
    stream->next_out = reinterpret_cast<Bytef*>(out->data() + used);
    stream->avail_out = static_cast<uInt>(room);
    int status = inflate(stream, Z_SYNC_FLUSH);
    used += room - stream->avail_out;
    if (status == Z_STREAM_END) {
      // A final block (RFC 7692 7.2.3.4): what follows is a new deflate stream, which under
      // context takeover may still point back into this one's bytes, so the window is carried
      // across the reset. At the end of the input, the message's tail is not fed after it.
      // Senders end a message's stream once; a peer ending hundreds (an empty final block is
      // two bytes, and each end costs a reset and two window copies) is refused.
      if (++stream_ends_in_message_ > kMaxStreamEndsPerMessage) {
        out->resize(used);
        return kCorrupt;
      }
      stream_ended_ = stream->avail_in == 0;
      if (keep_context_) {
        std::unique_ptr<Bytef[]> window(new Bytef[kMaxWindow]);
        uInt window_size = kMaxWindow;
        if (inflateGetDictionary(stream, window.get(), &window_size) != Z_OK ||
            inflateReset(stream) != Z_OK ||
            (window_size > 0 && inflateSetDictionary(stream, window.get(), window_size) != Z_OK)) {
          out->resize(used);
          return kCorrupt;
        }
      } else {
        inflateReset(stream);
      }
    } else if (status == Z_BUF_ERROR) {
      if (stream->avail_in == 0 && stream->avail_out != 0) break;  // Waits for more input.
      if (stream->avail_out != 0) {
        out->resize(used);
        return kCorrupt;
      }
    } else if (status != Z_OK) {
      out->resize(used);
      return kCorrupt;
    }
    if (stream->avail_in == 0 && stream->avail_out != 0) break;
  }
  out->resize(used);
  return used > max_size ? kTooBig : kOk;
}

MessageInflater::Result Inflater::Inflate(std::string_view compressed, bool last,
                                          size_t max_size, std::string* out) {
  if (stream_ == nullptr && !Start()) return kCorrupt;
  Result result = Run(compressed.data(), compressed.size(), max_size, out);
  // The tail (00 00 FF FF) ends a stream the sender flushed; one that ended with a final block
  // needs none, and a new stream would take the four bytes for a stored block's header.
  if (result == kOk && last && !stream_ended_) {
    result = Run(kTail, sizeof(kTail), max_size, out);
  }
  if (last || result != kOk) {
    stream_ended_ = false;
    stream_ends_in_message_ = 0;
  }
  if (result != kOk || (last && !keep_context_)) {
    // Without context takeover nothing is kept between messages; after a failure the
    // connection is ending.
    inflateEnd(stream_.get());
    stream_.reset();
  }
  return result;
}

}  // namespace gev::websocket

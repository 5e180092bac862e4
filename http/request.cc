#include "http/request.h"

#include <charconv>

namespace gev::http {
namespace {

// tchar of RFC 9110: what a method and a field name are made of.
bool IsTokenChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+': case '-':
    case '.': case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

// Field values: visible characters, spaces, tabs and obs-text; no other control bytes.
bool IsFieldValue(std::string_view s) {
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7f) return false;
  }
  return true;
}

// Does the comma-separated list `value` hold `token` (case-insensitive)?
bool ListHas(std::string_view value, std::string_view token) {
  return !ForEachListItem(value, [token](std::string_view item) {
    return !EqualsIgnoreCase(item, token);
  });
}

HeadStatus ParseRequestLine(std::string_view line, Request* request) {
  size_t first_space = line.find(' ');
  if (first_space == std::string_view::npos) return HeadStatus::kBadRequest;
  size_t second_space = line.find(' ', first_space + 1);
  if (second_space == std::string_view::npos) return HeadStatus::kBadRequest;
  request->method = line.substr(0, first_space);
  request->target = line.substr(first_space + 1, second_space - first_space - 1);
  std::string_view version = line.substr(second_space + 1);
  if (!IsToken(request->method) || request->target.empty()) return HeadStatus::kBadRequest;
  for (char c : request->target) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) return HeadStatus::kBadRequest;
  }
  // HTTP-version = "HTTP/" DIGIT "." DIGIT
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' ||
      version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9') {
    return HeadStatus::kBadRequest;
  }
  if (version[5] != '1') {
    return version[5] == '0' ? HeadStatus::kBadRequest : HeadStatus::kVersionNotSupported;
  }
  request->minor_version = version[7] - '0';
  request->keep_alive = request->minor_version >= 1;
  return HeadStatus::kOk;
}

// The line of `head` that starts at `*pos`, without its LF and a CR before it; advances `*pos`
// past the LF. False when no LF follows.
bool NextLine(std::string_view head, size_t* pos, std::string_view* line) {
  size_t lf = head.find('\n', *pos);
  if (lf == std::string_view::npos) return false;
  *line = head.substr(*pos, lf - *pos);
  if (!line->empty() && line->back() == '\r') line->remove_suffix(1);
  *pos = lf + 1;
  return true;
}

}  // namespace

bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!IsTokenChar(c)) return false;
  }
  return true;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

std::string_view TrimSpaces(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

namespace {

template <typename Fields>
std::optional<std::string_view> FindIn(const Fields& fields, std::string_view name) {
  for (const Field& field : fields) {
    if (EqualsIgnoreCase(field.name, name)) return field.value;
  }
  return std::nullopt;
}

template <typename Fields>
bool HasTokenIn(const Fields& fields, std::string_view name, std::string_view token) {
  for (const Field& field : fields) {
    if (EqualsIgnoreCase(field.name, name) && ListHas(field.value, token)) return true;
  }
  return false;
}

// The field lines of a head from `*pos` through its blank line, into `fields`.
HeadStatus ParseFields(std::string_view head, size_t* pos,
                       absl::InlinedVector<Field, 16>* fields) {
  std::string_view line;
  while (true) {
    if (!NextLine(head, pos, &line)) return HeadStatus::kBadRequest;
    if (line.empty()) break;  // The blank line: the head ends here.
    // No obs-fold (a line that starts with a space continues nothing here), no bare CR or LF.
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) return HeadStatus::kBadRequest;
    std::string_view name = line.substr(0, colon);
    std::string_view value = TrimSpaces(line.substr(colon + 1));
    if (!IsToken(name) || !IsFieldValue(value)) return HeadStatus::kBadRequest;
    if (fields->size() == kMaxFields) return HeadStatus::kHeadTooLarge;
    fields->push_back(Field{name, value});
  }
  if (*pos != head.size()) return HeadStatus::kBadRequest;  // A blank line inside the head.
  return HeadStatus::kOk;
}

}  // namespace

std::optional<std::string_view> Request::Find(std::string_view name) const {
  return FindIn(fields, name);
}

std::optional<std::string_view> Response::Find(std::string_view name) const {
  return FindIn(fields, name);
}

bool Response::HasToken(std::string_view name, std::string_view token) const {
  return HasTokenIn(fields, name, token);
}

size_t Request::Count(std::string_view name) const {
  size_t count = 0;
  for (const Field& field : fields) count += EqualsIgnoreCase(field.name, name) ? 1 : 0;
  return count;
}

bool Request::HasToken(std::string_view name, std::string_view token) const {
  return HasTokenIn(fields, name, token);
}

std::string_view StatusLine(HeadStatus status) {
  switch (status) {
    case HeadStatus::kOk: return "200 OK";
    case HeadStatus::kBadRequest: return "400 Bad Request";
    case HeadStatus::kHeadTooLarge: return "431 Request Header Fields Too Large";
    case HeadStatus::kBodyTooLarge: return "413 Content Too Large";
    case HeadStatus::kNotImplemented: return "501 Not Implemented";
    case HeadStatus::kVersionNotSupported: return "505 HTTP Version Not Supported";
  }
  return "500 Internal Server Error";
}

size_t HeadLength(std::string_view bytes) {
  // Lines end with CRLF, or (RFC 9112, 2.2, as nginx allows) a bare LF: the head ends at the
  // first LF that follows an LF with at most a CR between them.
  for (size_t lf = bytes.find('\n'); lf != std::string_view::npos; lf = bytes.find('\n', lf + 1)) {
    if (lf + 1 < bytes.size() && bytes[lf + 1] == '\n') return lf + 2;
    if (lf + 2 < bytes.size() && bytes[lf + 1] == '\r' && bytes[lf + 2] == '\n') return lf + 3;
  }
  return std::string_view::npos;
}

HeadStatus ParseHead(std::string_view head, Request* request, uint64_t max_body_bytes) {
  if (head.size() > kMaxHeadBytes) return HeadStatus::kHeadTooLarge;
  request->method = {};
  request->target = {};
  request->minor_version = 1;
  request->keep_alive = true;
  request->content_length = 0;
  request->fields.clear();  // Keeps what it had allocated: a Request reused costs nothing.
  size_t pos = 0;
  std::string_view line;
  // Empty lines before the request line are skipped (RFC 9112, 2.2).
  do {
    if (!NextLine(head, &pos, &line)) return HeadStatus::kBadRequest;
  } while (line.empty());
  HeadStatus status = ParseRequestLine(line, request);
  if (status != HeadStatus::kOk) return status;
  bool seen_length = false, close = false, keep_alive = false;
  int hosts = 0;
  while (true) {
    if (!NextLine(head, &pos, &line)) return HeadStatus::kBadRequest;
    if (line.empty()) break;  // The blank line: the head ends here.
    // No obs-fold (a line that starts with a space continues nothing here), no bare CR or LF.
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) return HeadStatus::kBadRequest;
    std::string_view name = line.substr(0, colon);
    std::string_view value = TrimSpaces(line.substr(colon + 1));
    if (!IsToken(name) || !IsFieldValue(value)) return HeadStatus::kBadRequest;
    if (request->fields.size() == kMaxFields) return HeadStatus::kHeadTooLarge;
    request->fields.push_back(Field{name, value});
    if (EqualsIgnoreCase(name, "content-length")) {
      uint64_t length = 0;
      auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), length);
      if (value.empty() || error != std::errc() || end != value.data() + value.size() ||
          (seen_length && length != request->content_length)) {
        return HeadStatus::kBadRequest;  // Not digits, or two lengths that disagree.
      }
      seen_length = true;
      request->content_length = length;
    } else if (EqualsIgnoreCase(name, "host")) {
      ++hosts;
    } else if (EqualsIgnoreCase(name, "transfer-encoding")) {
      return HeadStatus::kNotImplemented;
    } else if (EqualsIgnoreCase(name, "connection")) {
      close |= ListHas(value, "close");
      keep_alive |= ListHas(value, "keep-alive");
    }
  }
  if (pos != head.size()) return HeadStatus::kBadRequest;  // A blank line inside the head.
  // RFC 9112, 3.2: an HTTP/1.1 request without a Host field, or with more than one, is a 400.
  if (hosts > 1 || (request->minor_version >= 1 && hosts == 0)) return HeadStatus::kBadRequest;
  if (close) {
    request->keep_alive = false;
  } else if (keep_alive) {
    request->keep_alive = true;
  }
  if (request->content_length > max_body_bytes) return HeadStatus::kBodyTooLarge;
  return HeadStatus::kOk;
}

HeadStatus ParseResponseHead(std::string_view head, Response* response) {
  if (head.size() > kMaxHeadBytes) return HeadStatus::kHeadTooLarge;
  response->fields.clear();
  size_t pos = 0;
  std::string_view line;
  if (!NextLine(head, &pos, &line)) return HeadStatus::kBadRequest;
  // status-line = HTTP-version SP status-code SP [ reason-phrase ]
  if (line.size() < 12 || line.substr(0, 5) != "HTTP/" || line[6] != '.' || line[5] != '1' ||
      line[7] < '0' || line[7] > '9' || line[8] != ' ' || (line.size() > 12 && line[12] != ' ')) {
    return HeadStatus::kBadRequest;
  }
  int status = 0;
  for (size_t i = 9; i < 12; ++i) {
    if (line[i] < '0' || line[i] > '9') return HeadStatus::kBadRequest;
    status = status * 10 + (line[i] - '0');
  }
  if (status < 100) return HeadStatus::kBadRequest;
  response->minor_version = line[7] - '0';
  response->status = status;
  response->reason = line.size() > 13 ? line.substr(13) : std::string_view();
  return ParseFields(head, &pos, &response->fields);
}

}  // namespace gev::http

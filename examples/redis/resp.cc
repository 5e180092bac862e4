#include "examples/redis/resp.h"

#include <charconv>
#include <climits>
#include <cstring>

namespace gev::redis {
namespace {

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

ParseResult Error(std::string text) {
  ParseResult result;
  result.outcome = ParseResult::Outcome::kError;
  result.error = std::move(text);
  return result;
}

ParseResult Incomplete(size_t needed) {
  ParseResult result;
  result.outcome = ParseResult::Outcome::kIncomplete;
  result.needed = needed;
  return result;
}

// sdssplitargs over `line` (which, as the C string Redis splits, ends at its first NUL): the
// arguments, unescaped, appended to `*storage` (reserved to hold them all) and viewed in
// `*args`. False for unbalanced quotes.
bool SplitInlineArgs(std::string_view line, std::vector<std::string_view>* args,
                     std::string* storage) {
  size_t nul = line.find('\0');
  if (nul != std::string_view::npos) line = line.substr(0, nul);
  storage->clear();
  storage->reserve(line.size());
  size_t p = 0;
  auto at = [&](size_t i) { return i < line.size() ? line[i] : '\0'; };
  while (true) {
    while (p < line.size() && IsSpace(line[p])) ++p;
    if (p >= line.size()) return true;
    size_t start = storage->size();
    bool in_double = false, in_single = false, done = false;
    while (!done) {
      char c = at(p);
      if (in_double) {
        if (c == '\\' && at(p + 1) == 'x' && HexValue(at(p + 2)) >= 0 && HexValue(at(p + 3)) >= 0) {
          storage->push_back(static_cast<char>(HexValue(at(p + 2)) * 16 + HexValue(at(p + 3))));
          p += 3;
        } else if (c == '\\' && at(p + 1) != '\0') {
          ++p;
          switch (at(p)) {
            case 'n': storage->push_back('\n'); break;
            case 'r': storage->push_back('\r'); break;
            case 't': storage->push_back('\t'); break;
            case 'b': storage->push_back('\b'); break;
            case 'a': storage->push_back('\a'); break;
            default: storage->push_back(at(p)); break;
          }
        } else if (c == '"') {
          // A closing quote must end the argument.
          if (at(p + 1) != '\0' && !IsSpace(at(p + 1))) return false;
          done = true;
        } else if (c == '\0') {
          return false;  // Unterminated.
        } else {
          storage->push_back(c);
        }
      } else if (in_single) {
        if (c == '\\' && at(p + 1) == '\'') {
          ++p;
          storage->push_back('\'');
        } else if (c == '\'') {
          if (at(p + 1) != '\0' && !IsSpace(at(p + 1))) return false;
          done = true;
        } else if (c == '\0') {
          return false;
        } else {
          storage->push_back(c);
        }
      } else {
        switch (c) {
          case ' ': case '\n': case '\r': case '\t': case '\0': done = true; break;
          case '"': in_double = true; break;
          case '\'': in_single = true; break;
          default: storage->push_back(c); break;
        }
      }
      if (at(p) != '\0') ++p;
    }
    args->push_back(std::string_view(storage->data() + start, storage->size() - start));
  }
}

// Redis finds line ends with strchr on its query buffer, which stops at a NUL: a line end
// after a NUL is not seen (the request waits, and then is too big).
size_t FindBeforeNul(std::string_view input, char c, size_t from) {
  size_t found = input.find(c, from);
  // Only the bytes before it are searched for a NUL: the whole rest of the input, once per
  // line of a pipelined stream, would make parsing quadratic.
  size_t end = found == std::string_view::npos ? input.size() : found;
  if (from < end && std::memchr(input.data() + from, '\0', end - from) != nullptr) {
    return std::string_view::npos;
  }
  return found;
}

ParseResult ParseInline(std::string_view input, std::vector<std::string_view>* args,
                        std::string* unquoted) {
  size_t newline = FindBeforeNul(input, '\n', 0);
  // Too big whether or not its end has arrived yet: the same request is refused however the
  // reads cut it (redis-server reads 16 KiB at a time and refuses once 64 KiB wait without a
  // line end; one larger read must not let a longer line through).
  if (newline == std::string_view::npos ? input.size() > kMaxInlineLength
                                        : newline > kMaxInlineLength) {
    return Error("Protocol error: too big inline request");
  }
  if (newline == std::string_view::npos) return Incomplete(input.size() + 1);
  std::string_view line = input.substr(0, newline);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (!SplitInlineArgs(line, args, unquoted)) {
    return Error("Protocol error: unbalanced quotes in request");
  }
  ParseResult result;
  result.outcome = ParseResult::Outcome::kCommand;
  result.consumed = newline + 1;
  return result;
}

}  // namespace

std::optional<int64_t> ParseInt64(std::string_view text) {
  // string2ll: at most 20 characters, "0" alone, otherwise a nonzero first digit.
  if (text.empty() || text.size() >= 21) return std::nullopt;
  if (text == "0") return 0;
  size_t i = text[0] == '-' ? 1 : 0;
  if (i == text.size() || text[i] < '1' || text[i] > '9') return std::nullopt;
  for (size_t j = i; j < text.size(); ++j) {
    if (text[j] < '0' || text[j] > '9') return std::nullopt;
  }
  int64_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;  // Range.
  return value;
}

ParseResult ParseCommand(std::string_view input, std::vector<std::string_view>* args,
                         std::string* unquoted, MultibulkProgress* progress) {
  args->clear();
  if (input.empty()) return Incomplete(1);
  if (input[0] != '*') return ParseInline(input, args, unquoted);
  ParseResult command;
  command.outcome = ParseResult::Outcome::kCommand;
  if (!progress->active) {
    // A multibulk: "*<count>\r\n" then <count> times "$<length>\r\n<bytes>\r\n". As Redis
    // does, each line is taken once its '\r' and one byte after it have arrived.
    size_t count_end = FindBeforeNul(input, '\r', 0);
    if (count_end == std::string_view::npos) {
      if (input.size() > kMaxInlineLength) {
        return Error("Protocol error: too big mbulk count string");
      }
      return Incomplete(input.size() + 1);
    }
    if (count_end + 1 >= input.size()) return Incomplete(count_end + 2);
    std::optional<int64_t> count = ParseInt64(input.substr(1, count_end - 1));
    if (!count || *count > INT_MAX) return Error("Protocol error: invalid multibulk length");
    if (*count <= 0) {  // "*0" and "*-1" are skipped.
      command.consumed = count_end + 2;
      return command;
    }
    progress->active = true;
    progress->count = *count;
    progress->resume = count_end + 2;
  }
  if (progress->resume > input.size()) {  // Not the command it belongs to: start over.
    progress->Reset();
    return ParseCommand(input, args, unquoted, progress);
  }
  size_t pos = progress->resume;
  while (static_cast<int64_t>(progress->spans.size()) < progress->count) {
    size_t line_end = FindBeforeNul(input, '\r', pos);
    if (line_end == std::string_view::npos) {
      if (input.size() - pos > kMaxInlineLength) {
        progress->Reset();
        return Error("Protocol error: too big bulk count string");
      }
      return Incomplete(input.size() + 1);
    }
    if (line_end + 1 >= input.size()) return Incomplete(line_end + 2);
    if (input[pos] != '$') {
      progress->Reset();
      return Error(std::string("Protocol error: expected '$', got '") + input[pos] + "'");
    }
    std::optional<int64_t> length = ParseInt64(input.substr(pos + 1, line_end - pos - 1));
    if (!length || *length < 0 || *length > kMaxBulkLength) {
      progress->Reset();
      return Error("Protocol error: invalid bulk length");
    }
    pos = line_end + 2;
    size_t bulk = static_cast<size_t>(*length);
    // The bulk and the two bytes after it (Redis skips them without looking).
    if (input.size() - pos < bulk + 2) return Incomplete(pos + bulk + 2);
    // Offsets fit 32 bits: a connection's input is at most 2 GiB (RingBuffer::kMaxLimit).
    progress->spans.emplace_back(static_cast<uint32_t>(pos), static_cast<uint32_t>(bulk));
    pos += bulk + 2;
    progress->resume = pos;
  }
  args->reserve(progress->spans.size());
  for (auto [offset, length] : progress->spans) args->push_back(input.substr(offset, length));
  progress->Reset();
  command.consumed = pos;
  return command;
}

namespace {

void AppendDecimal(std::string* out, int64_t value) {
  char digits[24];
  auto [end, error] = std::to_chars(digits, digits + sizeof(digits), value);
  (void)error;  // 24 characters hold every int64.
  out->append(digits, static_cast<size_t>(end - digits));
}

// A type marker, a decimal, CRLF: the head of integers, bulks and arrays.
void AppendHead(std::string* out, char marker, int64_t value) {
  out->push_back(marker);
  AppendDecimal(out, value);
  out->append("\r\n", 2);
}

}  // namespace

void AppendSimple(std::string* out, std::string_view text) {
  out->push_back('+');
  out->append(text.data(), text.size());
  out->append("\r\n", 2);
}

void AppendError(std::string* out, std::string_view text) {
  size_t start = out->size();
  out->push_back('-');
  out->append(text.data(), text.size());
  // An error is one line: Redis turns newlines in it into spaces.
  for (size_t i = start; i < out->size(); ++i) {
    if ((*out)[i] == '\r' || (*out)[i] == '\n') (*out)[i] = ' ';
  }
  out->append("\r\n", 2);
}

void AppendInteger(std::string* out, int64_t value) { AppendHead(out, ':', value); }

void AppendBulk(std::string* out, std::string_view bytes) {
  AppendHead(out, '$', static_cast<int64_t>(bytes.size()));
  out->append(bytes.data(), bytes.size());
  out->append("\r\n", 2);
}

void AppendNull(std::string* out) { out->append("$-1\r\n", 5); }

void AppendArrayHeader(std::string* out, size_t n) {
  AppendHead(out, '*', static_cast<int64_t>(n));
}

}  // namespace gev::redis

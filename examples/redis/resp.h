// -----------------------------------------------------------------------------
// File: examples/redis/resp.h
// -----------------------------------------------------------------------------
//
// RESP2, as redis-server 7 reads and writes it: `ParseCommand` takes one command off the front
// of a contiguous view of a connection's input (a multibulk array of bulk strings, or an inline
// line split as redis-cli's sdssplitargs splits it), and the Append* functions write replies.
// The parser's limits and error texts are Redis's, so a client sees the same answers.
//
//   std::vector<std::string_view> args;
//   gev::redis::ParseResult parsed =
//       gev::redis::ParseCommand(input, &args, &unquoted, &progress);  // one per connection
//   switch (parsed.outcome) { ... }   // kCommand: args (views into input or unquoted) ...
//
// Thread safety: functions of their arguments only.

#ifndef GEV_EXAMPLES_REDIS_RESP_H_
#define GEV_EXAMPLES_REDIS_RESP_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gev::redis {

// Redis's limits: an inline line or a count line longer than this without its newline is a
// protocol error; a bulk string may be at most kMaxBulkLength bytes.
inline constexpr size_t kMaxInlineLength = 64 * 1024;
inline constexpr int64_t kMaxBulkLength = 512 * 1024 * 1024;

struct ParseResult {
  enum class Outcome {
    kCommand,     // `consumed` bytes were one command; `args` holds it (empty: nothing to run).
    kIncomplete,  // More bytes are needed: at least `needed` in all, from the same start.
    kError,       // A protocol error; `error` is Redis's text. The connection ends after it.
  };
  Outcome outcome = Outcome::kIncomplete;
  size_t consumed = 0;
  size_t needed = 0;
  std::string error;
};

// How far ParseCommand got into a multibulk command that was not whole yet: the next call,
// given the same command at the front of its input with more bytes after, goes on from there
// instead of parsing the arguments again (a command of a million arguments arriving in a
// thousand reads is parsed once, as Redis parses it). One per connection.
struct MultibulkProgress {
  bool active = false;
  int64_t count = 0;     // Arguments the command has.
  size_t resume = 0;     // Where the next argument's "$<length>" line starts.
  // Offset and length of each argument parsed so far, from the command's start.
  std::vector<std::pair<uint32_t, uint32_t>> spans;

  void Reset() {
    active = false;
    count = 0;
    resume = 0;
    spans.clear();
    if (spans.capacity() > 1024) spans.shrink_to_fit();
  }
};

// ParseCommand() — one command from the front of `input`. Arguments are views into `input`,
// except an inline command's quoted ones, which are unescaped into `*unquoted` (cleared first;
// its storage must not move while the views are used, so it is reserved for the line).
// `progress` carries a multibulk command's parsing from one call to the next.
ParseResult ParseCommand(std::string_view input, std::vector<std::string_view>* args,
                         std::string* unquoted, MultibulkProgress* progress);

// Redis's string2ll: a decimal int64 with no sign but '-', no spaces, no leading zeros, no
// overflow; nullopt otherwise.
std::optional<int64_t> ParseInt64(std::string_view text);

void AppendSimple(std::string* out, std::string_view text);  // +text
void AppendError(std::string* out, std::string_view text);   // -text (newlines become spaces)
void AppendInteger(std::string* out, int64_t value);         // :value
void AppendBulk(std::string* out, std::string_view bytes);   // $n bytes
void AppendNull(std::string* out);                           // $-1
void AppendArrayHeader(std::string* out, size_t n);          // *n

}  // namespace gev::redis

#endif  // GEV_EXAMPLES_REDIS_RESP_H_

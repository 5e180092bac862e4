// -----------------------------------------------------------------------------
// File: eventloop/log.h
// -----------------------------------------------------------------------------
//
// Where the library reports what goes wrong without a caller to return it to: a failed
// epoll_ctl on a connection (which is then closed with that reason), a listener that could not
// start, a spare descriptor that could not be taken back. A process-wide sink; by default one
// line on stderr, "gev <severity>: <message>".
//
//   gev::SetLogSink([](gev::LogSeverity severity, std::string_view message) {
//     my_logger.Write(severity == gev::LogSeverity::kError ? ERROR : WARNING, message);
//   });
//   gev::SetLogSink(nullptr);  // back to stderr
//
// Thread safety: SetLogSink and Log are thread-safe; the sink is called on whatever thread
// logs (often a loop thread), possibly on several at once, and must not block for long.

#ifndef GEV_EVENTLOOP_LOG_H_
#define GEV_EVENTLOOP_LOG_H_

#if __cplusplus < 201703L
#error "gev needs C++17: compile with -std=c++17 (with Bazel: build --cxxopt=-std=c++17 in .bazelrc)"
#endif

#include <functional>
#include <string_view>

namespace gev {

enum class LogSeverity { kInfo, kWarning, kError };

using LogSink = std::function<void(LogSeverity severity, std::string_view message)>;

// SetLogSink() — replaces the process's sink; null restores the default (stderr). Thread-safe.
void SetLogSink(LogSink sink);

// Log() — hands one message to the sink. Thread-safe.
void Log(LogSeverity severity, std::string_view message);

// "info", "warning" or "error".
const char* LogSeverityName(LogSeverity severity);

}  // namespace gev

#endif  // GEV_EVENTLOOP_LOG_H_

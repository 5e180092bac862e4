#include "eventloop/log.h"

#include <cstdio>
#include <memory>
#include <mutex>
#include <utility>

namespace gev {
namespace {

struct SinkSlot {
  std::mutex mutex;
  std::shared_ptr<const LogSink> sink;  // Guarded by mutex; null: stderr.
};

SinkSlot& Slot() {
  static SinkSlot* slot = new SinkSlot;  // Never destroyed: loops may log during exit.
  return *slot;
}

}  // namespace

const char* LogSeverityName(LogSeverity severity) {
  switch (severity) {
    case LogSeverity::kInfo:
      return "info";
    case LogSeverity::kWarning:
      return "warning";
    case LogSeverity::kError:
      return "error";
  }
  return "?";
}

void SetLogSink(LogSink sink) {
  auto fresh = sink ? std::make_shared<const LogSink>(std::move(sink)) : nullptr;
  std::shared_ptr<const LogSink> previous;  // Destroyed unlocked.
  std::lock_guard<std::mutex> lock(Slot().mutex);
  previous = std::exchange(Slot().sink, std::move(fresh));
}

void Log(LogSeverity severity, std::string_view message) {
  std::shared_ptr<const LogSink> sink;
  {
    std::lock_guard<std::mutex> lock(Slot().mutex);
    sink = Slot().sink;
  }
  if (sink) {
    (*sink)(severity, message);
    return;
  }
  std::fprintf(stderr, "gev %s: %.*s\n", LogSeverityName(severity),
               static_cast<int>(message.size()), message.data());
}

}  // namespace gev

#include "eventloop/log.h"

#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace gev {
namespace {

TEST(LogTest, TheSinkSeesEveryMessageUntilItIsReplaced) {
  std::vector<std::pair<LogSeverity, std::string>> seen;
  SetLogSink([&](LogSeverity severity, std::string_view message) {
    seen.emplace_back(severity, std::string(message));
  });
  Log(LogSeverity::kError, "listen failed");
  std::thread other([] { Log(LogSeverity::kWarning, "from a loop thread"); });
  other.join();
  SetLogSink(nullptr);
  Log(LogSeverity::kInfo, "to stderr, not to the old sink");
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].first, LogSeverity::kError);
  EXPECT_EQ(seen[0].second, "listen failed");
  EXPECT_EQ(seen[1].second, "from a loop thread");
  EXPECT_STREQ(LogSeverityName(LogSeverity::kWarning), "warning");
}

}  // namespace
}  // namespace gev

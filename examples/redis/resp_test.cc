#include "examples/redis/resp.h"

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "examples/redis/commands.h"
#include "gtest/gtest.h"

namespace gev::redis {
namespace {

using Outcome = ParseResult::Outcome;

TEST(RespTest, MultibulkCommandsParseWholeAndWaitWhenSplit) {
  const std::string command = "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nva\r\nl\r\n";
  std::vector<std::string_view> args;
  std::string unquoted;
  MultibulkProgress progress;
  const std::string with_more = command + "*1\r\n";
  ParseResult whole = ParseCommand(with_more, &args, &unquoted, &progress);
  ASSERT_EQ(whole.outcome, Outcome::kCommand);
  EXPECT_EQ(whole.consumed, command.size());
  EXPECT_EQ(args, (std::vector<std::string_view>{"SET", "key", "va\r\nl"}));
  for (size_t cut = 0; cut < command.size(); ++cut) {
    ParseResult part = ParseCommand(std::string_view(command).substr(0, cut), &args, &unquoted, &progress);
    EXPECT_EQ(part.outcome, Outcome::kIncomplete) << cut;
    EXPECT_GT(part.needed, cut);
    EXPECT_LE(part.needed, command.size());
  }
}

TEST(RespTest, InlineCommandsSplitAsRedisDoes) {
  std::vector<std::string_view> args;
  std::string unquoted;
  MultibulkProgress progress;
  ParseResult parsed =
      ParseCommand("set \"a b\\x41\\n\" 'c\\'d'  e\r\nrest", &args, &unquoted, &progress);
  ASSERT_EQ(parsed.outcome, Outcome::kCommand);
  EXPECT_EQ(args, (std::vector<std::string_view>{"set", "a bA\n", "c'd", "e"}));
  EXPECT_EQ(parsed.consumed, std::string_view("set \"a b\\x41\\n\" 'c\\'d'  e\r\n").size());
  EXPECT_EQ(ParseCommand("\r\n", &args, &unquoted, &progress).outcome, Outcome::kCommand);
  EXPECT_TRUE(args.empty());
  EXPECT_EQ(ParseCommand("get \"abc\r\n", &args, &unquoted, &progress).error,
            "Protocol error: unbalanced quotes in request");
  EXPECT_EQ(ParseCommand("get \"a\"b\r\n", &args, &unquoted, &progress).outcome, Outcome::kError);
  EXPECT_EQ(ParseCommand("ping", &args, &unquoted, &progress).outcome, Outcome::kIncomplete);
  EXPECT_EQ(ParseCommand(std::string(kMaxInlineLength + 1, 'a'), &args, &unquoted, &progress).error,
            "Protocol error: too big inline request");
  // Whole in one read, line end and all: still too big (a 16 KiB read at a time would have
  // refused it before its end came).
  EXPECT_EQ(ParseCommand("echo " + std::string(kMaxInlineLength, 'a') + "\r\n", &args, &unquoted,
                         &progress)
                .error,
            "Protocol error: too big inline request");
  std::string longest = "echo " + std::string(kMaxInlineLength - 6, 'a') + "\r\n";  // 64 KiB.
  EXPECT_EQ(ParseCommand(longest, &args, &unquoted, &progress).outcome, Outcome::kCommand);
}

TEST(RespTest, ProtocolErrorsCarryRedisText) {
  std::vector<std::string_view> args;
  std::string unquoted;
  MultibulkProgress progress;
  EXPECT_EQ(ParseCommand("*abc\r\n", &args, &unquoted, &progress).error,
            "Protocol error: invalid multibulk length");
  EXPECT_EQ(ParseCommand("*2\r\n$3\r\nGET\r\n+x\r\n", &args, &unquoted, &progress).error,
            "Protocol error: expected '$', got '+'");
  EXPECT_EQ(ParseCommand("*1\r\n$-1\r\n", &args, &unquoted, &progress).error,
            "Protocol error: invalid bulk length");
  EXPECT_EQ(ParseCommand("*1\r\n$600000000\r\n", &args, &unquoted, &progress).error,
            "Protocol error: invalid bulk length");
  EXPECT_EQ(ParseCommand("*0\r\n", &args, &unquoted, &progress).outcome, Outcome::kCommand);
  EXPECT_TRUE(args.empty());
}

TEST(RespTest, AMultibulkArrivingInPiecesIsParsedOnce) {
  const std::string command = "*3\r\n$3\r\nDEL\r\n$1\r\na\r\n$2\r\nbc\r\n";
  std::vector<std::string_view> args;
  std::string unquoted;
  MultibulkProgress progress;
  // Two arguments whole, the third not yet.
  ParseResult part = ParseCommand(std::string_view(command).substr(0, 21), &args, &unquoted,
                                  &progress);
  ASSERT_EQ(part.outcome, ParseResult::Outcome::kIncomplete);
  EXPECT_TRUE(progress.active);
  EXPECT_EQ(progress.spans.size(), 2u);  // Kept: the next call starts at the third.
  ParseResult whole = ParseCommand(command, &args, &unquoted, &progress);
  ASSERT_EQ(whole.outcome, ParseResult::Outcome::kCommand);
  EXPECT_EQ(args, (std::vector<std::string_view>{"DEL", "a", "bc"}));
  EXPECT_FALSE(progress.active);
  EXPECT_TRUE(progress.spans.empty());
}

TEST(RespTest, ALineEndAfterANulIsNotSeenAsRedisDoesNot) {
  std::vector<std::string_view> args;
  std::string unquoted;
  MultibulkProgress progress;
  EXPECT_EQ(ParseCommand(std::string_view("PING\0\r\n", 7), &args, &unquoted, &progress).outcome,
            ParseResult::Outcome::kIncomplete);
  EXPECT_EQ(ParseCommand(std::string_view("*1\0\r\n", 5), &args, &unquoted, &progress).outcome,
            ParseResult::Outcome::kIncomplete);
}

TEST(RespTest, Int64ParsingIsRedisStrict) {
  EXPECT_EQ(ParseInt64("0"), 0);
  EXPECT_EQ(ParseInt64("-12"), -12);
  EXPECT_EQ(ParseInt64("9223372036854775807"), INT64_MAX);
  EXPECT_EQ(ParseInt64("-9223372036854775808"), INT64_MIN);
  for (const char* bad : {"", "-", "-0", "01", "+1", " 1", "1 ", "9223372036854775808", "1a"}) {
    EXPECT_FALSE(ParseInt64(bad).has_value()) << bad;
  }
}

TEST(CommandsTest, RepliesMatchRedis) {
  Store store;
  auto run = [&](std::vector<std::string_view> args) {
    std::string out;
    Execute(store, args, &out);
    return out;
  };
  EXPECT_EQ(run({"PING"}), "+PONG\r\n");
  EXPECT_EQ(run({"ping", "hi"}), "$2\r\nhi\r\n");
  EXPECT_EQ(run({"ping", "a", "b"}), "-ERR wrong number of arguments for 'ping' command\r\n");
  EXPECT_EQ(run({"set", "k", "v"}), "+OK\r\n");
  EXPECT_EQ(run({"set", "k", "w", "nx"}), "$-1\r\n");
  EXPECT_EQ(run({"set", "k", "w", "xx", "get"}), "$1\r\nv\r\n");
  EXPECT_EQ(run({"get", "k"}), "$1\r\nw\r\n");
  EXPECT_EQ(run({"set", "k", "v", "nx", "xx"}), "-ERR syntax error\r\n");
  EXPECT_EQ(run({"set", "k", "v", "ex", "0"}), "-ERR invalid expire time in 'set' command\r\n");
  EXPECT_EQ(run({"set", "k", "v", "ex", "x"}), "-ERR value is not an integer or out of range\r\n");
  EXPECT_EQ(run({"incr", "n"}), ":1\r\n");
  EXPECT_EQ(run({"incr", "k"}), "-ERR value is not an integer or out of range\r\n");
  EXPECT_EQ(run({"set", "n", "9223372036854775807"}), "+OK\r\n");
  EXPECT_EQ(run({"incr", "n"}), "-ERR increment or decrement would overflow\r\n");
  EXPECT_EQ(run({"exists", "k", "k", "none"}), ":2\r\n");
  EXPECT_EQ(run({"del", "k", "k", "none"}), ":1\r\n");
  EXPECT_EQ(run({"get", "k"}), "$-1\r\n");
  EXPECT_EQ(run({"foo", "a", "b"}),
            "-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n");
  EXPECT_EQ(run({"config", "get", "save", "appendonly"}),
            "*4\r\n$10\r\nappendonly\r\n$2\r\nno\r\n$4\r\nsave\r\n$0\r\n\r\n");
  EXPECT_EQ(run({"set", "t", "v", "px", "1"}), "+OK\r\n");
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(run({"get", "t"}), "$-1\r\n");
  EXPECT_EQ(run({"set", "t", "v", "px", "1"}), "+OK\r\n");
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  store.SweepExpired(0, 1, Store::NowMs());
  EXPECT_EQ(run({"dbsize"}), ":1\r\n");  // "n" only: the swept key is gone.
  EXPECT_EQ(run({"flushall", "junk"}), "-ERR syntax error\r\n");
  EXPECT_EQ(run({"dbsize"}), ":1\r\n");
  EXPECT_EQ(run({"flushall", "async"}), "+OK\r\n");
  EXPECT_EQ(run({"dbsize"}), ":0\r\n");
}

}  // namespace
}  // namespace gev::redis

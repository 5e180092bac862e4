#include "net/resolver.h"

#include <atomic>
#include <chrono>
#include <optional>
#include <thread>

#include "absl/time/time.h"
#include "eventloop/event_loop.h"
#include "gtest/gtest.h"

namespace gev {
namespace {

TEST(ResolverTest, KnowsWhatNeedsALookup) {
  EXPECT_FALSE(NeedsNameLookup("tcp", "127.0.0.1:80"));
  EXPECT_FALSE(NeedsNameLookup("tcp", "[::1]:80"));
  EXPECT_FALSE(NeedsNameLookup("tcp", ":80"));
  EXPECT_FALSE(NeedsNameLookup("unix", "/run/x.sock"));
  EXPECT_FALSE(NeedsNameLookup("tcp", "no-port"));
  EXPECT_TRUE(NeedsNameLookup("tcp", "localhost:80"));
  EXPECT_TRUE(NeedsNameLookup("tcp6", "db.internal:5432"));
}

TEST(ResolverTest, ResolvesLocalhostOffTheLoopAndAnswersOnIt) {
  std::shared_ptr<EventLoop> loop = *EventLoop::Create();
  std::optional<absl::StatusOr<SocketAddress>> result;
  loop->QueueInLoop([&] {
    ResolveOffLoop(loop, "tcp4", "localhost:8080", nullptr,
                   [&](absl::StatusOr<SocketAddress> address) {
                     EXPECT_TRUE(loop->IsInLoopThread());
                     result = std::move(address);
                     loop->Stop();
                   });
  });
  loop->RunAfter(absl::Seconds(5), [&] { loop->Stop(); });
  loop->Run();
  ASSERT_TRUE(result.has_value());
  ASSERT_TRUE(result->ok()) << result->status();
  EXPECT_EQ((*result)->ToString(), "127.0.0.1:8080");
}

TEST(ResolverTest, ASlowLookupDoesNotStallTheLoop) {
  std::shared_ptr<EventLoop> loop = *EventLoop::Create();
  std::atomic<std::thread::id> resolver_thread{};
  int ticks_while_resolving = 0;
  bool resolved = false;
  auto slow = [&](const std::string&, const std::string&) -> absl::StatusOr<SocketAddress> {
    resolver_thread = std::this_thread::get_id();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // A DNS server taking its time.
    return absl::NotFoundError("no such host");
  };
  loop->QueueInLoop([&] {
    ResolveOffLoop(loop, "tcp", "slow.example:1", slow, [&](absl::StatusOr<SocketAddress> a) {
      EXPECT_TRUE(absl::IsNotFound(a.status()));
      resolved = true;
      loop->Stop();
    });
  });
  loop->RunEvery(absl::Milliseconds(10), [&] {
    if (!resolved) ++ticks_while_resolving;
  });
  loop->RunAfter(absl::Seconds(5), [&] { loop->Stop(); });
  std::thread::id loop_thread = std::this_thread::get_id();
  loop->Run();
  EXPECT_TRUE(resolved);
  EXPECT_NE(resolver_thread.load(), loop_thread);
  // 300 ms of lookup at a 10 ms tick: a blocked loop would have ticked at most once or twice.
  EXPECT_GE(ticks_while_resolving, 10);
}

TEST(ResolverTest, AFinishedLoopDropsTheAnswer) {
  std::shared_ptr<EventLoop> loop = *EventLoop::Create();
  loop->Stop();
  loop->Run();  // Finished: refuses tasks.
  std::atomic<bool> looked_up{false};
  std::atomic<bool> answered{false};
  ResolveOffLoop(
      loop, "tcp", "x:1",
      [&](const std::string&, const std::string&) -> absl::StatusOr<SocketAddress> {
        looked_up = true;
        return absl::NotFoundError("x");
      },
      [&](absl::StatusOr<SocketAddress>) { answered = true; });
  for (int i = 0; i < 200 && !looked_up; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_TRUE(looked_up.load());
  EXPECT_FALSE(answered.load());
}

}  // namespace
}  // namespace gev

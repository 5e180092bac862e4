#include "net/resolver.h"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
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
    ResolveOffLoop(loop, "tcp4", "localhost:8080", nullptr, absl::ZeroDuration(),
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
    ResolveOffLoop(loop, "tcp", "slow.example:1", slow, absl::ZeroDuration(), [&](absl::StatusOr<SocketAddress> a) {
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
      absl::ZeroDuration(), [&](absl::StatusOr<SocketAddress>) { answered = true; });
  for (int i = 0; i < 200 && !looked_up; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_TRUE(looked_up.load());
  EXPECT_FALSE(answered.load());
}

// A burst of slow lookups (a proxy dialing for many clients at once) is answered side by side,
// not one after another.
TEST(ResolverTest, SlowLookupsRunSideBySide) {
  std::shared_ptr<EventLoop> loop = *EventLoop::Create();
  constexpr int kLookups = 8;
  std::atomic<int> running{0};
  std::atomic<int> most_at_once{0};
  auto slow = [&](const std::string&, const std::string&) -> absl::StatusOr<SocketAddress> {
    int now = running.fetch_add(1) + 1;
    int seen = most_at_once.load();
    while (now > seen && !most_at_once.compare_exchange_weak(seen, now)) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    running.fetch_sub(1);
    return SocketAddress::Parse("tcp", "127.0.0.1:1");
  };
  int answered = 0;
  loop->QueueInLoop([&] {
    for (int i = 0; i < kLookups; ++i) {
      ResolveOffLoop(loop, "tcp", "slow.example:1", slow, absl::Seconds(10),
                     [&](absl::StatusOr<SocketAddress> address) {
                       EXPECT_TRUE(address.ok()) << address.status();
                       if (++answered == kLookups) loop->Stop();
                     });
    }
  });
  loop->RunAfter(absl::Seconds(10), [&] { loop->Stop(); });
  loop->Run();
  EXPECT_EQ(answered, kLookups);
  EXPECT_EQ(most_at_once.load(), kLookups) << "lookups waited for one another";
}

// A name service that hangs: the lookup ends at its timeout with DeadlineExceeded, once; the
// late answer is dropped.
TEST(ResolverTest, ALookupEndsAtItsTimeoutAndItsLateAnswerIsDropped) {
  std::shared_ptr<EventLoop> loop = *EventLoop::Create();
  std::atomic<bool> looked_up{false};
  auto hanging = [&](const std::string&, const std::string&) -> absl::StatusOr<SocketAddress> {
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    looked_up = true;
    return SocketAddress::Parse("tcp", "127.0.0.1:1");
  };
  std::vector<absl::Status> answers;
  loop->QueueInLoop([&] {
    ResolveOffLoop(loop, "tcp", "hanging.example:1", hanging, absl::Milliseconds(100),
                   [&](absl::StatusOr<SocketAddress> address) {
                     answers.push_back(address.status());
                   });
  });
  loop->RunEvery(absl::Milliseconds(10), [&] {
    if (looked_up) loop->RunAfter(absl::Milliseconds(50), [&] { loop->Stop(); });
  });
  loop->RunAfter(absl::Seconds(5), [&] { loop->Stop(); });
  loop->Run();
  EXPECT_TRUE(looked_up.load());
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_TRUE(absl::IsDeadlineExceeded(answers[0])) << answers[0];
  EXPECT_NE(answers[0].message().find("hanging.example:1"), std::string::npos) << answers[0];
}

// The pool's bound: with every thread held by a hung name service and 4,096 lookups waiting,
// the next ones are refused at once with ResourceExhausted, not queued without end; once the
// name service answers, every accepted lookup is answered.
TEST(ResolverTest, LookupsPastTheQueueAreRefusedAtOnce) {
  std::shared_ptr<EventLoop> loop = *EventLoop::Create();
  constexpr int kThreads = 16;
  constexpr int kQueued = 4096;
  constexpr int kPast = 5;
  std::mutex mutex;
  std::condition_variable released_cv;
  bool released = false;
  std::atomic<int> running{0};
  auto hung = [&](const std::string&, const std::string&) -> absl::StatusOr<SocketAddress> {
    running.fetch_add(1);
    std::unique_lock<std::mutex> lock(mutex);
    released_cv.wait(lock, [&] { return released; });
    return SocketAddress::Parse("tcp", "127.0.0.1:1");
  };
  auto release = [&] {
    std::lock_guard<std::mutex> lock(mutex);
    released = true;
    released_cv.notify_all();
  };
  int ok = 0;
  int refused = 0;
  int other = 0;
  auto count = [&](absl::StatusOr<SocketAddress> address) {
    if (address.ok()) {
      ++ok;
    } else if (absl::IsResourceExhausted(address.status()) &&
               address.status().message().find("queued.example") != std::string::npos) {
      ++refused;
    } else {
      ++other;
    }
    if (ok + refused + other == kThreads + kQueued + kPast) loop->Stop();
  };
  loop->QueueInLoop([&] {
    for (int i = 0; i < kThreads; ++i) {
      ResolveOffLoop(loop, "tcp", "held.example:1", hung, absl::ZeroDuration(), count);
    }
  });
  // Once every thread is held, the queue fills, then overflows.
  loop->RunEvery(absl::Milliseconds(5), [&, queued = false]() mutable {
    if (queued || running.load() < kThreads) return;
    queued = true;
    for (int i = 0; i < kQueued + kPast; ++i) {
      ResolveOffLoop(loop, "tcp", "queued.example:1", hung, absl::ZeroDuration(), count);
    }
    // The refusals are answered as tasks on this loop; the rest wait for the name service.
    loop->RunAfter(absl::Milliseconds(100), [&] {
      EXPECT_EQ(refused, kPast);
      EXPECT_EQ(ok, 0);
      release();
    });
  });
  loop->RunAfter(absl::Seconds(20), [&] {
    release();
    loop->Stop();
  });
  loop->Run();
  release();
  EXPECT_EQ(running.load(), kThreads + kQueued);
  EXPECT_EQ(ok, kThreads + kQueued);
  EXPECT_EQ(refused, kPast);
  EXPECT_EQ(other, 0);
}

}  // namespace
}  // namespace gev

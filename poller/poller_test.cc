// Backend-agnostic poller tests: a typed test over every backend this platform builds
// (poller_backends.h is chosen by Bazel select()).

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "poller/poller.h"
#include "poller_backends.h"

#define GEV_STRINGIFY_TOKEN(token) #token
#define GEV_STRINGIFY(token) GEV_STRINGIFY_TOKEN(token)

namespace gev {
namespace {

template <typename Backend>
class PollerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto poller = Backend::Create();
    ASSERT_TRUE(poller.ok()) << poller.status();
    poller_ = std::move(*poller);
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair_), 0);
  }
  void TearDown() override {
    for (int fd : pair_) {
      if (fd >= 0) ::close(fd);
    }
  }

  // Waits (bounded) until an event for `tag` arrives; returns the merged flags.
  PollEvent WaitFor(uint64_t tag, int timeout_ms = 1000) {
    PollEvent merged;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    bool seen = false;
    while (!seen && std::chrono::steady_clock::now() < deadline) {
      for (const PollEvent& event : poller_->Wait(50)) {
        if (event.tag != tag) continue;
        seen = true;
        merged.tag = tag;
        merged.readable |= event.readable;
        merged.writable |= event.writable;
        merged.hangup |= event.hangup;
        merged.error |= event.error;
        if (event.error_code != 0) merged.error_code = event.error_code;
      }
    }
    return merged;
  }

  std::unique_ptr<Backend> poller_;
  int pair_[2] = {-1, -1};
};

TYPED_TEST_SUITE_P(PollerTest);

TYPED_TEST_P(PollerTest, ReportsReadableWithTag) {
  ASSERT_TRUE(this->poller_->Add(this->pair_[0], Interest::kRead, 42).ok());
  EXPECT_TRUE(this->poller_->Wait(0).empty());  // Nothing to read yet.
  ASSERT_EQ(::write(this->pair_[1], "x", 1), 1);
  PollEvent event = this->WaitFor(42);
  EXPECT_EQ(event.tag, 42u);
  EXPECT_TRUE(event.readable);
  EXPECT_FALSE(event.writable);
}

TYPED_TEST_P(PollerTest, LevelTriggeredKeepsReportingUnreadData) {
  ASSERT_TRUE(this->poller_->Add(this->pair_[0], Interest::kRead, 1).ok());
  ASSERT_EQ(::write(this->pair_[1], "xy", 2), 2);
  EXPECT_TRUE(this->WaitFor(1).readable);
  EXPECT_TRUE(this->WaitFor(1).readable);  // Still unread: reported again.
  char buf[2];
  ASSERT_EQ(::read(this->pair_[0], buf, 2), 2);
  EXPECT_TRUE(this->poller_->Wait(0).empty());
}

TYPED_TEST_P(PollerTest, ModifySwitchesBetweenReadAndWrite) {
  ASSERT_TRUE(this->poller_->Add(this->pair_[0], Interest::kRead, 7).ok());
  EXPECT_TRUE(this->poller_->Wait(0).empty());
  ASSERT_TRUE(this->poller_->Modify(this->pair_[0], Interest::kWrite, 8).ok());
  PollEvent event = this->WaitFor(8);
  EXPECT_TRUE(event.writable);
  EXPECT_FALSE(event.readable);
  ASSERT_TRUE(this->poller_->Modify(this->pair_[0], Interest::kNone, 8).ok());
  EXPECT_TRUE(this->poller_->Wait(0).empty());
  ASSERT_TRUE(this->poller_->Modify(this->pair_[0], Interest::kReadWrite, 9).ok());
  ASSERT_EQ(::write(this->pair_[1], "x", 1), 1);
  event = this->WaitFor(9);
  EXPECT_TRUE(event.readable);
  EXPECT_TRUE(event.writable);
}

TYPED_TEST_P(PollerTest, RemovedDescriptorIsNotReported) {
  ASSERT_TRUE(this->poller_->Add(this->pair_[0], Interest::kReadWrite, 3).ok());
  ASSERT_TRUE(this->poller_->Remove(this->pair_[0]).ok());
  ASSERT_EQ(::write(this->pair_[1], "x", 1), 1);
  EXPECT_TRUE(this->poller_->Wait(20).empty());
  EXPECT_FALSE(this->poller_->Remove(this->pair_[0]).ok());  // Not watched any more.
}

TYPED_TEST_P(PollerTest, PeerCloseIsReadable) {
  ASSERT_TRUE(this->poller_->Add(this->pair_[0], Interest::kRead, 5).ok());
  ::close(this->pair_[1]);
  this->pair_[1] = -1;
  PollEvent event = this->WaitFor(5);
  EXPECT_TRUE(event.readable);
  char buf[1];
  EXPECT_EQ(::read(this->pair_[0], buf, 1), 0);
}

TYPED_TEST_P(PollerTest, RefusedConnectReportsError) {
  // Find a loopback port with no listener: bind, read the port, close.
  int probe = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(probe, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(probe, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(probe);

  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  ASSERT_TRUE(rc == 0 || errno == EINPROGRESS || errno == ECONNREFUSED);
  ASSERT_TRUE(this->poller_->Add(fd, Interest::kReadWrite, 11).ok());
  PollEvent event = this->WaitFor(11);
  EXPECT_TRUE(event.error || event.hangup);
  // From the event where the backend delivers it (kqueue), else from the socket (epoll).
  int error = event.error_code;
  if (error == 0) {
    socklen_t error_len = sizeof(error);
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &error_len);
  }
  EXPECT_EQ(error, ECONNREFUSED);
  ::close(fd);
}

TYPED_TEST_P(PollerTest, WakeupEndsABlockingWaitAndIsNotAnEvent) {
  std::thread waker([this] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    this->poller_->Wakeup();
  });
  auto start = std::chrono::steady_clock::now();
  auto events = this->poller_->Wait(10000);
  auto waited = std::chrono::steady_clock::now() - start;
  waker.join();
  EXPECT_TRUE(events.empty());
  EXPECT_LT(waited, std::chrono::seconds(5));
  // Wakeups before a Wait are remembered, and coalesce into one early return.
  this->poller_->Wakeup();
  this->poller_->Wakeup();
  start = std::chrono::steady_clock::now();
  EXPECT_TRUE(this->poller_->Wait(10000).empty());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_TRUE(this->poller_->Wait(0).empty());
}

TYPED_TEST_P(PollerTest, ManyReadyDescriptorsAreAllReportedAndTheArrayGrowsToItsCap) {
  constexpr size_t kReady = Poller::kMaxEventsPerWait + 44;
  size_t initial_capacity = this->poller_->event_capacity();
  std::vector<int> fds;
  for (size_t i = 0; i < kReady; ++i) {
    int pair[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, pair), 0);
    ASSERT_EQ(::write(pair[1], "x", 1), 1);
    ASSERT_TRUE(this->poller_->Add(pair[0], Interest::kRead, 1000 + static_cast<uint64_t>(i)).ok());
    fds.push_back(pair[0]);
    fds.push_back(pair[1]);
  }
  std::set<uint64_t> seen;
  size_t largest_batch = 0;
  for (int round = 0; round < 40 && seen.size() < kReady; ++round) {
    absl::Span<const PollEvent> events = this->poller_->Wait(100);
    largest_batch = std::max(largest_batch, events.size());
    for (const PollEvent& event : events) seen.insert(event.tag);
  }
  EXPECT_EQ(seen.size(), kReady);
  // More ready descriptors than the cap: the array grew from its initial size to the cap, and
  // no single Wait() returned more than that.
  EXPECT_LT(initial_capacity, Poller::kMaxEventsPerWait);
  EXPECT_EQ(this->poller_->event_capacity(), Poller::kMaxEventsPerWait);
  EXPECT_EQ(largest_batch, Poller::kMaxEventsPerWait);
  for (int fd : fds) ::close(fd);
}


// Both directions gone (our write side shut, the peer closed): a hang-up, and the FIN readable.
TYPED_TEST_P(PollerTest, HangupAfterBothSidesClose) {
  ASSERT_TRUE(this->poller_->Add(this->pair_[0], Interest::kReadWrite, 21).ok());
  ASSERT_EQ(::shutdown(this->pair_[0], SHUT_WR), 0);
  ::close(this->pair_[1]);
  this->pair_[1] = -1;
  PollEvent event = this->WaitFor(21);
  EXPECT_TRUE(event.hangup);
  EXPECT_TRUE(event.readable);
  char buf[1];
  EXPECT_EQ(::read(this->pair_[0], buf, 1), 0);
}

// A connection's interest changes on every backpressure edge: switched many times, each Wait
// reports exactly what is asked for (data is readable and the socket writable throughout).
TYPED_TEST_P(PollerTest, InterestSwitchedManyTimesReportsExactlyTheCurrentOne) {
  ASSERT_EQ(::write(this->pair_[1], "x", 1), 1);
  ASSERT_TRUE(this->poller_->Add(this->pair_[0], Interest::kNone, 30).ok());
  const Interest cycle[] = {Interest::kRead, Interest::kWrite, Interest::kNone,
                            Interest::kReadWrite, Interest::kWrite, Interest::kRead};
  for (int i = 0; i < 300; ++i) {
    Interest interest = cycle[i % 6];
    ASSERT_TRUE(this->poller_->Modify(this->pair_[0], interest, 30).ok()) << i;
    bool readable = false;
    bool writable = false;
    for (const PollEvent& event : this->poller_->Wait(0)) {
      EXPECT_EQ(event.tag, 30u);
      readable |= event.readable;
      writable |= event.writable;
    }
    EXPECT_EQ(readable, WantsRead(interest)) << "switch " << i;
    EXPECT_EQ(writable, WantsWrite(interest)) << "switch " << i;
  }
}

// A thousand watched descriptors, all ready: each is reported, with its own tag, none twice in
// one Wait, none invented.
TYPED_TEST_P(PollerTest, AThousandDescriptorsAreEachReportedWithTheirTag) {
  constexpr int kDescriptors = 1000;
  rlimit limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &limit), 0);
  if (limit.rlim_cur < 2 * kDescriptors + 100) {
    ASSERT_GE(limit.rlim_max, 2 * kDescriptors + 100u) << "the hard limit leaves no room";
    limit.rlim_cur = 2 * kDescriptors + 100;
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &limit), 0);
  }
  std::vector<int> fds;
  for (int i = 0; i < kDescriptors; ++i) {
    int pair[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, pair), 0) << i;
    ASSERT_TRUE(this->poller_->Add(pair[0], Interest::kRead, 5000 + static_cast<uint64_t>(i)).ok());
    ASSERT_EQ(::write(pair[1], "x", 1), 1);
    fds.push_back(pair[0]);
    fds.push_back(pair[1]);
  }
  std::set<uint64_t> seen;
  for (int round = 0; round < 100 && seen.size() < kDescriptors; ++round) {
    std::set<uint64_t> in_this_wait;
    for (const PollEvent& event : this->poller_->Wait(100)) {
      ASSERT_GE(event.tag, 5000u);
      ASSERT_LT(event.tag, 5000u + kDescriptors);
      EXPECT_TRUE(in_this_wait.insert(event.tag).second) << "twice in one Wait: " << event.tag;
      EXPECT_TRUE(event.readable);
      // Read it, so the level-triggered backend reports the others next.
      char buf[1];
      EXPECT_EQ(::read(fds[2 * (event.tag - 5000)], buf, 1), 1);
      seen.insert(event.tag);
    }
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(kDescriptors));
  for (int fd : fds) ::close(fd);
}

// Wakeups from another thread while a descriptor is ready: every Wait reports the descriptor,
// and a wakeup is never reported as an event.
TYPED_TEST_P(PollerTest, WakeupFromAnotherThreadWhileEventsAreReady) {
  ASSERT_TRUE(this->poller_->Add(this->pair_[0], Interest::kRead, 40).ok());
  ASSERT_EQ(::write(this->pair_[1], "x", 1), 1);
  std::atomic<bool> done{false};
  std::thread waker([&] {
    while (!done.load()) this->poller_->Wakeup();
  });
  for (int i = 0; i < 500; ++i) {
    absl::Span<const PollEvent> events = this->poller_->Wait(1000);
    ASSERT_EQ(events.size(), 1u) << "wait " << i;
    EXPECT_EQ(events[0].tag, 40u);
    EXPECT_TRUE(events[0].readable);
  }
  done.store(true);
  waker.join();
}

// The loop removes a descriptor before closing it; a new descriptor that gets the same number
// is then a stranger: only its own tag and interest are reported.
TYPED_TEST_P(PollerTest, ReAddingADescriptorNumberAfterCloseReportsOnlyTheNewOne) {
  int old_number = this->pair_[0];
  ASSERT_TRUE(this->poller_->Add(old_number, Interest::kReadWrite, 50).ok());
  ASSERT_TRUE(this->poller_->Remove(old_number).ok());
  ::close(this->pair_[0]);
  ::close(this->pair_[1]);
  int fresh[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fresh), 0);
  // The same number for a new socket, whatever else was freed meanwhile.
  if (fresh[0] != old_number) {
    ASSERT_EQ(::dup2(fresh[0], old_number), old_number);
    ::close(fresh[0]);
  }
  this->pair_[0] = old_number;
  this->pair_[1] = fresh[1];
  ASSERT_TRUE(this->poller_->Add(this->pair_[0], Interest::kRead, 51).ok());
  EXPECT_TRUE(this->poller_->Wait(20).empty());  // Not readable; the old write filter is gone.
  ASSERT_EQ(::write(this->pair_[1], "x", 1), 1);
  PollEvent event = this->WaitFor(51);
  EXPECT_TRUE(event.readable);
  EXPECT_FALSE(event.writable);
  for (const PollEvent& stale : this->poller_->Wait(0)) EXPECT_NE(stale.tag, 50u);
}

REGISTER_TYPED_TEST_SUITE_P(PollerTest, ReportsReadableWithTag,
                            LevelTriggeredKeepsReportingUnreadData,
                            ModifySwitchesBetweenReadAndWrite, RemovedDescriptorIsNotReported,
                            PeerCloseIsReadable, RefusedConnectReportsError,
                            WakeupEndsABlockingWaitAndIsNotAnEvent,
                            ManyReadyDescriptorsAreAllReportedAndTheArrayGrowsToItsCap,
                            HangupAfterBothSidesClose,
                            InterestSwitchedManyTimesReportsExactlyTheCurrentOne,
                            AThousandDescriptorsAreEachReportedWithTheirTag,
                            WakeupFromAnotherThreadWhileEventsAreReady,
                            ReAddingADescriptorNumberAfterCloseReportsOnlyTheNewOne);
INSTANTIATE_TYPED_TEST_SUITE_P(Platform, PollerTest, poller_testing::PollerBackends);

TEST(DefaultPollerTest, CreatesThePlatformBackend) {
  auto poller = CreateDefaultPoller();
  ASSERT_TRUE(poller.ok()) << poller.status();
  // The backend this platform promises (poller/BUILD.bazel): epoll on Linux, kqueue on macOS
  // and the BSDs, so that a fallback to the other cannot pass unnoticed.
  EXPECT_STREQ((*poller)->name(), GEV_STRINGIFY(GEV_EXPECTED_DEFAULT_POLLER));
}

}  // namespace
}  // namespace gev

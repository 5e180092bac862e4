#include "poller/epoll_poller.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace gev {
namespace {

constexpr size_t kInitialEvents = 64;
static_assert(Poller::kMaxEventsPerWait % kInitialEvents == 0, "the array doubles up to the cap");
// The eventfd's tag: no user tag is all ones (an event loop's are 8-aligned addresses with a
// callback number in the low bits, a user-space address never that large).
constexpr uint64_t kWakeupTag = UINT64_MAX;

uint32_t EpollEvents(Interest interest) {
  uint32_t events = 0;
  if (WantsRead(interest)) events |= EPOLLIN | EPOLLRDHUP;
  if (WantsWrite(interest)) events |= EPOLLOUT;
  return events;
}

}  // namespace

absl::StatusOr<std::unique_ptr<EpollPoller>> EpollPoller::Create() {
  int epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd < 0) return absl::ErrnoToStatus(errno, "epoll_create1");
  int wakeup_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wakeup_fd < 0) {
    int saved = errno;
    ::close(epoll_fd);
    return absl::ErrnoToStatus(saved, "eventfd");
  }
  std::unique_ptr<EpollPoller> poller(new EpollPoller(epoll_fd, wakeup_fd));
  absl::Status added = poller->Control(EPOLL_CTL_ADD, wakeup_fd, Interest::kRead, kWakeupTag);
  if (!added.ok()) return added;
  return poller;
}

EpollPoller::EpollPoller(int epoll_fd, int wakeup_fd)
    : epoll_fd_(epoll_fd), wakeup_fd_(wakeup_fd), ready_(kInitialEvents) {
  events_.reserve(kInitialEvents);
}

EpollPoller::~EpollPoller() {
  ::close(wakeup_fd_);
  ::close(epoll_fd_);
}

absl::Status EpollPoller::Control(int op, int fd, Interest interest, uint64_t tag) {
  epoll_event event{};
  event.events = EpollEvents(interest);
  event.data.u64 = tag;
  if (::epoll_ctl(epoll_fd_, op, fd, &event) != 0) {
    const char* what = op == EPOLL_CTL_ADD ? "ADD" : op == EPOLL_CTL_MOD ? "MOD" : "DEL";
    return absl::ErrnoToStatus(errno, absl::StrCat("epoll_ctl(", what, ", fd ", fd, ")"));
  }
  return absl::OkStatus();
}

absl::Status EpollPoller::Add(int fd, Interest interest, uint64_t tag) {
  return Control(EPOLL_CTL_ADD, fd, interest, tag);
}

absl::Status EpollPoller::Modify(int fd, Interest interest, uint64_t tag) {
  return Control(EPOLL_CTL_MOD, fd, interest, tag);
}

absl::Status EpollPoller::Remove(int fd) { return Control(EPOLL_CTL_DEL, fd, Interest::kNone, 0); }

absl::Span<PollEvent> EpollPoller::Wait(int timeout_ms) {
  events_.clear();
  int n = ::epoll_wait(epoll_fd_, ready_.data(), static_cast<int>(ready_.size()), timeout_ms);
  if (n <= 0) return {};  // Timeout, or EINTR: the loop simply goes round again.
  for (int i = 0; i < n; ++i) {
    const epoll_event& ready = ready_[static_cast<size_t>(i)];
    if (ready.data.u64 == kWakeupTag) {
      uint64_t count;
      while (::read(wakeup_fd_, &count, sizeof(count)) < 0 && errno == EINTR) {
      }
      continue;
    }
    PollEvent event;
    event.tag = ready.data.u64;
    event.readable = (ready.events & (EPOLLIN | EPOLLPRI | EPOLLRDHUP)) != 0;
    event.writable = (ready.events & EPOLLOUT) != 0;
    // EPOLLRDHUP is the peer's FIN: a read returns 0. EPOLLHUP is both directions gone.
    event.hangup = (ready.events & EPOLLHUP) != 0;
    event.error = (ready.events & EPOLLERR) != 0;
    events_.push_back(event);
  }
  if (static_cast<size_t>(n) == ready_.size() && ready_.size() < kMaxEventsPerWait) {
    ready_.resize(ready_.size() * 2);
  }
  return absl::MakeSpan(events_);
}

void EpollPoller::Wakeup() {
  uint64_t one = 1;
  // EAGAIN means the counter is saturated, so a wakeup is pending anyway.
  while (::write(wakeup_fd_, &one, sizeof(one)) < 0 && errno == EINTR) {
  }
}

}  // namespace gev

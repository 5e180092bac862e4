#include "poller/kqueue_poller.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace gev {
namespace {

constexpr size_t kInitialEvents = 64;
static_assert(Poller::kMaxEventsPerWait % kInitialEvents == 0, "the array doubles up to the cap");
constexpr uintptr_t kWakeupIdent = 0;

}  // namespace

absl::StatusOr<std::unique_ptr<KqueuePoller>> KqueuePoller::Create() {
  int kqueue_fd = ::kqueue();
  if (kqueue_fd < 0) return absl::ErrnoToStatus(errno, "kqueue");
  ::fcntl(kqueue_fd, F_SETFD, FD_CLOEXEC);
  std::unique_ptr<KqueuePoller> poller(new KqueuePoller(kqueue_fd));
  struct kevent change;
  EV_SET(&change, kWakeupIdent, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, nullptr);
  if (::kevent(kqueue_fd, &change, 1, nullptr, 0, nullptr) < 0) {
    return absl::ErrnoToStatus(errno, "kevent(EVFILT_USER)");
  }
  return poller;
}

KqueuePoller::KqueuePoller(int kqueue_fd) : kqueue_fd_(kqueue_fd), ready_(kInitialEvents) {
  events_.reserve(kInitialEvents);
}

KqueuePoller::~KqueuePoller() { ::close(kqueue_fd_); }

absl::Status KqueuePoller::Apply(int fd, Interest interest, uint64_t tag, bool is_add) {
  struct kevent changes[2];
  void* udata = reinterpret_cast<void*>(static_cast<uintptr_t>(tag));
  // EV_RECEIPT reports each change's result in place, so deleting a filter that was never
  // added (ENOENT) can be told apart from a real failure.
  auto flags = [is_add](bool wanted) -> unsigned short {
    if (wanted) return EV_ADD | EV_ENABLE | EV_RECEIPT;
    return is_add ? EV_ADD | EV_DISABLE | EV_RECEIPT : EV_DELETE | EV_RECEIPT;
  };
  EV_SET(&changes[0], fd, EVFILT_READ, flags(WantsRead(interest)), 0, 0, udata);
  EV_SET(&changes[1], fd, EVFILT_WRITE, flags(WantsWrite(interest)), 0, 0, udata);
  struct kevent results[2];
  int n = ::kevent(kqueue_fd_, changes, 2, results, 2, nullptr);
  if (n < 0) return absl::ErrnoToStatus(errno, absl::StrCat("kevent(fd ", fd, ")"));
  for (int i = 0; i < n; ++i) {
    if ((results[i].flags & EV_ERROR) != 0 && results[i].data != 0 && results[i].data != ENOENT) {
      return absl::ErrnoToStatus(static_cast<int>(results[i].data),
                                 absl::StrCat("kevent(fd ", fd, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status KqueuePoller::Add(int fd, Interest interest, uint64_t tag) {
  return Apply(fd, interest, tag, /*is_add=*/true);
}

absl::Status KqueuePoller::Modify(int fd, Interest interest, uint64_t tag) {
  return Apply(fd, interest, tag, /*is_add=*/false);
}

absl::Status KqueuePoller::Remove(int fd) {
  struct kevent changes[2];
  EV_SET(&changes[0], fd, EVFILT_READ, EV_DELETE | EV_RECEIPT, 0, 0, nullptr);
  EV_SET(&changes[1], fd, EVFILT_WRITE, EV_DELETE | EV_RECEIPT, 0, 0, nullptr);
  struct kevent results[2];
  if (::kevent(kqueue_fd_, changes, 2, results, 2, nullptr) < 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("kevent(EV_DELETE, fd ", fd, ")"));
  }
  return absl::OkStatus();
}

absl::Span<const PollEvent> KqueuePoller::Wait(int timeout_ms) {
  events_.clear();
  struct timespec timeout;
  struct timespec* timeout_ptr = nullptr;
  if (timeout_ms >= 0) {
    timeout.tv_sec = timeout_ms / 1000;
    timeout.tv_nsec = static_cast<long>(timeout_ms % 1000) * 1000000L;
    timeout_ptr = &timeout;
  }
  int n = ::kevent(kqueue_fd_, nullptr, 0, ready_.data(), static_cast<int>(ready_.size()),
                   timeout_ptr);
  if (n <= 0) return {};
  for (int i = 0; i < n; ++i) {
    const struct kevent& ready = ready_[static_cast<size_t>(i)];
    if (ready.filter == EVFILT_USER) continue;  // A Wakeup(); EV_CLEAR already reset it.
    PollEvent event;
    event.tag = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(ready.udata));
    event.readable = ready.filter == EVFILT_READ;
    event.writable = ready.filter == EVFILT_WRITE;
    // EV_EOF on the read filter is the peer's FIN (a read returns 0); on the write filter the
    // peer can no longer receive.
    event.hangup = ready.filter == EVFILT_WRITE && (ready.flags & EV_EOF) != 0;
    event.error = (ready.flags & EV_ERROR) != 0 ||
                  ((ready.flags & EV_EOF) != 0 && ready.fflags != 0);
    events_.push_back(event);
  }
  if (static_cast<size_t>(n) == ready_.size() && ready_.size() < kMaxEventsPerWait) {
    ready_.resize(ready_.size() * 2);
  }
  return events_;
}

void KqueuePoller::Wakeup() {
  struct kevent trigger;
  EV_SET(&trigger, kWakeupIdent, EVFILT_USER, 0, NOTE_TRIGGER, 0, nullptr);
  ::kevent(kqueue_fd_, &trigger, 1, nullptr, 0, nullptr);
}

}  // namespace gev

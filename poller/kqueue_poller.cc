#include "poller/kqueue_poller.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <utility>

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

absl::Status KqueuePoller::Submit(int fd, struct kevent* changes, int count,
                                  int* not_found) {
  struct kevent results[kMaxChanges];
  // A call of its own, with a zero timeout: libkqueue can lose a changelist's errors when the
  // same call also waits and times out. EV_RECEIPT reports each change's result in place.
  struct timespec no_wait = {0, 0};
  int n = ::kevent(kqueue_fd_, changes, count, results, count, &no_wait);
  if (n < 0) return absl::ErrnoToStatus(errno, absl::StrCat("kevent(fd ", fd, ")"));
  *not_found = 0;
  for (int i = 0; i < n; ++i) {
    if ((results[i].flags & EV_ERROR) == 0) {
      // Every change carries EV_RECEIPT, so every result is a receipt; a ready event here would
      // be lost, which a caller must hear of.
      return absl::InternalError(absl::StrCat("kevent(fd ", fd, "): an event, not a receipt"));
    }
    if (results[i].data == 0) continue;
    if (results[i].data == ENOENT && (changes[i].flags & EV_DELETE) != 0) {
      ++*not_found;  // Deleting a filter that was not added: expected, see Apply().
      continue;
    }
    return absl::ErrnoToStatus(
        static_cast<int>(results[i].data),
        absl::StrCat("kevent(fd ", fd, ", ", results[i].filter == EVFILT_READ ? "read" : "write",
                     (changes[i].flags & EV_DELETE) != 0 ? " delete" : " add", ")"));
  }
  return absl::OkStatus();
}

absl::Status KqueuePoller::Apply(int fd, Interest interest, uint64_t tag) {
  // Each filter is deleted, and added again when wanted, in one changelist; nothing is kept per
  // descriptor. Two libkqueue differences decide this (a BSD kernel is fine either way):
  //   - a filter added with EV_ADD | EV_DISABLE still reports events, so an unwanted filter
  //     must not exist at all;
  //   - EV_ADD on a socket filter that exists fails (its modify accepts only EV_CLEAR, and the
  //     error carries a stale errno), so a wanted filter is never re-added in place: deleted
  //     first, which also carries a changed tag (udata).
  // Deleting a filter that is not there (ENOENT) is expected.
  struct kevent changes[kMaxChanges];
  void* udata = reinterpret_cast<void*>(static_cast<uintptr_t>(tag));
  int count = 0;
  for (auto [filter, wanted] : {std::pair<short, bool>{EVFILT_READ, WantsRead(interest)},
                                std::pair<short, bool>{EVFILT_WRITE, WantsWrite(interest)}}) {
    EV_SET(&changes[count++], fd, filter, EV_DELETE | EV_RECEIPT, 0, 0, nullptr);
    if (wanted) EV_SET(&changes[count++], fd, filter, EV_ADD | EV_RECEIPT, 0, 0, udata);
  }
  int not_found = 0;
  // Not atomic as epoll's MOD is: if an add fails after its delete succeeded, the descriptor is
  // left with fewer filters than asked, and the error says so; the loop then closes it.
  return Submit(fd, changes, count, &not_found);
}

absl::Status KqueuePoller::Add(int fd, Interest interest, uint64_t tag) {
  if (fd < 0) return absl::InvalidArgumentError(absl::StrCat("fd ", fd));
  size_t index = static_cast<size_t>(fd);
  if (index < watched_.size() && watched_[index]) {
    return absl::AlreadyExistsError(absl::StrCat("fd ", fd, " is already watched"));
  }
  absl::Status status = Apply(fd, interest, tag);
  if (!status.ok()) return status;
  if (index >= watched_.size()) watched_.resize(std::max(index + 1, watched_.size() * 2));
  watched_[index] = true;
  return absl::OkStatus();
}

absl::Status KqueuePoller::Modify(int fd, Interest interest, uint64_t tag) {
  if (!IsWatched(fd)) return absl::NotFoundError(absl::StrCat("fd ", fd, " is not watched"));
  return Apply(fd, interest, tag);
}

absl::Status KqueuePoller::Remove(int fd) {
  // Before the descriptor is closed (the loop removes first): libkqueue does not drop a closed
  // descriptor's filters by itself, and a later descriptor with the same number would inherit
  // them.
  struct kevent changes[2];
  EV_SET(&changes[0], fd, EVFILT_READ, EV_DELETE | EV_RECEIPT, 0, 0, nullptr);
  EV_SET(&changes[1], fd, EVFILT_WRITE, EV_DELETE | EV_RECEIPT, 0, 0, nullptr);
  // With no interest a descriptor has no filter at all: whether it is watched is known here.
  if (!IsWatched(fd)) return absl::NotFoundError(absl::StrCat("fd ", fd, " is not watched"));
  watched_[static_cast<size_t>(fd)] = false;
  int not_found = 0;
  return Submit(fd, changes, 2, &not_found);
}

absl::Span<PollEvent> KqueuePoller::Wait(int timeout_ms) {
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
    // The socket's error comes with the event: EV_EOF with the errno in fflags (a BSD kernel
    // and libkqueue alike; libkqueue has consumed SO_ERROR by now), or EV_ERROR with it in data.
    if ((ready.flags & EV_ERROR) != 0) {
      event.error = true;
      event.error_code = static_cast<int>(ready.data);
    } else if ((ready.flags & EV_EOF) != 0 && ready.fflags != 0) {
      event.error = true;
      event.error_code = static_cast<int>(ready.fflags);
    }
    events_.push_back(event);
  }
  if (static_cast<size_t>(n) == ready_.size() && ready_.size() < kMaxEventsPerWait) {
    ready_.resize(ready_.size() * 2);
  }
  return absl::MakeSpan(events_);
}

void KqueuePoller::Wakeup() {
  struct kevent trigger;
  EV_SET(&trigger, kWakeupIdent, EVFILT_USER, 0, NOTE_TRIGGER, 0, nullptr);
  ::kevent(kqueue_fd_, &trigger, 1, nullptr, 0, nullptr);
}

}  // namespace gev

// The kqueue backend of gev::Poller (macOS, FreeBSD and the other BSDs). See poller/poller.h.
//
// What was run: this backend last passed the poller, event loop, net, server and example suites
// on Linux over libkqueue (a user-space kqueue), in a configuration since removed because
// libkqueue's source is not this project's and no Debian package provides it. This
// repository's CI runs on Linux and exercises epoll only; on macOS or a BSD, `tools/bazel test
// //...` builds this backend as the default poller and runs the suites on it (a few tests
// lean on Linux: /proc, or a Unix socket's EAGAIN for a full backlog).
//
// Read and write interest are two kqueue filters, so one descriptor that is both readable and
// writable may be reported as two events with the same tag in one Wait(). Wakeups use an
// EVFILT_USER event with EV_CLEAR, so no descriptor is spent on them.
//
// Written to be correct on a BSD kernel and on libkqueue, which differ (each handled where the
// code says so, in kqueue_poller.cc):
//   - EV_ADD | EV_DISABLE still reports events on libkqueue: an unwanted filter is deleted.
//   - EV_ADD on an existing socket filter fails on libkqueue (its modify accepts only EV_CLEAR,
//     with a stale errno): a wanted filter is deleted and added again, in one changelist.
//   - libkqueue consumes the socket's error: it is taken from the event (EV_EOF with fflags, or
//     EV_ERROR with data) into PollEvent::error_code, as a BSD kernel also provides it.
//   - A changelist's errors can be lost when the same call also waits: changes go in a call of
//     their own, with a zero timeout and EV_RECEIPT.
//   - close() does not drop a descriptor's filters on libkqueue: the loop removes a descriptor
//     before its teardown closes it (a connection destroyed after its loop stopped closes
//     without; a later Add of that number deletes stale filters first).
//   - Hang-up differs from epoll: `hangup` comes only with the write filter (EV_EOF), so with
//     it `writable` is set too, and a descriptor with no interest has no filter and hears
//     nothing (epoll reports EPOLLHUP and EPOLLERR regardless). A connection that neither
//     reads nor writes is therefore not woken by a hang-up here; one that writes sees it as a
//     failing write.
//   - A process that has used libkqueue must exec after fork (its BUGS.md): the tests start
//     their server processes with posix_spawn.
//
// Not verified without a BSD or macOS kernel (only libkqueue ever ran it here):
//   - that a BSD kernel accepts the delete-then-add changelist for a filter that exists, and
//     reports level-triggered readiness again after it (expected: it does; kevent(2));
//   - EV_EOF/fflags error codes for refused and reset connections on each BSD;
//   - EVFILT_USER wakeups on OpenBSD (which lacks EVFILT_USER before 7.5), and whether it
//     honours EV_RECEIPT (Submit() fails loudly if a result is not a receipt);
//   - whether a BSD kernel's write filter reports EV_EOF after our own shutdown(SHUT_WR);
//   - the build itself on macOS and the BSDs (no such machine here);
//   - speed: libkqueue is an emulation over epoll, so no figure from it says anything about a
//     BSD kernel.
//
// Thread safety: as gev::Poller — Wakeup() from any thread, the rest from the loop thread.

#ifndef GEV_POLLER_KQUEUE_POLLER_H_
#define GEV_POLLER_KQUEUE_POLLER_H_

#include <sys/types.h>
#include <sys/event.h>

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "poller/poller.h"

namespace gev {

class KqueuePoller final : public Poller {
 public:
  static absl::StatusOr<std::unique_ptr<KqueuePoller>> Create();
  ~KqueuePoller() override;

  absl::Status Add(int fd, Interest interest, uint64_t tag) override;
  absl::Status Modify(int fd, Interest interest, uint64_t tag) override;
  absl::Status Remove(int fd) override;
  absl::Span<PollEvent> Wait(int timeout_ms) override;
  void Wakeup() override;
  const char* name() const override { return "kqueue"; }

  // Capacity of the ready-event array (it grows up to kMaxEventsPerWait when a Wait() fills
  // it). For tests.
  size_t event_capacity() const { return ready_.size(); }

 private:
  explicit KqueuePoller(int kqueue_fd);
  // Sets the filters of `fd` to exactly `interest`.
  absl::Status Apply(int fd, Interest interest, uint64_t tag);
  // Submits `count` (at most kMaxChanges) EV_RECEIPT changes; counts the ENOENT results of
  // deletions in `not_found`.
  static constexpr int kMaxChanges = 4;
  absl::Status Submit(int fd, struct kevent* changes, int count, int* not_found);

  bool IsWatched(int fd) const {
    return fd >= 0 && static_cast<size_t>(fd) < watched_.size() && watched_[static_cast<size_t>(fd)];
  }

  const int kqueue_fd_;
  // Loop-thread-only state.
  // Descriptors between Add() and Remove(), by number: one bit each. With no interest a
  // descriptor has no filter, so the kernel cannot tell.
  std::vector<bool> watched_;
  std::vector<struct kevent> ready_;
  std::vector<PollEvent> events_;
};

}  // namespace gev

#endif  // GEV_POLLER_KQUEUE_POLLER_H_

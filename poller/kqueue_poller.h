// The kqueue backend of gev::Poller (macOS, FreeBSD and the other BSDs). See poller/poller.h.
//
// Read and write interest are two kqueue filters, so one descriptor that is both readable and
// writable may be reported as two events with the same tag in one Wait(). Wakeups use an
// EVFILT_USER event with EV_CLEAR, so no descriptor is spent on them.
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
  absl::Span<const PollEvent> Wait(int timeout_ms) override;
  void Wakeup() override;
  const char* name() const override { return "kqueue"; }

  // Capacity of the ready-event array (it grows up to kMaxEventsPerWait when a Wait() fills
  // it). For tests.
  size_t event_capacity() const { return ready_.size(); }

 private:
  explicit KqueuePoller(int kqueue_fd);
  absl::Status Apply(int fd, Interest interest, uint64_t tag, bool is_add);

  const int kqueue_fd_;
  // Loop-thread-only state.
  std::vector<struct kevent> ready_;
  std::vector<PollEvent> events_;
};

}  // namespace gev

#endif  // GEV_POLLER_KQUEUE_POLLER_H_

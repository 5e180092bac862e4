// The epoll backend of gev::Poller (Linux). See poller/poller.h for the contract.
//
// Wakeups go through an eventfd that is registered with the epoll set and drained inside Wait().
// The ready-event array starts small and doubles whenever a Wait() fills it.
//
// Thread safety: as gev::Poller — Wakeup() from any thread, the rest from the loop thread.

#ifndef GEV_POLLER_EPOLL_POLLER_H_
#define GEV_POLLER_EPOLL_POLLER_H_

#include <sys/epoll.h>

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "poller/poller.h"

namespace gev {

class EpollPoller final : public Poller {
 public:
  static absl::StatusOr<std::unique_ptr<EpollPoller>> Create();
  ~EpollPoller() override;

  absl::Status Add(int fd, Interest interest, uint64_t tag) override;
  absl::Status Modify(int fd, Interest interest, uint64_t tag) override;
  absl::Status Remove(int fd) override;
  absl::Span<PollEvent> Wait(int timeout_ms) override;
  void Wakeup() override;
  const char* name() const override { return "epoll"; }

  // Capacity of the ready-event array (it grows up to kMaxEventsPerWait when a Wait() fills
  // it). For tests.
  size_t event_capacity() const { return ready_.size(); }

 private:
  EpollPoller(int epoll_fd, int wakeup_fd);
  absl::Status Control(int op, int fd, Interest interest, uint64_t tag);

  const int epoll_fd_;
  const int wakeup_fd_;
  // Loop-thread-only state.
  std::vector<epoll_event> ready_;
  std::vector<PollEvent> events_;
};

}  // namespace gev

#endif  // GEV_POLLER_EPOLL_POLLER_H_

#include "poller/epoll_poller.h"
#include "poller/poller.h"

namespace gev {

absl::StatusOr<std::unique_ptr<Poller>> CreateDefaultPoller() {
  absl::StatusOr<std::unique_ptr<EpollPoller>> poller = EpollPoller::Create();
  if (!poller.ok()) return poller.status();
  return std::unique_ptr<Poller>(std::move(*poller));
}

}  // namespace gev

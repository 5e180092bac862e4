#include "poller/kqueue_poller.h"
#include "poller/poller.h"

namespace gev {

absl::StatusOr<std::unique_ptr<Poller>> CreateDefaultPoller() {
  absl::StatusOr<std::unique_ptr<KqueuePoller>> poller = KqueuePoller::Create();
  if (!poller.ok()) return poller.status();
  return std::unique_ptr<Poller>(std::move(*poller));
}

}  // namespace gev

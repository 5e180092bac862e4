// The poller backends of the libkqueue configuration (Linux, --config=libkqueue): both, so the
// typed tests hold each to the same contract.
#ifndef GEV_POLLER_TESTING_LIBKQUEUE_POLLER_BACKENDS_H_
#define GEV_POLLER_TESTING_LIBKQUEUE_POLLER_BACKENDS_H_

#include "gtest/gtest.h"
#include "poller/epoll_poller.h"
#include "poller/kqueue_poller.h"

namespace gev::poller_testing {
using PollerBackends = ::testing::Types<EpollPoller, KqueuePoller>;
}  // namespace gev::poller_testing

#endif  // GEV_POLLER_TESTING_LIBKQUEUE_POLLER_BACKENDS_H_

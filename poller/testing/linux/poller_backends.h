// The poller backends this platform builds, for the backend-agnostic typed tests (Linux).
#ifndef GEV_POLLER_TESTING_LINUX_POLLER_BACKENDS_H_
#define GEV_POLLER_TESTING_LINUX_POLLER_BACKENDS_H_

#include "gtest/gtest.h"
#include "poller/epoll_poller.h"

namespace gev::poller_testing {
using PollerBackends = ::testing::Types<EpollPoller>;
}  // namespace gev::poller_testing

#endif  // GEV_POLLER_TESTING_LINUX_POLLER_BACKENDS_H_

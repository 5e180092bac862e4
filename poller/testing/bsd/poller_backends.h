// The poller backends this platform builds, for the backend-agnostic typed tests (BSD/macOS).
#ifndef GEV_POLLER_TESTING_BSD_POLLER_BACKENDS_H_
#define GEV_POLLER_TESTING_BSD_POLLER_BACKENDS_H_

#include "gtest/gtest.h"
#include "poller/kqueue_poller.h"

namespace gev::poller_testing {
using PollerBackends = ::testing::Types<KqueuePoller>;
}  // namespace gev::poller_testing

#endif  // GEV_POLLER_TESTING_BSD_POLLER_BACKENDS_H_

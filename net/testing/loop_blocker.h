// -----------------------------------------------------------------------------
// File: net/testing/loop_blocker.h
// -----------------------------------------------------------------------------
//
// Test helper: holds an event loop's thread in a task, so that several events become ready
// meanwhile and are reported in one poll batch when it lets go.
//
//   std::promise<void> release = gev::testing::BlockLoop(loop);
//   ...make several sockets ready...
//   release.set_value();
//
// Thread safety: call from any thread but the loop's own (it waits for the task to start).

#ifndef GEV_NET_TESTING_LOOP_BLOCKER_H_
#define GEV_NET_TESTING_LOOP_BLOCKER_H_

#include <future>

#include "eventloop/event_loop.h"

namespace gev::testing {

// Returns once `loop` runs the blocking task; the loop goes on when the promise is set.
inline std::promise<void> BlockLoop(EventLoop& loop) {
  std::promise<void> release;
  std::promise<void> entered;
  // A loop that has finished refuses the task, and then nothing waits on `entered`.
  if (!loop.QueueInLoop([&entered, released = release.get_future().share()] {
            entered.set_value();
            released.wait();
          })) {
    return release;
  }
  entered.get_future().wait();
  return release;
}

}  // namespace gev::testing

#endif  // GEV_NET_TESTING_LOOP_BLOCKER_H_

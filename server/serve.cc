#include "server/serve.h"

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <thread>

#include "net/socket_ops.h"

namespace gev {

absl::Status ServeUntilSignal(Server& server) {
  (void)sockets::RaiseOpenFileLimit();  // Best effort: serving fewer clients still works.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  // Blocked here, inherited by every thread the server starts: only sigwait() sees them.
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::atomic<bool> serving{true};
  std::thread waiter([&] {
    int signal_number = 0;
    sigwait(&signals, &signal_number);
    if (serving.load()) server.Stop();
  });
  std::printf("listening on %s\n", server.ListenAddress().ToString().c_str());
  std::fflush(stdout);
  absl::Status served = server.Start();
  serving.store(false);
  pthread_kill(waiter.native_handle(), SIGTERM);  // Ends the wait if no signal came.
  waiter.join();
  return served;
}

}  // namespace gev

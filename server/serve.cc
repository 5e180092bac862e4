#include "server/serve.h"

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <string>
#include <thread>

#include "net/socket_ops.h"

namespace gev {

std::string ListeningLine(const Server& server) {
  return "listening on " + server.ListenSocketAddress().ToString();
}

namespace {

template <typename AnyServer>
absl::Status Serve(AnyServer& server, const std::string& listening_line) {
  (void)sockets::RaiseOpenFileLimit();  // Best effort: serving fewer clients still works.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  // Blocked here, inherited by every thread the server starts: only sigwait() sees them.
  sigset_t previous;
  pthread_sigmask(SIG_BLOCK, &signals, &previous);

  std::atomic<bool> serving{true};
  std::thread waiter([&] {
    int signal_number = 0;
    sigwait(&signals, &signal_number);
    if (serving.load()) server.Stop();
  });
  std::printf("%s\n", listening_line.c_str());
  std::fflush(stdout);
  absl::Status served = server.Start();
  serving.store(false);
  pthread_kill(waiter.native_handle(), SIGTERM);  // Ends the wait if no signal came.
  waiter.join();
  // The waiter has taken its SIGTERM; a signal that came meanwhile is still pending here and
  // would arrive once unblocked, so it is taken first.
  timespec no_wait = {0, 0};
  int taken;
  while ((taken = sigtimedwait(&signals, nullptr, &no_wait)) > 0 || (taken < 0 && errno == EINTR)) {
  }
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  return served;
}

}  // namespace

absl::Status ServeUntilSignal(Server& server) { return Serve(server, ListeningLine(server)); }

absl::Status ServeUntilSignal(DatagramServer& server) {
  const SocketAddress& address = server.ListenSocketAddress();
  return Serve(server, std::string("listening on ") + (address.is_unix() ? "unixgram " : "udp ") +
                           address.ToString());
}

}  // namespace gev

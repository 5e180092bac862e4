#include "server/serve.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "eventloop/log.h"
#include "net/socket_ops.h"

namespace gev {

std::string ListeningLine(const Server& server) {
  return "listening on " + server.ListenSocketAddress().ToString();
}

namespace {

// Starts this program again as a child with `argv`, with the signal mask it had before
// serving. Returns the child's pid, or -1.
// The program is the file this process was started from, found again by its path: a binary
// replaced there (an upgrade) is the one that runs. (/proc/self/exe names the file, with
// " (deleted)" appended once it has been replaced.)
pid_t StartAgain(const std::vector<std::string>& argv, const sigset_t& mask) {
  char link[4096];
  ssize_t length = ::readlink("/proc/self/exe", link, sizeof(link) - 1);
  std::string program = length > 0 ? std::string(link, static_cast<size_t>(length))
                                   : std::string("/proc/self/exe");
  constexpr absl::string_view kDeleted = " (deleted)";
  if (absl::EndsWith(program, kDeleted)) program.resize(program.size() - kDeleted.size());
  // Built before fork: the child may only call async-signal-safe functions until exec.
  std::vector<char*> arguments;
  for (const std::string& argument : argv) arguments.push_back(const_cast<char*>(argument.c_str()));
  arguments.push_back(nullptr);
  pid_t child = ::fork();
  if (child == 0) {
    ::sigprocmask(SIG_SETMASK, &mask, nullptr);
    ::execv(program.c_str(), arguments.data());
    ::_exit(127);
  }
  return child;
}

template <typename AnyServer>
absl::Status Serve(AnyServer& server, const std::string& listening_line,
                   const std::vector<std::string>& restart_argv, const std::string& handoff_path) {
  (void)sockets::RaiseOpenFileLimit();  // Best effort: serving fewer clients still works.
  const bool restarts = !restart_argv.empty();
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  if (restarts) {
    sigaddset(&signals, SIGHUP);
    sigaddset(&signals, SIGCHLD);
  }
  // Blocked here, inherited by every thread the server starts: only sigwait() sees them.
  sigset_t previous;
  pthread_sigmask(SIG_BLOCK, &signals, &previous);

  std::atomic<bool> serving{true};
  std::thread waiter([&] {
    pid_t successor = 0;  // A restart under way: the child that is to take over.
    while (true) {
      int signal_number = 0;
      sigwait(&signals, &signal_number);
      if (!serving.load()) return;
      if (signal_number == SIGHUP) {
        if (successor > 0) {
          Log(LogSeverity::kWarning,
              absl::StrCat("SIGHUP ignored: pid ", successor, " is taking over already"));
          continue;
        }
        successor = StartAgain(restart_argv, previous);
        Log(LogSeverity::kInfo, successor > 0 ? absl::StrCat("restarting: pid ", successor,
                                                             " takes over ", handoff_path)
                                              : std::string("restarting: fork failed"));
        if (successor < 0) successor = 0;
        continue;
      }
      if (signal_number == SIGCHLD) {
        int status = 0;
        pid_t ended;
        while ((ended = ::waitpid(-1, &status, WNOHANG)) > 0) {
          if (ended != successor) continue;
          successor = 0;
          Log(LogSeverity::kWarning,
              absl::StrCat("restart: pid ", ended, " ended (",
                           WIFEXITED(status) ? absl::StrCat("exit ", WEXITSTATUS(status))
                                             : absl::StrCat("signal ", WTERMSIG(status)),
                           ") before taking over; still serving"));
        }
        continue;
      }
      server.Stop();
      return;
    }
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

absl::Status ServeUntilSignal(Server& server) {
  return Serve(server, ListeningLine(server), {}, "");
}

absl::Status ServeUntilSignal(Server& server, const ServeOptions& options) {
  if (!options.restart_argv.empty() && server.options().handoff_path.empty()) {
    return absl::InvalidArgumentError(
        "restarting in place needs ServerOptions::handoff_path, to hand the listeners over");
  }
  return Serve(server, ListeningLine(server), options.restart_argv,
               server.options().handoff_path);
}

absl::Status ServeUntilSignal(DatagramServer& server) {
  const SocketAddress& address = server.ListenSocketAddress();
  return Serve(server,
               std::string("listening on ") + (address.is_unix() ? "unixgram " : "udp ") +
                   address.ToString(),
               {}, "");
}

}  // namespace gev

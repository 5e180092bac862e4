#include "server/serve.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

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
constexpr char kRestartVariable[] = "GEV_RESTART_OF";

// The program is the file this process was started from, found again by its path: a binary
// replaced there (an upgrade) is the one that runs. (/proc/self/exe names the file, with
// " (deleted)" appended once it has been replaced.) The child's environment says it is a
// restart (TakeRestartMarker). Returns the child's pid, or -1.
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
  std::string marker = absl::StrCat(kRestartVariable, "=", ::getpid());
  std::vector<char*> environment;
  for (char** variable = environ; *variable != nullptr; ++variable) {
    if (!absl::StartsWith(*variable, absl::StrCat(kRestartVariable, "="))) {
      environment.push_back(*variable);
    }
  }
  environment.push_back(marker.data());
  environment.push_back(nullptr);
  pid_t child = ::fork();
  if (child == 0) {
    ::sigprocmask(SIG_SETMASK, &mask, nullptr);
    ::execve(program.c_str(), arguments.data(), environment.data());
    ::_exit(127);
  }
  return child;
}

std::string ExitDescription(int status) {
  return WIFEXITED(status) ? absl::StrCat("exit ", WEXITSTATUS(status))
                           : absl::StrCat("signal ", WTERMSIG(status));
}

bool WritePidFile(const std::string& path) {
  // Written whole under another name, then renamed: a reader never sees half a pid.
  std::string partial = path + ".partial";
  std::FILE* file = std::fopen(partial.c_str(), "w");
  bool written = file != nullptr && std::fprintf(file, "%d\n", static_cast<int>(::getpid())) > 0;
  if (file != nullptr) written = std::fclose(file) == 0 && written;
  return written && std::rename(partial.c_str(), path.c_str()) == 0;
}

// `restartable`: the server SIGHUP restarts (with `options.restart_argv`); null for none.
template <typename AnyServer>
absl::Status Serve(AnyServer& server, const std::string& listening_line,
                   const ServeOptions& options, Server* restartable) {
  (void)sockets::RaiseOpenFileLimit();  // Best effort: serving fewer clients still works.
  const bool restarts = restartable != nullptr && !options.restart_argv.empty();
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  if (restarts) {
    sigaddset(&signals, SIGHUP);
    sigaddset(&signals, SIGCHLD);
    // Ignored, children would be reaped unseen, and a restart that failed never noticed.
    struct sigaction action {};
    action.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &action, nullptr);
  }
  // Blocked here, inherited by every thread the server starts: only sigwait() sees them.
  sigset_t previous;
  pthread_sigmask(SIG_BLOCK, &signals, &previous);
  if (!options.pid_file.empty() && !WritePidFile(options.pid_file)) {
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    return absl::UnavailableError("cannot write the pid file " + options.pid_file);
  }

  std::atomic<bool> serving{true};
  std::thread waiter([&] {
    pid_t successor = 0;  // A restart under way: the child that is to take over.
    while (true) {
      int signal_number = 0;
      sigwait(&signals, &signal_number);
      if (!serving.load()) return;
      if (signal_number == SIGHUP) {
        const std::string& path = restartable->options().handoff_path;
        if (successor > 0 || restartable->HandedOver()) {
          Log(LogSeverity::kWarning, "SIGHUP ignored: a restart is under way already");
        } else if (!restartable->ServesHandoff()) {
          // The child would find nobody to take the listeners from.
          Log(LogSeverity::kWarning, "SIGHUP ignored: " + path + " is not served (yet)");
        } else {
          successor = StartAgain(options.restart_argv, previous);
          Log(successor > 0 ? LogSeverity::kInfo : LogSeverity::kError,
              successor > 0 ? absl::StrCat("restarting: pid ", successor, " takes over ", path)
                            : std::string("restarting: fork failed"));
          if (successor < 0) successor = 0;
        }
        continue;
      }
      if (signal_number == SIGCHLD) {
        int status = 0;
        // Only the restart's child: the program's other children are its own business.
        if (successor > 0 && ::waitpid(successor, &status, WNOHANG) == successor) {
          Log(LogSeverity::kWarning,
              restartable->HandedOver()
                  ? absl::StrCat("restart: pid ", successor, ", which took over, ended (",
                                 ExitDescription(status), ")")
                  : absl::StrCat("restart: pid ", successor, " ended (", ExitDescription(status),
                                 ") before taking over; still serving"));
          successor = 0;
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

absl::Status ServeUntilSignal(Server& server) { return ServeUntilSignal(server, ServeOptions()); }

absl::Status ServeUntilSignal(Server& server, const ServeOptions& options) {
  if (!options.restart_argv.empty() && server.options().handoff_path.empty()) {
    return absl::InvalidArgumentError(
        "restarting in place needs ServerOptions::handoff_path, to hand the listeners over");
  }
  return Serve(server, ListeningLine(server), options, &server);
}

absl::Status ServeUntilSignal(DatagramServer& server) {
  const SocketAddress& address = server.ListenSocketAddress();
  return Serve(server,
               std::string("listening on ") + (address.is_unix() ? "unixgram " : "udp ") +
                   address.ToString(),
               ServeOptions(), nullptr);
}

bool TakeRestartMarker() {
  bool restarted = ::getenv(kRestartVariable) != nullptr;
  ::unsetenv(kRestartVariable);
  return restarted;
}

}  // namespace gev

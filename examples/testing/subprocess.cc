#include "examples/testing/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace gev::examples {
namespace {

pid_t Spawn(const std::string& path, const std::vector<std::string>& args, int stdout_fd,
            int descriptor_limit) {
  std::vector<std::string> argv_storage = {path};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& arg : argv_storage) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    if (stdout_fd >= 0) ::dup2(stdout_fd, STDOUT_FILENO);
    if (descriptor_limit > 0) {
      rlimit limit{static_cast<rlim_t>(descriptor_limit), static_cast<rlim_t>(descriptor_limit)};
      if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) ::_exit(126);
    }
    ::execv(path.c_str(), argv.data());
    ::_exit(127);
  }
  return pid;
}

// Waits up to `timeout_ms` for `pid`; its exit code or 128 + signal, or -1 on timeout.
int WaitWithTimeout(pid_t pid, int timeout_ms) {
  for (int waited = 0; waited <= timeout_ms; waited += 5) {
    int status = 0;
    pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) {
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return -1;
}

}  // namespace

absl::StatusOr<ExampleProcess> ExampleProcess::Start(const std::string& path,
                                                     const std::vector<std::string>& args,
                                                     int descriptor_limit) {
  absl::StatusOr<ExampleProcess> started = StartClient(path, args, descriptor_limit);
  if (!started.ok()) return started.status();
  ExampleProcess process = std::move(*started);
  absl::StatusOr<std::string> listening = process.WaitForLine("listening on ", 10000);
  if (!listening.ok()) {
    return absl::Status(listening.status().code(),
                        absl::StrCat(path, " printed no address: ", listening.status().message()));
  }
  const std::string& line = *listening;
  size_t colon = line.rfind(':');
  int port = 0;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(absl::string_view(line).substr(colon + 1), &port)) {
    return absl::InternalError(absl::StrCat("no port in: ", line));
  }
  bool v6 = line.find('[') != std::string::npos;
  process.address_ = InetAddress::Loopback(static_cast<uint16_t>(port), v6 ? AF_INET6 : AF_INET);
  return process;
}

absl::StatusOr<ExampleProcess> ExampleProcess::StartClient(const std::string& path,
                                                           const std::vector<std::string>& args,
                                                           int descriptor_limit) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return absl::ErrnoToStatus(errno, "pipe2");
  pid_t pid = Spawn(path, args, pipe_fds[1], descriptor_limit);
  ::close(pipe_fds[1]);
  if (pid < 0) {
    ::close(pipe_fds[0]);
    return absl::ErrnoToStatus(errno, "fork");
  }
  return ExampleProcess(pid, pipe_fds[0]);
}

absl::StatusOr<std::string> ExampleProcess::WaitForLine(const std::string& text, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    size_t newline;
    while ((newline = unread_.find('\n')) != std::string::npos) {
      std::string line = unread_.substr(0, newline);
      unread_.erase(0, newline + 1);
      if (line.find(text) != std::string::npos) return line;
    }
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    deadline - std::chrono::steady_clock::now())
                                    .count());
    pollfd readable{stdout_fd_, POLLIN, 0};
    if (left <= 0 || ::poll(&readable, 1, left) <= 0) {
      return absl::DeadlineExceededError(absl::StrCat("no line with \"", text, "\""));
    }
    char buffer[4096];
    ssize_t n = ::read(stdout_fd_, buffer, sizeof(buffer));
    if (n <= 0) return absl::UnavailableError(absl::StrCat("exited before \"", text, "\""));
    unread_.append(buffer, static_cast<size_t>(n));
  }
}

ExampleProcess::ExampleProcess(ExampleProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      stdout_fd_(std::exchange(other.stdout_fd_, -1)),
      address_(other.address_),
      unread_(std::move(other.unread_)) {}

ExampleProcess::~ExampleProcess() {
  if (pid_ > 0) Terminate();
  if (stdout_fd_ >= 0) ::close(stdout_fd_);
}

int ExampleProcess::Terminate() {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  int code = WaitWithTimeout(pid_, 10000);
  if (code < 0) {
    ::kill(pid_, SIGKILL);
    code = WaitWithTimeout(pid_, 10000);
  }
  pid_ = -1;
  return code;
}

int RunToCompletion(const std::string& path, const std::vector<std::string>& args,
                    int timeout_seconds) {
  pid_t pid = Spawn(path, args, -1, 0);
  if (pid < 0) return -1;
  int code = WaitWithTimeout(pid, timeout_seconds * 1000);
  if (code < 0) {
    ::kill(pid, SIGKILL);
    WaitWithTimeout(pid, 10000);
  }
  return code;
}

}  // namespace gev::examples

// raw_epoll_echo: the baseline for gev's echo benchmarks. A minimal hand-written,
// level-triggered epoll echo server, no library: one thread, or N threads each with its own
// SO_REUSEPORT listener and epoll set. It reads into one per-thread buffer and writes straight
// back; only a short write keeps the rest per connection (and stops reading that peer until it
// is written), so no byte is lost and the hot path allocates nothing. It stands in for the
// physical limit of a readiness-based server on this machine.
//
//   tools/bazel run --config=opt //tools:raw_epoll_echo -- --port=1834 --threads=2
//
// Prints "listening on <address>" once every thread listens; runs until SIGINT/SIGTERM.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"

ABSL_FLAG(int, port, 1834, "TCP port (0: any free port)");
ABSL_FLAG(int, threads, 1, "threads, each with its own SO_REUSEPORT listener");

namespace {

std::atomic<bool> stopping{false};

struct Pending {
  std::string bytes;  // Echo bytes the socket did not take yet; empty almost always.
  size_t offset = 0;
};

int Listen(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_ANY);
  address.sin_port = htons(static_cast<uint16_t>(port));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::listen(fd, SOMAXCONN) != 0) {
    std::fprintf(stderr, "error: bind/listen port %d: %s\n", port, std::strerror(errno));
    std::exit(1);
  }
  return fd;
}

int BoundPort(int fd) {
  sockaddr_in address{};
  socklen_t length = sizeof(address);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  return ntohs(address.sin_port);
}

void Serve(int listen_fd) {
  int epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event listen_event{EPOLLIN, {.fd = listen_fd}};
  ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listen_fd, &listen_event);
  std::vector<Pending> pending;  // Indexed by descriptor.
  static thread_local char buffer[64 * 1024];
  epoll_event events[256];

  auto close_connection = [&](int fd) {
    ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, nullptr);
    ::close(fd);
    if (static_cast<size_t>(fd) < pending.size()) pending[fd] = Pending();
  };
  // Writes what is pending; true when all of it went.
  auto flush = [&](int fd) {
    Pending& p = pending[fd];
    while (p.offset < p.bytes.size()) {
      ssize_t n = ::write(fd, p.bytes.data() + p.offset, p.bytes.size() - p.offset);
      if (n < 0) return false;
      p.offset += static_cast<size_t>(n);
    }
    p = Pending();
    return true;
  };

  while (!stopping.load(std::memory_order_relaxed)) {
    int ready = ::epoll_wait(epoll_fd, events, 256, 100);
    for (int i = 0; i < ready; ++i) {
      int fd = events[i].data.fd;
      if (fd == listen_fd) {
        while (true) {
          int client = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (client < 0) break;
          int on = 1;
          ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
          if (static_cast<size_t>(client) >= pending.size()) pending.resize(client * 2 + 1);
          epoll_event event{EPOLLIN, {.fd = client}};
          ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, client, &event);
        }
        continue;
      }
      if (events[i].events & EPOLLOUT) {
        if (flush(fd)) {
          epoll_event event{EPOLLIN, {.fd = fd}};
          ::epoll_ctl(epoll_fd, EPOLL_CTL_MOD, fd, &event);
        } else if (errno != EAGAIN) {
          close_connection(fd);
        }
        continue;
      }
      ssize_t n = ::read(fd, buffer, sizeof(buffer));
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        close_connection(fd);
        continue;
      }
      if (n < 0) continue;
      ssize_t written = ::write(fd, buffer, static_cast<size_t>(n));
      if (written == n) continue;
      if (written < 0 && errno != EAGAIN) {
        close_connection(fd);
        continue;
      }
      size_t done = written < 0 ? 0 : static_cast<size_t>(written);
      pending[fd].bytes.assign(buffer + done, static_cast<size_t>(n) - done);
      pending[fd].offset = 0;
      epoll_event event{EPOLLOUT, {.fd = fd}};  // Stop reading until the rest is out.
      ::epoll_ctl(epoll_fd, EPOLL_CTL_MOD, fd, &event);
    }
  }
  ::close(epoll_fd);
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Baseline epoll echo server. Usage: --port=1834 --threads=2");
  absl::ParseCommandLine(argc, argv);
  ::signal(SIGPIPE, SIG_IGN);
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
  int threads = std::max(1, absl::GetFlag(FLAGS_threads));
  std::vector<int> listeners = {Listen(absl::GetFlag(FLAGS_port))};
  int port = BoundPort(listeners[0]);
  for (int i = 1; i < threads; ++i) listeners.push_back(Listen(port));

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::vector<std::thread> workers;
  for (int fd : listeners) workers.emplace_back(Serve, fd);
  std::printf("listening on 0.0.0.0:%d\n", port);
  std::fflush(stdout);
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  stopping.store(true);
  for (auto& worker : workers) worker.join();
  return 0;
}

// A steady churn of short echo connections, every byte checked: each of --connections threads
// connects, sends --exchanges messages of 1 to --max_message bytes (a pattern that differs per
// connection and message) and reads each back whole, closes, and connects again, until
// --duration passes or SIGINT/SIGTERM comes. For tools/restart_test.py: a restart under this
// load must cost no connect, no reset and no byte.
//
//   tools/bazel run --config=opt //tools:churn_load -- --address=127.0.0.1:1833 --duration=10s
//
// The summary on stdout, one line: connections=N exchanges=N bytes=N failed_connects=N
// resets=N truncated=N mismatched=N timeouts=N longest_connect_ms=F longest_gap_ms=F. The
// longest connect is from connect() to the first echo's last byte (a client that waited in a
// backlog while no process accepted); the longest gap is the longest time no new connection
// had its first echo, over all threads. Exit status 0 when every count of a failure is 0.

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/time/time.h"
#include "net/inet_address.h"
#include "tools/bench_clock.h"

ABSL_FLAG(std::string, address, "127.0.0.1:1833", "the echo server");
ABSL_FLAG(int, connections, 8, "concurrent clients (threads)");
ABSL_FLAG(int, exchanges, 3, "messages per connection before it closes");
ABSL_FLAG(int, max_message, 16384, "largest message, bytes");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(10), "how long to run (or until a signal)");
ABSL_FLAG(absl::Duration, io_timeout, absl::Seconds(10),
          "longest wait for a connect or an echo before it counts as a timeout");

namespace {

std::atomic<bool> stopping{false};
// Failures described on stderr, the first few only: a reader that only looks at the end (a
// pipe nobody drains meanwhile) must not stall the clients.
std::atomic<int> described{0};
constexpr int kMostDescribed = 20;

template <typename... Args>
void Describe(const char* format, Args... args) {
  if (described.fetch_add(1) < kMostDescribed) std::fprintf(stderr, format, args...);
}

void OnSignal(int) { stopping.store(true); }

struct Counts {
  uint64_t connections = 0;
  uint64_t exchanges = 0;
  uint64_t bytes = 0;
  uint64_t failed_connects = 0;
  uint64_t resets = 0;
  uint64_t truncated = 0;
  uint64_t mismatched = 0;
  uint64_t timeouts = 0;
  uint64_t longest_connect_ns = 0;
};

// Times at which a connection had its first echo, every thread's, for the longest gap.
std::mutex firsts_mutex;
std::vector<uint64_t> first_echoes;

enum class Outcome { kOk, kReset, kTruncated, kTimeout };

Outcome Classify(int error) {
  if (error == ETIMEDOUT || error == EAGAIN) return Outcome::kTimeout;
  return Outcome::kReset;  // ECONNRESET, EPIPE and the like.
}

bool WaitFor(int fd, short events, int timeout_ms) {
  pollfd waiter{fd, events, 0};
  int ready;
  do {
    ready = ::poll(&waiter, 1, timeout_ms);
  } while (ready < 0 && errno == EINTR);
  return ready == 1;
}

Outcome SendAll(int fd, const std::string& data, int timeout_ms) {
  size_t sent = 0;
  while (sent < data.size()) {
    ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      if (!WaitFor(fd, POLLOUT, timeout_ms)) return Outcome::kTimeout;
      continue;
    }
    return Classify(errno);
  }
  return Outcome::kOk;
}

Outcome ReceiveExactly(int fd, std::string* out, size_t n, int timeout_ms) {
  out->resize(n);
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::recv(fd, out->data() + got, n - got, 0);
    if (r > 0) {
      got += static_cast<size_t>(r);
      continue;
    }
    if (r == 0) return Outcome::kTruncated;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      if (!WaitFor(fd, POLLIN, timeout_ms)) return Outcome::kTimeout;
      continue;
    }
    return Classify(errno);
  }
  return Outcome::kOk;
}

void Count(Outcome outcome, Counts* counts) {
  switch (outcome) {
    case Outcome::kOk:
      break;
    case Outcome::kReset:
      ++counts->resets;
      break;
    case Outcome::kTruncated:
      ++counts->truncated;
      break;
    case Outcome::kTimeout:
      ++counts->timeouts;
      break;
  }
}

void Client(int index, const gev::InetAddress& server, uint64_t end_ns, Counts* counts) {
  std::mt19937 random(static_cast<uint32_t>(index * 7919 + 1));
  std::uniform_int_distribution<int> sizes(1, absl::GetFlag(FLAGS_max_message));
  const int exchanges = absl::GetFlag(FLAGS_exchanges);
  const int timeout_ms = static_cast<int>(absl::ToInt64Milliseconds(absl::GetFlag(FLAGS_io_timeout)));
  std::string message;
  std::string echoed;
  while (!stopping.load() && gev::bench::NowNs() < end_ns) {
    uint64_t started = gev::bench::NowNs();
    int fd = ::socket(server.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      ++counts->failed_connects;
      continue;
    }
    int one = 1;
    (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));  // Latency only.
    int error = 0;
    if (::connect(fd, server.sockaddr(), server.length()) != 0) error = errno;
    if (error == EINPROGRESS) {
      error = WaitFor(fd, POLLOUT, timeout_ms) ? 0 : ETIMEDOUT;
      socklen_t length = sizeof(error);
      if (error == 0) ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
    }
    if (error != 0) {
      if (error == ETIMEDOUT) {
        ++counts->timeouts;
      } else {
        ++counts->failed_connects;  // Refused: nobody listened.
      }
      Describe("connect: %s\n", strerror(error));
      ::close(fd);
      continue;
    }
    ++counts->connections;
    Outcome outcome = Outcome::kOk;
    for (int i = 0; i < exchanges && outcome == Outcome::kOk; ++i) {
      size_t size = static_cast<size_t>(sizes(random));
      message.resize(size);
      uint32_t seed = static_cast<uint32_t>(random());
      for (size_t b = 0; b < size; ++b) message[b] = static_cast<char>('a' + (seed + b * 31) % 26);
      outcome = SendAll(fd, message, timeout_ms);
      if (outcome == Outcome::kOk) outcome = ReceiveExactly(fd, &echoed, size, timeout_ms);
      if (outcome != Outcome::kOk) break;
      if (echoed != message) {
        ++counts->mismatched;
        break;
      }
      ++counts->exchanges;
      counts->bytes += size;
      if (i == 0) {
        uint64_t now = gev::bench::NowNs();
        counts->longest_connect_ns = std::max(counts->longest_connect_ns, now - started);
        std::lock_guard<std::mutex> lock(firsts_mutex);
        first_echoes.push_back(now);
      }
    }
    if (outcome != Outcome::kOk) {
      Describe("exchange: %s\n",
                   outcome == Outcome::kReset       ? strerror(errno)
                   : outcome == Outcome::kTruncated ? "closed early"
                                                    : "timed out");
    }
    Count(outcome, counts);
    ::close(fd);
  }
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Echo connection churn, every byte checked. "
                               "Usage: churn_load --address=127.0.0.1:1833 --duration=10s");
  absl::ParseCommandLine(argc, argv);
  absl::StatusOr<gev::InetAddress> server = gev::InetAddress::Parse(absl::GetFlag(FLAGS_address));
  if (!server.ok()) {
    std::fprintf(stderr, "--address: %s\n", server.status().ToString().c_str());
    return 2;
  }
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);

  const int threads = std::max(1, absl::GetFlag(FLAGS_connections));
  const uint64_t start_ns = gev::bench::NowNs();
  const uint64_t end_ns =
      start_ns + static_cast<uint64_t>(absl::ToInt64Nanoseconds(absl::GetFlag(FLAGS_duration)));
  std::vector<Counts> counts(static_cast<size_t>(threads));
  std::vector<std::thread> clients;
  for (int i = 0; i < threads; ++i) {
    clients.emplace_back(Client, i, *server, end_ns, &counts[static_cast<size_t>(i)]);
  }
  for (std::thread& client : clients) client.join();
  const uint64_t finished_ns = gev::bench::NowNs();

  Counts total;
  for (const Counts& c : counts) {
    total.connections += c.connections;
    total.exchanges += c.exchanges;
    total.bytes += c.bytes;
    total.failed_connects += c.failed_connects;
    total.resets += c.resets;
    total.truncated += c.truncated;
    total.mismatched += c.mismatched;
    total.timeouts += c.timeouts;
    total.longest_connect_ns = std::max(total.longest_connect_ns, c.longest_connect_ns);
  }
  std::sort(first_echoes.begin(), first_echoes.end());
  uint64_t longest_gap_ns = 0;
  uint64_t previous = start_ns;
  for (uint64_t at : first_echoes) {
    longest_gap_ns = std::max(longest_gap_ns, at - previous);
    previous = at;
  }
  longest_gap_ns = std::max(longest_gap_ns, finished_ns - previous);
  std::printf(
      "connections=%llu exchanges=%llu bytes=%llu failed_connects=%llu resets=%llu "
      "truncated=%llu mismatched=%llu timeouts=%llu longest_connect_ms=%.1f "
      "longest_gap_ms=%.1f\n",
      static_cast<unsigned long long>(total.connections),
      static_cast<unsigned long long>(total.exchanges),
      static_cast<unsigned long long>(total.bytes),
      static_cast<unsigned long long>(total.failed_connects),
      static_cast<unsigned long long>(total.resets),
      static_cast<unsigned long long>(total.truncated),
      static_cast<unsigned long long>(total.mismatched),
      static_cast<unsigned long long>(total.timeouts), total.longest_connect_ns / 1e6,
      longest_gap_ns / 1e6);
  bool clean = total.failed_connects + total.resets + total.truncated + total.mismatched +
                   total.timeouts ==
               0;
  return clean && total.connections > 0 ? 0 : 1;
}

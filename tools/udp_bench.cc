// udp_bench: a UDP echo load generator that checks every datagram it gets back.
//
//   tools/bazel run --config=opt //tools:udp_bench -- --addr=127.0.0.1:1833 --clients=16
//       --window=8 --size=512 --duration=5s [--server_pid=PID] [--gso] [--json]
//
// Each of --clients sockets (each its own port, so that a server with one SO_REUSEPORT socket
// per loop gets them spread) is connected to the server and keeps --window datagrams of --size
// bytes in flight: as echoes come back it sends as many new ones, with one sendmmsg per socket
// (with --gso, as one UDP_SEGMENT message). Every datagram carries its socket's number and its
// sequence number and bytes that depend on both; an echo must be the whole datagram, and come
// in order. A datagram that does not come back is lost: one whose successor came back first,
// or one still in flight on a socket that has heard nothing for --stall_timeout (its window is
// then sent afresh; one of those that comes back after all is counted late, not lost). Lost
// datagrams are counted, not errors (UDP may drop them: a full receive buffer), and more than
// --max_loss of them (a share) fails the run; a wrong, short, repeated or reordered echo is an
// error and fails it.
//
// With --server_pid, the server's CPU time (utime + stime of all its threads, from
// /proc/PID/stat) over the timed window is reported per echo and as a share of one CPU; the
// client's own share (getrusage) says whether the client bounded the rate. With --syscalls too,
// `perf stat -e raw_syscalls:sys_enter -p PID` counts every system call the server makes over
// the window (perf starts with it; its attach takes a few milliseconds of the seconds counted),
// reported per echo (one datagram in and one out). One thread runs one epoll loop over all the
// sockets and reads with recvmmsg.

#include <arpa/inet.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/epoll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/time/time.h"
#include "tools/bench_clock.h"

ABSL_FLAG(std::string, addr, "127.0.0.1:1833", "the echo server, IPv4 host:port");
ABSL_FLAG(int, clients, 16, "client sockets");
ABSL_FLAG(int, window, 8, "datagrams in flight per socket");
ABSL_FLAG(int, size, 512, "bytes per datagram (at least 12)");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(5), "timed window");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(1), "untimed load before the window");
ABSL_FLAG(absl::Duration, stall_timeout, absl::Milliseconds(500),
          "a socket that hears nothing this long counts what it has in flight as lost");
ABSL_FLAG(double, max_loss, 0.001, "the share of datagrams lost past which the run fails");
ABSL_FLAG(bool, gso, false, "send each socket's datagrams as one UDP_SEGMENT message");
ABSL_FLAG(int, server_pid, 0, "the server's process, for its CPU time per echo");
ABSL_FLAG(bool, syscalls, false, "with --server_pid: count its system calls with perf stat");
ABSL_FLAG(bool, json, false, "one JSON line instead of text");

namespace {

using gev::bench::NowNs;
using gev::bench::OwnCpuNs;
using gev::bench::ProcessCpuTicks;

// `perf stat` counting the system calls of `pid` until Finish().
class SyscallCounter {
 public:
  bool Start(int pid) {
    char path[] = "/tmp/udp_bench_perf.XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return false;
    close(fd);
    path_ = path;
    child_ = fork();
    if (child_ == 0) {
      const std::string target = std::to_string(pid);
      execlp("perf", "perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", target.c_str(),
             "-o", path_.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    return child_ > 0;
  }
  // The count, or -1 if perf did not give one.
  long long Finish() {
    if (child_ <= 0) return -1;
    kill(child_, SIGINT);
    int status = 0;
    waitpid(child_, &status, 0);
    std::ifstream in(path_);
    std::string line;
    long long count = -1;
    while (std::getline(in, line)) {
      if (line.find("raw_syscalls:sys_enter") == std::string::npos) continue;
      if (!absl::SimpleAtoi(line.substr(0, line.find(',')), &count)) count = -1;
    }
    unlink(path_.c_str());
    return count;
  }

 private:
  std::string path_;
  pid_t child_ = -1;
};

// Datagram `seq` of socket `id`: 4 bytes of id and 8 of seq, then bytes of a random period
// from an offset that depends on both.
constexpr size_t kHeader = 12;
struct Pattern {
  static constexpr size_t kPeriod = 65521;  // A prime: shifts rarely line up.
  std::string data;
  explicit Pattern(size_t size) {
    std::string once(kPeriod, '\0');
    std::mt19937 random(2026);
    for (char& c : once) c = static_cast<char>(random());
    while (data.size() < kPeriod + size) data += once;
  }
  const char* Body(uint32_t id, uint64_t seq) const {
    return data.data() + (id * 7919ull + seq * 131ull) % kPeriod;
  }
};

struct Client {
  int fd = -1;
  uint32_t id = 0;
  uint64_t next_seq = 0;   // The next to send.
  uint64_t expected = 0;   // The next echo due; those before it came back or are lost.
  uint64_t last_heard_ns = 0;
  // The datagrams last given up on as lost (the stall check) that have not come back since:
  // one that comes back late is counted as such, not as an error.
  std::set<uint64_t> given_up;
};

struct Totals {
  uint64_t echoes = 0;  // Verified.
  uint64_t sent = 0;
  uint64_t lost = 0;
  uint64_t late = 0;  // Given up on as lost, then back (and no longer counted as lost).
  uint64_t errors = 0;
};

class Bench {
 public:
  Bench(sockaddr_in server, size_t size, size_t window, bool gso)
      : server_(server), size_(size), window_(window), gso_(gso), pattern_(size) {}

  bool Run(size_t clients, absl::Duration warmup, absl::Duration duration, absl::Duration stall,
           double max_loss, int server_pid, bool count_syscalls);

 private:
  void Error(const Client& client, const std::string& why) {
    if (totals_.errors < 5) fprintf(stderr, "udp_bench: socket %u: %s\n", client.id, why.c_str());
    ++totals_.errors;
  }
  // Sends until `window_` datagrams are in flight (none once draining).
  void Refill(Client& client);
  void Receive(Client& client);
  // An ICMP error (IP_RECVERR): ECONNREFUSED when nothing listens on the server's port. The
  // socket's pending error alone may be taken by a sendmmsg that sent some datagrams, and lost.
  void ReadErrors(Client& client);
  void Verify(Client& client, const char* bytes, size_t length);

  const sockaddr_in server_;
  const size_t size_;
  const size_t window_;
  const bool gso_;
  const Pattern pattern_;
  std::vector<Client> clients_;
  Totals totals_;
  uint64_t now_ns_ = 0;
  bool draining_ = false;  // After the window: what is in flight comes back, nothing new goes.
  // Scratch: one window of datagrams to send, and a batch to receive.
  std::string send_buffer_;
  std::vector<mmsghdr> send_headers_;
  std::vector<iovec> send_iovecs_;
  static constexpr size_t kReceiveBatch = 64;
  std::string receive_buffer_;
  std::vector<mmsghdr> receive_headers_;
  std::vector<iovec> receive_iovecs_;
};

void Bench::Refill(Client& client) {
  const size_t in_flight = static_cast<size_t>(client.next_seq - client.expected);
  if (draining_ || in_flight >= window_) return;
  const size_t count = window_ - in_flight;
  send_buffer_.resize(window_ * size_);
  for (size_t i = 0; i < count; ++i) {
    char* datagram = send_buffer_.data() + i * size_;
    const uint64_t seq = client.next_seq + i;
    std::memcpy(datagram, &client.id, 4);
    std::memcpy(datagram + 4, &seq, 8);
    std::memcpy(datagram + kHeader, pattern_.Body(client.id, seq), size_ - kHeader);
  }
  size_t sent = 0;
  if (gso_ && count > 1) {
    // One message: the kernel cuts it into `count` datagrams of size_.
    iovec iov{send_buffer_.data(), count * size_};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(uint16_t))] = {};
    msghdr header{};
    header.msg_iov = &iov;
    header.msg_iovlen = 1;
    header.msg_control = control;
    header.msg_controllen = sizeof control;
    cmsghdr* cmsg = CMSG_FIRSTHDR(&header);
    cmsg->cmsg_level = IPPROTO_UDP;
    cmsg->cmsg_type = UDP_SEGMENT;
    cmsg->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    const uint16_t segment = static_cast<uint16_t>(size_);
    std::memcpy(CMSG_DATA(cmsg), &segment, sizeof segment);
    const ssize_t n = sendmsg(client.fd, &header, MSG_DONTWAIT);
    if (n == static_cast<ssize_t>(count * size_)) sent = count;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      Error(client, std::string("sendmsg: ") + strerror(errno));
    }
  } else {
    send_headers_.assign(count, mmsghdr{});
    send_iovecs_.resize(count);
    for (size_t i = 0; i < count; ++i) {
      send_iovecs_[i] = {send_buffer_.data() + i * size_, size_};
      send_headers_[i].msg_hdr.msg_iov = &send_iovecs_[i];
      send_headers_[i].msg_hdr.msg_iovlen = 1;
    }
    int n = sendmmsg(client.fd, send_headers_.data(), static_cast<unsigned>(count), MSG_DONTWAIT);
    if (n > 0) sent = static_cast<size_t>(n);
    // A connected socket's pending ICMP error (ECONNREFUSED: no server) may come back here.
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      Error(client, std::string("sendmmsg: ") + strerror(errno));
    }
  }
  // What the socket would not take now goes on the next refill (an echo or the stall check).
  client.next_seq += sent;
  totals_.sent += sent;
}

void Bench::Verify(Client& client, const char* bytes, size_t length) {
  uint32_t id = 0;
  uint64_t seq = 0;
  if (length >= kHeader) {
    std::memcpy(&id, bytes, 4);
    std::memcpy(&seq, bytes + 4, 8);
  }
  if (length != size_ || id != client.id || seq >= client.next_seq ||
      std::memcmp(bytes + kHeader, pattern_.Body(id, seq), size_ - kHeader) != 0) {
    Error(client, "an echo that is not a datagram this socket sent, whole (" +
                      std::to_string(length) + " bytes)");
    return;
  }
  if (seq < client.expected) {
    if (client.given_up.erase(seq) == 1) {
      --totals_.lost;
      ++totals_.late;
      return;
    }
    Error(client, "datagram " + std::to_string(seq) + " came back again, or out of order");
    return;
  }
  // Its predecessors did not come back: lost (one that still comes is out of order, an error).
  totals_.lost += seq - client.expected;
  client.expected = seq + 1;
  ++totals_.echoes;
}

void Bench::ReadErrors(Client& client) {
  char data[64];
  alignas(cmsghdr) char control[512];
  for (;;) {
    iovec iov{data, sizeof data};
    msghdr header{};
    header.msg_iov = &iov;
    header.msg_iovlen = 1;
    header.msg_control = control;
    header.msg_controllen = sizeof control;
    if (recvmsg(client.fd, &header, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) return;
    for (cmsghdr* cmsg = CMSG_FIRSTHDR(&header); cmsg != nullptr; cmsg = CMSG_NXTHDR(&header, cmsg)) {
      if (cmsg->cmsg_level == IPPROTO_IP && cmsg->cmsg_type == IP_RECVERR) {
        sock_extended_err error{};
        std::memcpy(&error, CMSG_DATA(cmsg), sizeof error);
        Error(client, std::string("ICMP: ") + strerror(static_cast<int>(error.ee_errno)));
      }
    }
  }
}

void Bench::Receive(Client& client) {
  for (;;) {
    for (size_t i = 0; i < kReceiveBatch; ++i) {
      receive_headers_[i].msg_hdr.msg_iov = &receive_iovecs_[i];
      receive_headers_[i].msg_hdr.msg_iovlen = 1;
      receive_headers_[i].msg_len = 0;
    }
    int n = recvmmsg(client.fd, receive_headers_.data(), kReceiveBatch, MSG_DONTWAIT, nullptr);
    if (n <= 0) {
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        // ECONNREFUSED: the server is not there (an ICMP port unreachable came back).
        Error(client, std::string("recvmmsg: ") + strerror(errno));
      }
      break;
    }
    for (int i = 0; i < n; ++i) {
      Verify(client, static_cast<const char*>(receive_iovecs_[i].iov_base),
             receive_headers_[i].msg_len);
    }
    client.last_heard_ns = now_ns_;
    if (static_cast<size_t>(n) < kReceiveBatch) break;
  }
  Refill(client);
}

bool Bench::Run(size_t clients, absl::Duration warmup, absl::Duration duration,
                absl::Duration stall, double max_loss, int server_pid, bool count_syscalls) {
  const size_t slot = std::max<size_t>(size_ + 1, 2048);  // One byte more: a longer echo shows.
  receive_buffer_.resize(kReceiveBatch * slot);
  receive_headers_.resize(kReceiveBatch);
  receive_iovecs_.resize(kReceiveBatch);
  for (size_t i = 0; i < kReceiveBatch; ++i) {
    receive_iovecs_[i] = {receive_buffer_.data() + i * slot, slot};
  }
  int epoll = epoll_create1(EPOLL_CLOEXEC);
  clients_.resize(clients);
  now_ns_ = NowNs();
  for (size_t i = 0; i < clients; ++i) {
    Client& client = clients_[i];
    client.id = static_cast<uint32_t>(i);
    client.fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    // Room for the window's echoes, and for a burst of them.
    int buffer = static_cast<int>(std::max<size_t>(window_ * (size_ + 1024) * 4, 1 << 20));
    setsockopt(client.fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
    int one = 1;
    setsockopt(client.fd, IPPROTO_IP, IP_RECVERR, &one, sizeof one);
    if (connect(client.fd, reinterpret_cast<const sockaddr*>(&server_), sizeof server_) != 0) {
      fprintf(stderr, "udp_bench: connect: %s\n", strerror(errno));
      return false;
    }
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = i;
    epoll_ctl(epoll, EPOLL_CTL_ADD, client.fd, &event);
    client.last_heard_ns = now_ns_;
  }
  for (Client& client : clients_) Refill(client);
  const uint64_t stall_ns = static_cast<uint64_t>(absl::ToInt64Nanoseconds(stall));
  uint64_t next_check = now_ns_ + stall_ns / 4;
  std::vector<epoll_event> events(clients);
  auto run_for = [&](absl::Duration d) {
    const uint64_t end = NowNs() + static_cast<uint64_t>(absl::ToInt64Nanoseconds(d));
    while (now_ns_ < end && totals_.errors == 0) {
      int n = epoll_wait(epoll, events.data(), static_cast<int>(events.size()), 10);
      now_ns_ = NowNs();
      for (int i = 0; i < n; ++i) {
        Client& client = clients_[events[i].data.u64];
        if (events[i].events & EPOLLERR) ReadErrors(client);
        Receive(client);
      }
      if (now_ns_ >= next_check) {
        for (Client& client : clients_) {
          if (client.next_seq == client.expected) {
            Refill(client);  // A refill the socket did not take.
            client.last_heard_ns = now_ns_;
          } else if (now_ns_ - client.last_heard_ns > stall_ns) {
            totals_.lost += client.next_seq - client.expected;
            for (uint64_t seq = client.expected; seq < client.next_seq; ++seq) {
              client.given_up.insert(seq);
            }
            // Bounded: the oldest given up on are forgotten (one of those that still comes
            // back is then an error).
            while (client.given_up.size() > 4096) client.given_up.erase(client.given_up.begin());
            client.expected = client.next_seq;
            client.last_heard_ns = now_ns_;
            Refill(client);
          }
        }
        next_check = now_ns_ + stall_ns / 4;
      }
    }
  };
  run_for(warmup);
  SyscallCounter counter;
  const bool counting = count_syscalls && server_pid > 0 && counter.Start(server_pid);
  const Totals before = totals_;
  const long long server0 = server_pid > 0 ? ProcessCpuTicks(server_pid) : -1;
  const uint64_t own0 = OwnCpuNs();
  const uint64_t t0 = NowNs();
  run_for(duration);
  const uint64_t t1 = NowNs();
  const uint64_t own1 = OwnCpuNs();
  const long long server1 = server_pid > 0 ? ProcessCpuTicks(server_pid) : -1;
  const long long syscalls = counting ? counter.Finish() : -1;
  // What is still in flight at the end comes back or is lost: give it the stall timeout.
  draining_ = true;
  run_for(stall + absl::Milliseconds(100));
  for (Client& client : clients_) {
    totals_.lost += client.next_seq - client.expected;
    close(client.fd);
  }
  close(epoll);

  const uint64_t echoes = totals_.echoes - before.echoes;
  const double seconds = static_cast<double>(t1 - t0) / 1e9;
  const double rate = static_cast<double>(echoes) / seconds;
  const double tick_ns = 1e9 / static_cast<double>(sysconf(_SC_CLK_TCK));
  const double server_ns =
      server0 >= 0 && server1 >= 0 ? static_cast<double>(server1 - server0) * tick_ns : -1;
  const double server_ns_per =
      server_ns >= 0 && echoes > 0 ? server_ns / static_cast<double>(echoes) : -1;
  const double server_share = server_ns >= 0 ? 100 * server_ns / static_cast<double>(t1 - t0) : -1;
  const double client_share = 100 * static_cast<double>(own1 - own0) / static_cast<double>(t1 - t0);
  // Loss over the whole run (warmup, window and the tail): every datagram sent is accounted.
  const double loss =
      totals_.sent > 0 ? static_cast<double>(totals_.lost) / static_cast<double>(totals_.sent) : 0;
  const double syscalls_per_echo =
      syscalls >= 0 && echoes > 0 ? static_cast<double>(syscalls) / static_cast<double>(echoes) : -1;
  const bool ok = totals_.errors == 0 && echoes > 0 && loss <= max_loss &&
                  (!count_syscalls || syscalls_per_echo >= 0);
  if (absl::GetFlag(FLAGS_json)) {
    printf("{\"clients\":%zu,\"window\":%zu,\"size\":%zu,\"gso\":%s,\"echoes\":%llu,"
           "\"echoes_per_s\":%.0f,\"server_cpu_ns_per_echo\":%.0f,\"server_cpu_pct\":%.1f,"
           "\"client_cpu_pct\":%.1f,\"sent\":%llu,\"lost\":%llu,\"late\":%llu,\"loss_pct\":%.4f,"
           "\"server_syscalls_per_echo\":%.4f,\"errors\":%llu,\"ok\":%s}\n",
           clients, window_, size_, gso_ ? "true" : "false",
           static_cast<unsigned long long>(echoes), rate, server_ns_per, server_share,
           client_share, static_cast<unsigned long long>(totals_.sent),
           static_cast<unsigned long long>(totals_.lost),
           static_cast<unsigned long long>(totals_.late), 100 * loss, syscalls_per_echo,
           static_cast<unsigned long long>(totals_.errors), ok ? "true" : "false");
  } else {
    printf("udp echo, %zu sockets x %zu in flight, %zu B%s: %llu echoes in %.2f s = %.0f/s\n",
           clients, window_, size_, gso_ ? " (GSO)" : "", static_cast<unsigned long long>(echoes),
           seconds, rate);
    if (server_ns_per >= 0) {
      printf("server CPU: %.0f ns per echo, %.0f %% of a CPU; client CPU %.0f %%\n",
             server_ns_per, server_share, client_share);
    }
    if (syscalls_per_echo >= 0) printf("server system calls: %.4f per echo\n", syscalls_per_echo);
    printf("sent %llu, lost %llu (%.4f %%), late %llu, errors %llu: %s\n",
           static_cast<unsigned long long>(totals_.sent),
           static_cast<unsigned long long>(totals_.lost), 100 * loss,
           static_cast<unsigned long long>(totals_.late),
           static_cast<unsigned long long>(totals_.errors), ok ? "ok" : "FAILED");
  }
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "A UDP echo load generator that checks every datagram. Usage: udp_bench "
      "--addr=HOST:PORT --clients=16 --window=8 --size=512 --duration=5s");
  absl::ParseCommandLine(argc, argv);
  const std::string addr = absl::GetFlag(FLAGS_addr);
  const size_t colon = addr.rfind(':');
  sockaddr_in server{};
  server.sin_family = AF_INET;
  int port = 0;
  if (colon == std::string::npos ||
      inet_pton(AF_INET, addr.substr(0, colon).c_str(), &server.sin_addr) != 1 ||
      !absl::SimpleAtoi(addr.substr(colon + 1), &port) || port <= 0 || port > 65535) {
    fprintf(stderr, "udp_bench: --addr must be IPv4 host:port, not %s\n", addr.c_str());
    return 2;
  }
  server.sin_port = htons(static_cast<uint16_t>(port));
  const int size = absl::GetFlag(FLAGS_size);
  const int clients = absl::GetFlag(FLAGS_clients);
  const int window = absl::GetFlag(FLAGS_window);
  if (size < static_cast<int>(kHeader) || size > 65507 || clients < 1 || window < 1 ||
      (absl::GetFlag(FLAGS_gso) &&
       (window > 64 || static_cast<size_t>(size) * static_cast<size_t>(window) > 65507))) {
    fprintf(stderr,
            "udp_bench: --size from 12 to 65507, --clients and --window at least 1 (with --gso, "
            "--window at most 64 and size x window at most 65507)\n");
    return 2;
  }
  Bench bench(server, static_cast<size_t>(size), static_cast<size_t>(window),
              absl::GetFlag(FLAGS_gso));
  return bench.Run(static_cast<size_t>(clients), absl::GetFlag(FLAGS_warmup),
                   absl::GetFlag(FLAGS_duration), absl::GetFlag(FLAGS_stall_timeout),
                   absl::GetFlag(FLAGS_max_loss), absl::GetFlag(FLAGS_server_pid),
                   absl::GetFlag(FLAGS_syscalls))
             ? 0
             : 1;
}

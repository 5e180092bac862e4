#include "net/acceptor.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <chrono>
#include <thread>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "eventloop/event_loop.h"
#include "gtest/gtest.h"
#include "net/socket_ops.h"
#include "net/testing/socket_paths.h"
#include "net/testing/test_process.h"

namespace gev {
namespace {

// Reads one byte with a timeout; returns the byte count (0 at EOF, -1 on timeout/error).
int ReadWithTimeout(int fd, char* byte, int timeout_ms) {
  pollfd waiter{fd, POLLIN, 0};
  if (::poll(&waiter, 1, timeout_ms) != 1) return -1;
  return static_cast<int>(::read(fd, byte, 1));
}

TEST(AcceptorTest, AcceptsEveryPendingConnectionInOneEvent) {
  auto loop = *EventLoop::Create();
  auto acceptor = Acceptor::Create(loop.get(), InetAddress::Loopback(0), false);
  ASSERT_TRUE(acceptor.ok()) << acceptor.status();
  std::vector<int> accepted;
  std::set<uint64_t> polls_seen;  // Which poll each accept came from.
  (*acceptor)->set_new_connection_callback([&](int fd, const InetAddress& peer) {
    EXPECT_EQ(peer.ToString().rfind("127.0.0.1:", 0), 0u);
    accepted.push_back(fd);
    polls_seen.insert(loop->poll_count());
  });
  std::vector<int> clients;
  for (int i = 0; i < 20; ++i) {
    auto client = sockets::ConnectBlocking((*acceptor)->listen_address());
    ASSERT_TRUE(client.ok()) << client.status();
    clients.push_back(*client);
  }
  loop->QueueInLoop([&] { ASSERT_TRUE((*acceptor)->Listen().ok()); });
  loop->RunAfter(absl::Milliseconds(200), [&] {
    acceptor->reset();  // Unregisters on the loop thread.
    loop->Stop();
  });
  loop->Run();
  EXPECT_EQ(accepted.size(), 20u);
  EXPECT_EQ(polls_seen.size(), 1u);  // All taken in one readiness event.
  for (int fd : accepted) ::close(fd);
  for (int fd : clients) ::close(fd);
}

// A listener opened elsewhere (here: by sockets::Listen, as systemd or a parent would) is
// served as it is, clients already in its backlog included.
TEST(AcceptorTest, AdoptsAListenerOpenedElsewhereWithItsBacklog) {
  auto loop = *EventLoop::Create();
  absl::StatusOr<int> listener = sockets::Listen(InetAddress::Loopback(0), false);
  ASSERT_TRUE(listener.ok()) << listener.status();
  absl::StatusOr<SocketAddress> bound = sockets::LocalSocketAddress(*listener);
  ASSERT_TRUE(bound.ok());
  std::vector<int> clients;
  for (int i = 0; i < 5; ++i) {
    auto client = sockets::ConnectBlocking(*bound);
    ASSERT_TRUE(client.ok()) << client.status();
    clients.push_back(*client);
  }
  auto acceptor = Acceptor::Adopt(loop.get(), *listener);
  ASSERT_TRUE(acceptor.ok()) << acceptor.status();
  EXPECT_EQ((*acceptor)->fd(), *listener);
  EXPECT_EQ((*acceptor)->listen_address().ToString(), bound->ToString());
  std::vector<int> accepted;
  (*acceptor)->set_new_connection_callback(
      [&](int fd, const InetAddress&) { accepted.push_back(fd); });
  loop->QueueInLoop([&] { ASSERT_TRUE((*acceptor)->Listen().ok()); });
  loop->RunAfter(absl::Milliseconds(200), [&] {
    acceptor->reset();
    loop->Stop();
  });
  loop->Run();
  EXPECT_EQ(accepted.size(), 5u);
  for (int fd : accepted) ::close(fd);
  for (int fd : clients) ::close(fd);
  // The acceptor closed the descriptor it adopted.
  EXPECT_EQ(::fcntl(*listener, F_GETFD), -1);
}

// What is not a listening stream socket is refused, and stays the caller's.
TEST(AcceptorTest, AdoptRefusesWhatIsNotAListener) {
  auto loop = *EventLoop::Create();
  int datagram = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  int unbound_stream = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int pipe_ends[2];
  ASSERT_EQ(::pipe(pipe_ends), 0);
  for (int fd : {datagram, unbound_stream, pipe_ends[0], 1000000}) {
    auto acceptor = Acceptor::Adopt(loop.get(), fd);
    EXPECT_EQ(acceptor.status().code(), absl::StatusCode::kFailedPrecondition) << fd;
  }
  for (int fd : {datagram, unbound_stream, pipe_ends[0], pipe_ends[1]}) {
    EXPECT_EQ(::close(fd), 0) << "still the caller's: " << fd;
  }
}

// A Unix listener's socket file is removed with its acceptor, unless the socket was handed to
// another process, which goes on serving at that path.
TEST(AcceptorTest, KeepSocketFileLeavesAHandedOverUnixSocketsFile) {
  auto loop = *EventLoop::Create();
  for (bool keep : {false, true}) {
    std::string path = testing::SocketPath(keep ? "acceptor-keep" : "acceptor-remove");
    auto address = SocketAddress::Parse("unix", path);
    ASSERT_TRUE(address.ok());
    auto acceptor = Acceptor::Create(loop.get(), *address, false);
    ASSERT_TRUE(acceptor.ok()) << acceptor.status();
    ASSERT_EQ(::access(path.c_str(), F_OK), 0);
    if (keep) (*acceptor)->KeepSocketFile();
    acceptor->reset();
    EXPECT_EQ(::access(path.c_str(), F_OK) == 0, keep) << path;
    ::unlink(path.c_str());
  }
}

// An adopted Unix listener (systemd's, a predecessor's) leaves its file to whoever made it.
TEST(AcceptorTest, AnAdoptedUnixListenerLeavesItsFile) {
  auto loop = *EventLoop::Create();
  std::string path = testing::SocketPath("acceptor-adopted");
  auto address = SocketAddress::Parse("unix", path);
  ASSERT_TRUE(address.ok());
  absl::StatusOr<int> listener = sockets::Listen(*address, false);
  ASSERT_TRUE(listener.ok()) << listener.status();
  auto acceptor = Acceptor::Adopt(loop.get(), *listener);
  ASSERT_TRUE(acceptor.ok()) << acceptor.status();
  EXPECT_EQ((*acceptor)->listen_address().ToString(), path);
  acceptor->reset();
  EXPECT_EQ(::access(path.c_str(), F_OK), 0);
  ::unlink(path.c_str());
}

// A gate with two slots: the third pending client is not accepted until a slot is given back
// and the gate resumes the acceptor; pending clients stay in the backlog meanwhile.
class TwoSlots : public AcceptGate {
 public:
  bool TryReserve() override {
    if (used == 2) return false;
    ++used;
    return true;
  }
  void Unreserve() override { --used; }
  bool WaitForSlot() override {
    ++waits;
    return used >= 2;  // Waits unless a slot is free.
  }
  int used = 0;
  int waits = 0;
};

TEST(AcceptorTest, AGateWithoutASlotPausesAcceptingUntilResumed) {
  auto loop = *EventLoop::Create();
  auto acceptor = Acceptor::Create(loop.get(), InetAddress::Loopback(0), false);
  ASSERT_TRUE(acceptor.ok()) << acceptor.status();
  TwoSlots gate;
  (*acceptor)->set_gate(&gate);
  std::vector<int> accepted;
  int accepts = 0;
  (*acceptor)->set_new_connection_callback([&](int fd, const InetAddress&) {
    accepted.push_back(fd);
    if (++accepts == 3) {
      // The one accept the resume allowed: a little while for a wrong fourth, then stop.
      loop->RunAfter(absl::Milliseconds(50), [&] {
        acceptor->reset();
        loop->Stop();
      });
    }
  });
  std::vector<int> clients;
  for (int i = 0; i < 5; ++i) {
    auto client = sockets::ConnectBlocking((*acceptor)->listen_address());
    ASSERT_TRUE(client.ok()) << client.status();
    clients.push_back(*client);
  }
  size_t accepted_before_resume = 0;
  uint64_t polls_before = 0;
  uint64_t polls_while_paused = 0;
  loop->QueueInLoop([&] { ASSERT_TRUE((*acceptor)->Listen().ok()); });
  loop->RunAfter(absl::Milliseconds(20), [&] { polls_before = loop->poll_count(); });
  loop->RunAfter(absl::Milliseconds(100), [&] {
    accepted_before_resume = accepted.size();
    polls_while_paused = loop->poll_count() - polls_before;
    ASSERT_EQ(accepted.size(), 2u);
    EXPECT_EQ(gate.waits, 1);
    ::close(accepted.back());  // A connection ends: its slot comes back.
    accepted.pop_back();
    --gate.used;
    EXPECT_TRUE((*acceptor)->ResumeAccepting());
    EXPECT_FALSE((*acceptor)->ResumeAccepting());  // Once.
  });
  loop->RunAfter(absl::Seconds(10), [&] {  // Only if the third accept never comes.
    acceptor->reset();
    loop->Stop();
  });
  loop->Run();
  EXPECT_EQ(accepted_before_resume, 2u);
  EXPECT_EQ(accepts, 3);
  EXPECT_EQ(accepted.size(), 2u);  // One more after the resume, then paused again.
  EXPECT_EQ(gate.used, 2);
  EXPECT_EQ(gate.waits, 2);
  EXPECT_LT(polls_while_paused, 10u) << "the paused listener was polled in a loop";
  for (int fd : accepted) ::close(fd);
  for (int fd : clients) ::close(fd);
}

TEST(AcceptorTest, SeveralAcceptorsShareAPortWithReusePort) {
  auto loop = *EventLoop::Create();
  auto first = Acceptor::Create(loop.get(), InetAddress::Loopback(0), true);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = Acceptor::Create(loop.get(),
                                 InetAddress::Loopback((*first)->listen_address().port()), true);
  EXPECT_TRUE(second.ok()) << second.status();
  auto without = Acceptor::Create(loop.get(),
                                  InetAddress::Loopback((*first)->listen_address().port()), false);
  EXPECT_FALSE(without.ok());
}

// Calls a function when the parent writes to (or closes) the control pipe.
struct ControlHandler : EventHandler {
  void HandleEvent(const PollEvent&) override { on_event(); }
  std::function<void()> on_event;
};

// The server side of SurvivesDescriptorExhaustion, in a process of its own: accepts on `port`
// until the control pipe closes, then exits with a code saying what went wrong (0: nothing).
[[noreturn]] void ShedUntilToldToStop(uint16_t port, int control_read) {
  int control[2] = {control_read, -1};
  // Only what this process needs counts against the limit set below.
  for (int fd = 3; fd < 4096; ++fd) {
    if (fd != control[0]) ::close(fd);
  }
  auto loop = *EventLoop::Create();
  auto acceptor = Acceptor::Create(loop.get(), InetAddress::Loopback(port), true);
  if (!acceptor.ok()) ::_exit(10);
  std::vector<int> kept;
  bool released = false;
  (*acceptor)->set_new_connection_callback([&](int fd, const InetAddress&) {
    if (released) {
      (void)!::write(fd, "ok", 2);
      ::close(fd);
    } else {
      kept.push_back(fd);
    }
  });
  // Room for a few connections beyond what is open now.
  int highest = 0;
  for (int fd = 0; fd < 1024; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1) highest = fd;
  }
  rlimit limit{static_cast<rlim_t>(highest + 6), static_cast<rlim_t>(highest + 6)};
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) ::_exit(11);

  auto control_handler = std::make_unique<ControlHandler>();
  control_handler->on_event = [&] {
    char command;
    if (::read(control[0], &command, 1) != 1) {
      loop->Stop();
      return;
    }
    for (int fd : kept) ::close(fd);
    kept.clear();
    released = true;
  };
  loop->QueueInLoop([&] {
    if (!(*acceptor)->Listen().ok()) ::_exit(12);
    if (!loop->AddHandler(control[0], Interest::kRead, control_handler.get()).ok()) ::_exit(13);
  });
  loop->Run();
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  double cpu_seconds = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                       static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  // Many sheds in a row: each one took the spare back, or the next could not have happened.
  if ((*acceptor)->shed_count() < 10) ::_exit(20);
  if ((*acceptor)->spares_reopened() < (*acceptor)->shed_count()) ::_exit(22);
  // The storm lasted a couple of seconds of wall time; a spinning listener would burn it all.
  if (cpu_seconds > 1.0) ::_exit(21);
  ::_exit(0);
}

// ShedUntilToldToStop in the re-executed binary, on Linux (disabled otherwise).
TEST(AcceptorProcess, DISABLED_ShedUntilToldToStop) {
  const char* spec = std::getenv("GEV_ACCEPTOR_PROCESS");
  ASSERT_NE(spec, nullptr) << "started by SurvivesDescriptorExhaustion only";
  int port = 0;
  int control[2] = {-1, -1};
  ASSERT_EQ(std::sscanf(spec, "%d,%d,%d", &port, &control[0], &control[1]), 3);
  ::close(control[1]);
  ShedUntilToldToStop(static_cast<uint16_t>(port), control[0]);
}

// The server runs in a child process with a descriptor limit just above what it holds; the
// parent connects far more clients than that. The child must shed the excess (the peer sees
// EOF), must not spin while doing so, and must serve a new client once descriptors free up.
TEST(AcceptorTest, SurvivesDescriptorExhaustion) {
  auto acceptor_port = [] {
    auto probe = Acceptor::Create(nullptr, InetAddress::Loopback(0), true);
    return probe.ok() ? (*probe)->listen_address().port() : 0;
  };
  uint16_t port = acceptor_port();
  ASSERT_NE(port, 0);
  int control[2];  // Parent -> child: 'r' = release the kept connections.
  ASSERT_EQ(::pipe(control), 0);
  std::string spec = "GEV_ACCEPTOR_PROCESS=" + std::to_string(port) + "," +
                     std::to_string(control[0]) + "," + std::to_string(control[1]);
  pid_t child = testing::StartTestProcess("AcceptorProcess.DISABLED_ShedUntilToldToStop", spec,
                                          [&] {
                                            ::close(control[1]);
                                            ShedUntilToldToStop(port, control[0]);
                                          });
  ASSERT_GT(child, 0);
  ::close(control[0]);
  // Let the child start listening.
  std::vector<int> clients;
  for (int attempt = 0; attempt < 100 && clients.empty(); ++attempt) {
    auto client = sockets::ConnectBlocking(InetAddress::Loopback(port));
    if (client.ok()) {
      clients.push_back(*client);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ASSERT_FALSE(clients.empty());
  for (int i = 0; i < 40; ++i) {
    auto client = sockets::ConnectBlocking(InetAddress::Loopback(port));
    ASSERT_TRUE(client.ok()) << client.status();
    clients.push_back(*client);
  }
  // Shed clients see EOF; kept ones see nothing.
  int shed_seen = 0;
  for (int fd : clients) {
    char byte;
    if (ReadWithTimeout(fd, &byte, 200) == 0) ++shed_seen;
  }
  EXPECT_GT(shed_seen, 0);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  for (int fd : clients) ::close(fd);

  ASSERT_EQ(::write(control[1], "r", 1), 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto fresh = sockets::ConnectBlocking(InetAddress::Loopback(port));
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  char reply[2] = {0, 0};
  EXPECT_EQ(ReadWithTimeout(*fresh, &reply[0], 2000), 1);
  EXPECT_EQ(ReadWithTimeout(*fresh, &reply[1], 2000), 1);
  EXPECT_EQ(std::string(reply, 2), "ok");
  ::close(*fresh);

  ::close(control[1]);  // EOF on the control pipe stops the child's loop.
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace gev

// Restarts in one process: a server takes another's listeners over a handoff path (the other
// drains), or serves descriptors it was given; and every way a handoff can be refused ends in a
// server that binds its own listeners, with the reason logged.

#include <fcntl.h>
#include <sched.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "eventloop/log.h"
#include "gtest/gtest.h"
#include "net/socket_ops.h"
#include "net/testing/socket_paths.h"
#include "server/internal/handoff.h"
#include "server/server.h"
#include "server/testing/loopback_client.h"

namespace gev {
namespace {

using ::gev::testing::Connect;
using ::gev::testing::ReadExactly;
using ::gev::testing::WaitFor;
using ::gev::testing::WriteAll;

class Echo : public Handler {
 public:
  explicit Echo(bool close_on_drain = false) : close_on_drain_(close_on_drain) {}
  Reply OnMessage(Connection&, RingBuffer& in) override { return Reply::FromBuffer(in.Length()); }
  void OnDrain(Connection& conn) override {
    drained.fetch_add(1);
    if (close_on_drain_) conn.Close();
  }
  void OnClose(Connection&, const absl::Status& reason) override {
    std::lock_guard<std::mutex> lock(mutex);
    reasons.push_back(reason);
  }
  std::atomic<int> drained{0};
  std::mutex mutex;
  std::vector<absl::Status> reasons;

 private:
  const bool close_on_drain_;
};

// Start() on a thread, and whether it has returned.
class Running {
 public:
  explicit Running(Server* server)
      : server_(server), thread_([this] {
          status_ = server_->Start();
          returned_.store(true);
        }) {}
  ~Running() {
    server_->Stop();
    thread_.join();
  }
  bool returned() const { return returned_.load(); }
  absl::Status status() const { return status_; }  // Once returned().

 private:
  Server* server_;
  std::atomic<bool> returned_{false};
  absl::Status status_;
  std::thread thread_;
};

// Collects what the library logs, for the reasons a handoff was refused.
class LogCapture {
 public:
  LogCapture() {
    SetLogSink([this](LogSeverity, std::string_view message) {
      std::lock_guard<std::mutex> lock(mutex_);
      lines_.emplace_back(message);
    });
  }
  ~LogCapture() { SetLogSink(nullptr); }
  bool Contains(const std::string& text) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const std::string& line : lines_) {
      if (absl::StrContains(line, text)) return true;
    }
    return false;
  }
  std::string All() {
    std::lock_guard<std::mutex> lock(mutex_);
    std::string all;
    for (const std::string& line : lines_) all += line + "\n";
    return all;
  }

 private:
  std::mutex mutex_;
  std::vector<std::string> lines_;
};

ServerOptions Options(const std::string& handoff_path, int loops, bool reuse_port) {
  ServerOptions options;
  options.address = "127.0.0.1:0";
  options.num_loops = loops;
  options.reuse_port = reuse_port;
  options.handoff_path = handoff_path;
  options.handoff_timeout = absl::Seconds(2);
  return options;
}

// The socket behind a descriptor, to tell the same socket from another at the same address.
ino_t SocketInode(int fd) {
  struct stat info {};
  return ::fstat(fd, &info) == 0 ? info.st_ino : 0;
}

std::vector<ino_t> Inodes(const std::vector<int>& fds) {
  std::vector<ino_t> inodes;
  for (int fd : fds) inodes.push_back(SocketInode(fd));
  std::sort(inodes.begin(), inodes.end());
  inodes.erase(std::unique(inodes.begin(), inodes.end()), inodes.end());
  return inodes;
}

// A socket listens at `path`. Its file alone is not enough: bind makes it before listen, and a
// successor that connects in between is refused, which looks like a stale file. Read from
// /proc/net/unix, whose Flags column has __SO_ACCEPTCON (0x10000) for a listener.
bool Serving(const std::string& path) {
  std::ifstream table("/proc/net/unix");
  std::string line;
  std::getline(table, line);  // The header.
  while (std::getline(table, line)) {
    std::istringstream fields(line);
    std::string slot, references, protocol, flags, type, state, inode, name;
    fields >> slot >> references >> protocol >> flags >> type >> state >> inode >> name;
    if (name == path && (std::stoul(flags, nullptr, 16) & 0x10000) != 0) return true;
  }
  return false;
}

// One round trip on a new connection; true when `message` came back whole.
bool EchoesOnce(const InetAddress& address, const std::string& message) {
  int fd = Connect(SocketAddress(address));
  if (fd < 0) return false;
  bool ok = WriteAll(fd, message) && ReadExactly(fd, message.size()) == message;
  ::close(fd);
  return ok;
}

class HandoffTest : public ::testing::TestWithParam<bool> {};  // ReusePort or the acceptor.

INSTANTIATE_TEST_SUITE_P(Modes, HandoffTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "ReusePort" : "Acceptor"; });

TEST_P(HandoffTest, ASuccessorTakesTheListenersAndThePredecessorDrains) {
  const bool reuse_port = GetParam();
  std::string path = testing::SocketPath("handoff");
  Echo old_handler;
  auto old_server = Server::Create(&old_handler, Options(path, 2, reuse_port));
  ASSERT_TRUE(old_server.ok()) << old_server.status();
  EXPECT_EQ((*old_server)->listener_source(), Server::ListenerSource::kBound);
  const InetAddress address = (*old_server)->ListenAddress();
  std::vector<ino_t> old_sockets = Inodes((*old_server)->Listeners());
  ASSERT_EQ(old_sockets.size(), reuse_port ? 2u : 1u);
  auto old_running = std::make_unique<Running>(old_server->get());
  ASSERT_TRUE(WaitFor([&] { return Serving(path); }));

  // A connection in the middle of its exchange when the handoff comes, and clients waiting in
  // the backlog meanwhile: a load that never stops.
  int in_progress = Connect(SocketAddress(address));
  ASSERT_TRUE(WriteAll(in_progress, "first"));
  ASSERT_EQ(ReadExactly(in_progress, 5), "first");
  std::atomic<bool> loading{true};
  std::atomic<int> served{0};
  std::atomic<int> failed{0};
  std::thread load([&] {
    for (int i = 0; loading.load() || i < 20; ++i) {
      (EchoesOnce(address, "load " + std::to_string(i)) ? served : failed).fetch_add(1);
    }
  });
  struct Joiner {
    std::atomic<bool>& loading;
    std::thread& load;
    ~Joiner() {
      loading.store(false);
      if (load.joinable()) load.join();
    }
  } joiner{loading, load};

  Echo new_handler;
  auto new_server = Server::Create(&new_handler, Options(path, 2, reuse_port));
  ASSERT_TRUE(new_server.ok()) << new_server.status();
  EXPECT_EQ((*new_server)->listener_source(), Server::ListenerSource::kHandedOver);
  EXPECT_EQ((*new_server)->ListenAddress().ToString(), address.ToString());
  EXPECT_EQ(Inodes((*new_server)->Listeners()), old_sockets);  // The very same sockets.
  Running new_running(new_server->get());

  // Told to drain: the old server accepts no more and tells its connections (this one, and
  // the load's of the moment), which it goes on serving until the clients close them.
  ASSERT_TRUE(WaitFor([&] { return old_handler.drained.load() >= 1; }));
  EXPECT_TRUE((*old_server)->Listeners().empty());
  ASSERT_TRUE(WriteAll(in_progress, "second"));
  EXPECT_EQ(ReadExactly(in_progress, 6), "second");
  EXPECT_FALSE(old_running->returned());
  ::close(in_progress);
  ASSERT_TRUE(WaitFor([&] { return old_running->returned(); }));
  EXPECT_TRUE(old_running->status().ok()) << old_running->status();
  old_running.reset();
  {
    std::lock_guard<std::mutex> lock(old_handler.mutex);
    for (const absl::Status& reason : old_handler.reasons) EXPECT_TRUE(reason.ok()) << reason;
  }

  // The successor serves, and serves the handoff path in its turn.
  uint64_t before = (*new_server)->Stats().Total().accepted;
  ASSERT_TRUE(WaitFor([&] { return served.load() > 50; }, 10000));
  loading.store(false);
  load.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_TRUE(EchoesOnce(address, "after"));
  EXPECT_GT((*new_server)->Stats().Total().accepted, before);
  EXPECT_TRUE(Serving(path));
  auto third = server_internal::RequestListeners(path, absl::Seconds(2));
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(third->listeners().size(), old_sockets.size());
  // Not confirmed: dropping it leaves the successor serving.
}

// A Unix listener goes over as a TCP one does; its file stays for the successor, which
// serves at the same path once the predecessor is gone.
TEST(HandoffTest, AUnixListenerAndItsFileGoToTheSuccessor) {
  std::string path = testing::SocketPath("handoff-unix-h");
  std::string listen_path = testing::SocketPath("handoff-unix-l");
  ServerOptions options = Options(path, 1, false);
  options.network = "unix";
  options.address = listen_path;
  Echo old_handler;
  auto old_server = Server::Create(&old_handler, options);
  ASSERT_TRUE(old_server.ok()) << old_server.status();
  auto old_running = std::make_unique<Running>(old_server->get());
  ASSERT_TRUE(WaitFor([&] { return Serving(path); }));
  Echo handler;
  auto server = Server::Create(&handler, options);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ((*server)->listener_source(), Server::ListenerSource::kHandedOver);
  Running running(server->get());
  ASSERT_TRUE(WaitFor([&] { return old_running->returned(); }));
  old_running.reset();
  ASSERT_EQ(::access(listen_path.c_str(), F_OK), 0) << "the predecessor took the file along";
  auto unix_address = SocketAddress::Parse("unix", listen_path);
  int fd = Connect(*unix_address);
  ASSERT_TRUE(WriteAll(fd, "over unix"));
  EXPECT_EQ(ReadExactly(fd, 9), "over unix");
  ::close(fd);
  ::unlink(listen_path.c_str());
}

// An abstract handoff name has no file to replace: each successor gets it once its
// predecessor has closed it ("done"), and hands on in its turn.
TEST(HandoffTest, AnAbstractHandoffNameServesRestartAfterRestart) {
  std::string name = testing::AbstractSocketName("handoff");
  std::vector<std::unique_ptr<Echo>> handlers;
  std::vector<std::unique_ptr<Server>> servers;
  std::vector<std::unique_ptr<Running>> running;
  std::string address;
  for (int generation = 0; generation < 3; ++generation) {
    handlers.push_back(std::make_unique<Echo>());
    ServerOptions options = Options(name, 1, false);
    options.handoff_required = generation > 0;
    if (!address.empty()) options.address = address;
    auto server = Server::Create(handlers.back().get(), options);
    ASSERT_TRUE(server.ok()) << "generation " << generation << ": " << server.status();
    address = (*server)->ListenAddress().ToString();
    servers.push_back(std::move(*server));
    running.push_back(std::make_unique<Running>(servers.back().get()));
    ASSERT_TRUE(WaitFor([&] { return servers.back()->ServesHandoff(); }))
        << "generation " << generation;
    if (generation > 0) {
      EXPECT_EQ(servers.back()->listener_source(), Server::ListenerSource::kHandedOver);
      ASSERT_TRUE(WaitFor([&] { return running[generation - 1]->returned(); }));
      EXPECT_TRUE(servers[generation - 1]->HandedOver());
    }
    EXPECT_TRUE(EchoesOnce(servers.back()->ListenAddress(), "generation"));
  }
}

// Past 200 descriptors a record carries the rest ("more"); all arrive, in order.
TEST(HandoffTest, HundredsOfListenersGoOverInSeveralRecords) {
  std::string path = testing::SocketPath("handoff-many");
  absl::StatusOr<int> listener = sockets::Listen(InetAddress::Loopback(0), false);
  ASSERT_TRUE(listener.ok());
  std::vector<int> fds;
  for (int i = 0; i < 250; ++i) fds.push_back(::fcntl(*listener, F_DUPFD_CLOEXEC, 0));
  auto loop = std::shared_ptr<EventLoop>(*EventLoop::Create());
  std::atomic<bool> taken_over{false};
  server_internal::HandoffService::Callbacks callbacks;
  callbacks.listeners = [&fds] { return fds; };
  callbacks.taken_over = [&](pid_t) { taken_over.store(true); };
  auto service = server_internal::HandoffService::Create(loop.get(), path, false,
                                                         std::move(callbacks));
  ASSERT_TRUE(service.ok()) << service.status();
  std::thread thread([&] { loop->Run(); });
  ASSERT_TRUE(loop->QueueInLoop([&] { ASSERT_TRUE((*service)->Start().ok()); }));
  {
    auto taken = server_internal::RequestListeners(path, absl::Seconds(2));
    ASSERT_TRUE(taken.ok()) << taken.status();
    ASSERT_EQ(taken->listeners().size(), 250u);
    for (const InheritedSocket& socket : taken->listeners()) {
      EXPECT_EQ(SocketInode(socket.fd), SocketInode(*listener));
    }
    EXPECT_TRUE(taken->ConfirmTakeover().ok());
  }
  EXPECT_TRUE(WaitFor([&] { return taken_over.load(); }));
  ASSERT_TRUE(loop->QueueInLoop([&] {
    service->reset();
    loop->Stop();
  }));
  thread.join();
  for (int fd : fds) ::close(fd);
  ::close(*listener);
}

// A successor that never says it serves (it failed to start): the running server goes on, and
// hands over to the next one that asks.
TEST(HandoffTest, AnUnconfirmedHandoffLeavesThePredecessorServing) {
  LogCapture log;
  std::string path = testing::SocketPath("handoff-unconfirmed");
  Echo handler;
  auto server = Server::Create(&handler, Options(path, 1, false));
  ASSERT_TRUE(server.ok()) << server.status();
  Running running(server->get());
  ASSERT_TRUE(WaitFor([&] { return Serving(path); }));
  {
    auto taken = server_internal::RequestListeners(path, absl::Seconds(2));
    ASSERT_TRUE(taken.ok()) << taken.status();
    ASSERT_EQ(taken->listeners().size(), 1u);
  }  // Gone without "ready".
  ASSERT_TRUE(WaitFor([&] { return log.Contains("abandoned, still serving"); })) << log.All();
  EXPECT_FALSE(running.returned());
  EXPECT_TRUE(EchoesOnce((*server)->ListenAddress(), "still here"));
  auto again = server_internal::RequestListeners(path, absl::Seconds(2));
  EXPECT_TRUE(again.ok()) << again.status();
}

// A server that has bound its handoff path and not yet listened refuses a connect for a
// moment: a successor asking just then waits for it rather than take the file for a stale one
// (and the predecessor for gone). Here the peer listens 50 ms after binding and then speaks
// something else, so the request fails for that, not for "no server". The grace is long here
// (the default is 200 ms) so that a slow machine cannot outlast it.
TEST(HandoffTest, APathBoundButNotYetListeningIsNotStale) {
  std::string path = testing::SocketPath("handoff-late-listen");
  int late = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(late, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::snprintf(address.sun_path, sizeof(address.sun_path), "%s", path.c_str());
  ASSERT_EQ(::bind(late, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  std::thread answer([late] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_EQ(::listen(late, 4), 0);
    int peer = testing::AcceptWithin(late);
    char request[64];
    (void)ReadExactly(peer, sizeof(request));
    WriteAll(peer, std::string(64, 'x'));
    ::close(peer);
  });
  auto listeners = server_internal::RequestListeners(path, absl::Seconds(10), absl::Seconds(10));
  answer.join();
  ::close(late);
  ::unlink(path.c_str());
  ASSERT_FALSE(listeners.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(listeners.status())) << listeners.status();
  EXPECT_TRUE(absl::StrContains(listeners.status().message(), "does not speak"))
      << listeners.status();
}

// Nobody at the path, a stale socket file, a peer that speaks something else, a listener
// elsewhere than the options say: the new server binds its own, and says why.
TEST(HandoffTest, ARefusedHandoffBindsFreshAndSaysWhy) {
  LogCapture log;
  Echo handler;
  {
    std::string path = testing::SocketPath("handoff-nobody");
    auto server = Server::Create(&handler, Options(path, 1, false));
    ASSERT_TRUE(server.ok()) << server.status();
    EXPECT_EQ((*server)->listener_source(), Server::ListenerSource::kBound);
    EXPECT_TRUE(log.Contains("no socket file")) << log.All();
  }
  {
    std::string path = testing::SocketPath("handoff-stale");
    int stale = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::snprintf(address.sun_path, sizeof(address.sun_path), "%s", path.c_str());
    ASSERT_EQ(::bind(stale, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    ::close(stale);  // The file stays: its process "died".
    auto server = Server::Create(&handler, Options(path, 1, false));
    ASSERT_TRUE(server.ok()) << server.status();
    EXPECT_EQ((*server)->listener_source(), Server::ListenerSource::kBound);
    EXPECT_TRUE(log.Contains("its process is gone")) << log.All();
    Running running(server->get());
    // It took the path over for its own successor.
    ASSERT_TRUE(WaitFor([&] { return server_internal::RequestListeners(path, absl::Seconds(1)).ok(); }));
  }
  {
    std::string path = testing::SocketPath("handoff-stranger");
    auto stranger = SocketAddress::Parse("unix", path);
    absl::StatusOr<int> listener = sockets::Listen(*stranger, false);
    ASSERT_TRUE(listener.ok());
    std::thread answer([fd = *listener] {
      int peer = testing::AcceptWithin(fd);
      char request[64];
      (void)ReadExactly(peer, sizeof(request));
      std::string garbage(64, 'x');
      WriteAll(peer, garbage);
      ::close(peer);
    });
    auto server = Server::Create(&handler, Options(path, 1, false));
    answer.join();
    ASSERT_TRUE(server.ok()) << server.status();
    EXPECT_EQ((*server)->listener_source(), Server::ListenerSource::kBound);
    EXPECT_TRUE(log.Contains("does not speak the handoff protocol")) << log.All();
    {
      // The stranger's path is left alone: no handoff service for this server.
      Running running(server->get());
      ASSERT_TRUE(WaitFor([&] { return log.Contains("cannot serve"); })) << log.All();
    }
    ::close(*listener);
    ::unlink(path.c_str());
  }
  {
    std::string path = testing::SocketPath("handoff-elsewhere");
    Echo old_handler;
    auto old_server = Server::Create(&old_handler, Options(path, 1, false));
    ASSERT_TRUE(old_server.ok());
    Running old_running(old_server->get());
    ASSERT_TRUE(WaitFor([&] { return Serving(path); }));
    ServerOptions options = Options(path, 1, false);
    options.address = "127.0.0.2:0";  // Not where the running server listens.
    auto server = Server::Create(&handler, options);
    ASSERT_TRUE(server.ok()) << server.status();
    EXPECT_EQ((*server)->listener_source(), Server::ListenerSource::kBound);
    EXPECT_TRUE(log.Contains("is not at 127.0.0.2:0")) << log.All();
    ASSERT_TRUE(WaitFor([&] { return log.Contains("abandoned, still serving"); })) << log.All();
    EXPECT_FALSE(old_running.returned());
    EXPECT_TRUE(EchoesOnce((*old_server)->ListenAddress(), "old"));
  }
}

// A server of another user at the path is not asked for anything, and a requester of another
// user gets nothing. Needs root (to be another user); CI runs as root.
TEST(HandoffTest, AnotherUsersPeerIsRefusedBothWays) {
  // Root, as tools/bazel's package installs are: a test that cannot run fails, never skips.
  ASSERT_EQ(::geteuid(), 0u) << "needs root, to act as another user";
  LogCapture log;
  constexpr uid_t kNobody = 65534;
  // Under /tmp itself: the test's own socket directory is closed to other users.
  char made[] = "/tmp/gev-handoff-users-XXXXXX";
  ASSERT_NE(::mkdtemp(made), nullptr);
  std::string directory = made;
  ASSERT_EQ(::chmod(directory.c_str(), 0777), 0);
  std::string path = directory + "/s";

  // A requester running as nobody asks a root server: refused, and the server serves on.
  Echo handler;
  auto server = Server::Create(&handler, Options(path, 1, false));
  ASSERT_TRUE(server.ok());
  {
    Running running(server->get());
    ASSERT_TRUE(WaitFor([&] { return Serving(path); }));
    ASSERT_EQ(::chmod(path.c_str(), 0777), 0);
    pid_t child = ::fork();
    if (child == 0) {
      if (::setuid(kNobody) != 0) ::_exit(3);
      auto taken = server_internal::RequestListeners(path, absl::Seconds(2));
      ::_exit(taken.ok() ? 1 : absl::StrContains(taken.status().message(), "uid") ? 0 : 2);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
    // The server's side of the refusal: logged on its loop, maybe after the child is done.
    EXPECT_TRUE(WaitFor([&] { return log.Contains("requester runs as uid 65534"); }))
        << log.All();
    EXPECT_FALSE(running.returned());
    EXPECT_TRUE(EchoesOnce((*server)->ListenAddress(), "still"));
  }
  server->reset();

  // A server running as nobody at the path: a root requester does not trust it.
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = ::fork();
  if (child == 0) {
    if (::setuid(kNobody) != 0) ::_exit(3);
    auto address = SocketAddress::Parse("unix", path);
    absl::StatusOr<int> listener = sockets::Listen(*address, false);
    if (!listener.ok()) ::_exit(4);
    (void)!::write(ready[1], "r", 1);
    ::pause();
    ::_exit(0);
  }
  ::close(ready[1]);
  char byte;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1) << "the child could not listen as another user";
  auto requester = Server::Create(&handler, Options(path, 1, false));
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ::close(ready[0]);
  ASSERT_TRUE(requester.ok()) << requester.status();
  EXPECT_EQ((*requester)->listener_source(), Server::ListenerSource::kBound);
  EXPECT_TRUE(log.Contains("the server runs as uid 65534")) << log.All();
  ::unlink(path.c_str());
  ::rmdir(directory.c_str());
}

TEST(DrainTest, ConnectionsFinishOnTheirOwnAndStopHurriesThem) {
  Echo handler;
  ServerOptions options = Options("", 2, false);
  auto server = Server::Create(&handler, options);
  ASSERT_TRUE(server.ok());
  Running running(server->get());
  const InetAddress address = (*server)->ListenAddress();
  int first = Connect(SocketAddress(address));
  int second = Connect(SocketAddress(address));
  ASSERT_TRUE(WriteAll(first, "a") && WriteAll(second, "b"));
  ASSERT_EQ(ReadExactly(first, 1), "a");
  ASSERT_EQ(ReadExactly(second, 1), "b");
  std::thread drain([&] { (*server)->Drain(); });
  ASSERT_TRUE(WaitFor([&] { return handler.drained.load() == 2; }));
  // No new connection is accepted; the open ones are served.
  EXPECT_FALSE(EchoesOnce(address, "new"));
  ASSERT_TRUE(WriteAll(first, "again"));
  EXPECT_EQ(ReadExactly(first, 5), "again");
  ::close(first);
  ASSERT_TRUE(WaitFor([&] { return (*server)->ConnectionCount() == 1; }));
  EXPECT_FALSE(running.returned());
  (*server)->Stop();  // Closes the other one now, flushed (FIN), as Stop does.
  EXPECT_TRUE(testing::SeesEndOfStream(second));
  drain.join();
  EXPECT_TRUE(WaitFor([&] { return running.returned(); }));
  ::close(second);
}

TEST(DrainTest, AConnectionStillOpenAtTheDeadlineIsReset) {
  Echo handler;
  ServerOptions options = Options("", 1, false);
  options.stop_timeout = absl::Milliseconds(300);
  auto server = Server::Create(&handler, options);
  ASSERT_TRUE(server.ok());
  Running running(server->get());
  int idle = Connect(SocketAddress((*server)->ListenAddress()));
  ASSERT_TRUE(WriteAll(idle, "x"));
  ASSERT_EQ(ReadExactly(idle, 1), "x");
  (*server)->Drain();  // Returns when the server has stopped.
  EXPECT_TRUE(WaitFor([&] { return running.returned(); }));
  bool reset = false;
  testing::ReadToEnd(idle, &reset);
  EXPECT_TRUE(reset);
  std::lock_guard<std::mutex> lock(handler.mutex);
  ASSERT_EQ(handler.reasons.size(), 1u);
  EXPECT_EQ(handler.reasons[0].code(), absl::StatusCode::kDeadlineExceeded);
  ::close(idle);
}

TEST(DrainTest, AHandlerThatClosesOnDrainEndsItAtOnce) {
  Echo handler(/*close_on_drain=*/true);
  auto server = Server::Create(&handler, Options("", 1, false));
  ASSERT_TRUE(server.ok());
  Running running(server->get());
  int fd = Connect(SocketAddress((*server)->ListenAddress()));
  ASSERT_TRUE(WriteAll(fd, "x"));
  ASSERT_EQ(ReadExactly(fd, 1), "x");
  (*server)->Drain();
  EXPECT_TRUE(testing::SeesEndOfStream(fd));
  std::lock_guard<std::mutex> lock(handler.mutex);
  ASSERT_EQ(handler.reasons.size(), 1u);
  EXPECT_TRUE(handler.reasons[0].ok()) << handler.reasons[0];
  ::close(fd);
}

TEST(ListenersTest, AServerServesListenersItWasGiven) {
  absl::StatusOr<int> listener = sockets::Listen(InetAddress::Loopback(0), false);
  ASSERT_TRUE(listener.ok());
  auto bound = sockets::LocalAddress(*listener);
  ASSERT_TRUE(bound.ok());
  int waiting = Connect(SocketAddress(*bound));  // In the backlog before the server exists.
  Echo handler;
  ServerOptions options = Options("", 2, false);
  options.address = "will not be bound";
  options.listeners = {*listener};
  auto server = Server::Create(&handler, options);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ((*server)->listener_source(), Server::ListenerSource::kGiven);
  EXPECT_EQ((*server)->ListenAddress().ToString(), bound->ToString());
  EXPECT_EQ((*server)->Listeners(), std::vector<int>{*listener});
  Running running(server->get());
  ASSERT_TRUE(WriteAll(waiting, "waited"));
  EXPECT_EQ(ReadExactly(waiting, 6), "waited");
  ::close(waiting);
}

// systemd's socket, say: a successor serves it wherever it is bound, whatever its own address
// option says (the restarted program has no socket of systemd's to look at).
TEST(ListenersTest, GivenListenersAreHandedOnWhereverTheyAreBound) {
  std::string path = testing::SocketPath("handoff-given");
  absl::StatusOr<int> listener = sockets::Listen(InetAddress::Loopback(0), false);
  ASSERT_TRUE(listener.ok());
  Echo handler;
  ServerOptions options = Options(path, 1, false);
  options.listeners = {*listener};
  auto given = Server::Create(&handler, options);
  ASSERT_TRUE(given.ok()) << given.status();
  auto running = std::make_unique<Running>(given->get());
  ASSERT_TRUE(WaitFor([&] { return Serving(path); }));
  ServerOptions successor_options = Options(path, 1, false);
  successor_options.address = "127.0.0.1:1";  // What the command line says; not the socket.
  Echo successor_handler;
  auto successor = Server::Create(&successor_handler, successor_options);
  ASSERT_TRUE(successor.ok()) << successor.status();
  EXPECT_EQ((*successor)->listener_source(), Server::ListenerSource::kHandedOver);
  EXPECT_EQ((*successor)->ListenAddress().ToString(), (*given)->ListenAddress().ToString());
  Running successor_running(successor->get());
  ASSERT_TRUE(WaitFor([&] { return running->returned(); }));
  EXPECT_TRUE(EchoesOnce((*successor)->ListenAddress(), "handed on"));
  // And on again: the successor says they were given too.
  auto third = server_internal::RequestListeners(path, absl::Seconds(2));
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_TRUE(third->given());
}

// A Unix server removes its socket file when it stops, unless its listeners went elsewhere:
// once Listeners() has handed them out, the file is left to whoever serves them next.
TEST(ListenersTest, AUnixServerWhoseListenersWereHandedOutLeavesItsFile) {
  for (bool handed_out : {false, true}) {
    std::string path = testing::SocketPath(handed_out ? "listeners-out" : "listeners-kept");
    ServerOptions options = Options("", 1, false);
    options.network = "unix";
    options.address = path;
    Echo handler;
    auto server = Server::Create(&handler, options);
    ASSERT_TRUE(server.ok()) << server.status();
    if (handed_out) {
      EXPECT_EQ((*server)->Listeners().size(), 1u);
    }
    {
      Running running(server->get());
      int fd = Connect(*SocketAddress::Parse("unix", path));
      ASSERT_TRUE(WriteAll(fd, "x"));
      EXPECT_EQ(ReadExactly(fd, 1), "x");
      ::close(fd);
    }  // Stopped.
    server->reset();
    EXPECT_EQ(::access(path.c_str(), F_OK) == 0, handed_out) << path;
    ::unlink(path.c_str());
  }
}

// The same for a server that never started.
TEST(ListenersTest, AServerNeverStartedKeepsAHandedOutFileToo) {
  std::string path = testing::SocketPath("listeners-unstarted");
  ServerOptions options = Options("", 1, false);
  options.network = "unix";
  options.address = path;
  Echo handler;
  auto server = Server::Create(&handler, options);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ((*server)->Listeners().size(), 1u);
  server->reset();
  EXPECT_EQ(::access(path.c_str(), F_OK), 0) << path;
  ::unlink(path.c_str());
}

TEST(ListenersTest, ADescriptorGivenTwiceIsRefusedAndClosedOnce) {
  absl::StatusOr<int> listener = sockets::Listen(InetAddress::Loopback(0), false);
  ASSERT_TRUE(listener.ok());
  Echo handler;
  ServerOptions options = Options("", 1, false);
  options.listeners = {*listener, *listener};
  auto server = Server::Create(&handler, options);
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(::fcntl(*listener, F_GETFD), -1);
}

// A restart's child must take over: with nobody to take from, Create says why.
TEST(ListenersTest, ARequiredHandoffThatCannotHappenFailsCreate) {
  Echo handler;
  ServerOptions options = Options(testing::SocketPath("handoff-required"), 1, false);
  options.handoff_required = true;
  auto server = Server::Create(&handler, options);
  EXPECT_EQ(server.status().code(), absl::StatusCode::kUnavailable) << server.status();
  // Given listeners are closed on an early failure too.
  absl::StatusOr<int> listener = sockets::Listen(InetAddress::Loopback(0), false);
  ASSERT_TRUE(listener.ok());
  ServerOptions bad = Options("", 1, false);
  bad.listeners = {*listener};
  bad.num_loops = 5000;
  EXPECT_FALSE(Server::Create(&handler, bad).ok());
  EXPECT_EQ(::fcntl(*listener, F_GETFD), -1);
}

TEST(ListenersTest, WhatIsNotAListenerIsRefusedAndClosed) {
  int datagram = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  absl::StatusOr<int> listener = sockets::Listen(InetAddress::Loopback(0), false);
  ASSERT_TRUE(listener.ok());
  Echo handler;
  ServerOptions options = Options("", 1, false);
  options.listeners = {*listener, datagram};
  auto server = Server::Create(&handler, options);
  EXPECT_EQ(server.status().code(), absl::StatusCode::kFailedPrecondition);
  // Both were the server's: both are closed.
  EXPECT_EQ(::fcntl(datagram, F_GETFD), -1);
  EXPECT_EQ(::fcntl(*listener, F_GETFD), -1);
}

// ReusePort with more loops than listeners: the loops share them; with fewer, the extra
// listeners are served by the loops in turn, or closed where the kernel moves their waiting
// clients to another listener of the group (net.ipv4.tcp_migrate_req, set here in a network
// namespace of the test's own). Either way every client already waiting is served.
void ServeTwoListenersOnOneLoop(bool migrate) {
  // Runs in a child in its own network namespace: loopback up, the sysctl set.
  ASSERT_EQ(::unshare(CLONE_NEWNET), 0) << strerror(errno);
  int control = ::socket(AF_INET, SOCK_DGRAM, 0);
  ifreq request{};
  std::snprintf(request.ifr_name, IFNAMSIZ, "lo");
  ASSERT_EQ(::ioctl(control, SIOCGIFFLAGS, &request), 0);
  request.ifr_flags |= IFF_UP;
  ASSERT_EQ(::ioctl(control, SIOCSIFFLAGS, &request), 0);
  ::close(control);
  {
    std::ofstream sysctl("/proc/sys/net/ipv4/tcp_migrate_req");
    sysctl << (migrate ? 1 : 0);
    ASSERT_TRUE(sysctl.good());
  }
  absl::StatusOr<int> first = sockets::Listen(InetAddress::Loopback(0), true);
  ASSERT_TRUE(first.ok()) << first.status();
  auto bound = sockets::LocalAddress(*first);
  absl::StatusOr<int> second = sockets::Listen(SocketAddress(*bound), true);
  ASSERT_TRUE(second.ok()) << second.status();
  std::vector<int> clients;
  for (int i = 0; i < 40; ++i) clients.push_back(Connect(SocketAddress(*bound)));
  Echo handler;
  ServerOptions options = Options("", 1, true);
  options.listeners = {*first, *second};
  auto server = Server::Create(&handler, options);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ((*server)->Listeners().size(), migrate ? 1u : 2u);
  Running running(server->get());
  for (size_t i = 0; i < clients.size(); ++i) {
    std::string message = "client " + std::to_string(i);
    ASSERT_TRUE(WriteAll(clients[i], message));
    EXPECT_EQ(ReadExactly(clients[i], message.size()), message) << i;
    ::close(clients[i]);
  }
}

TEST(ListenersTest, ExtraReusePortListenersAreServedOrMigrated) {
  ASSERT_EQ(::geteuid(), 0u) << "needs root, for a network namespace of its own";
  for (bool migrate : {false, true}) {
    pid_t child = ::fork();
    if (child == 0) {
      ServeTwoListenersOnOneLoop(migrate);
      ::_exit(::testing::Test::HasFailure() ? 1 : 0);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "migrate=" << migrate;
  }
}

TEST(ListenersTest, LoopsPastTheLastListenerShareThem) {
  absl::StatusOr<int> listener = sockets::Listen(InetAddress::Loopback(0), true);
  ASSERT_TRUE(listener.ok());
  Echo handler;
  ServerOptions options = Options("", 3, true);
  options.listeners = {*listener};
  auto server = Server::Create(&handler, options);
  ASSERT_TRUE(server.ok()) << server.status();
  std::vector<int> fds = (*server)->Listeners();
  ASSERT_EQ(fds.size(), 3u);
  EXPECT_EQ(Inodes(fds).size(), 1u);  // One socket, three descriptors.
  Running running(server->get());
  for (int i = 0; i < 30; ++i) EXPECT_TRUE(EchoesOnce((*server)->ListenAddress(), "shared"));
}

}  // namespace
}  // namespace gev

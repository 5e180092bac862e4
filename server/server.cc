#include "server/server.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "eventloop/log.h"
#include "net/socket_ops.h"
#include "server/internal/handler_dispatch.h"
#include "server/internal/handoff.h"

namespace gev {
namespace server_internal {

// A descriptor in flight from the acceptor to a worker; closed if the worker never adopts it
// (the server stopped first).
class OwnedFd {
 public:
  explicit OwnedFd(int fd) : fd_(fd) {}
  OwnedFd(OwnedFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  OwnedFd& operator=(OwnedFd&&) = delete;
  ~OwnedFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int Release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

// ServerOptions::max_connections for every listener of a server: a slot per connection from
// its accept to its last callback. Listeners without a slot stop polling (Acceptor::
// PauseForGate), and the release that frees a slot at the limit wakes them.
//
// The waiting count and the open count are read crosswise (a listener adds itself to the
// waiters, then looks at the count; a release lowers the count, then looks at the waiters):
// with sequentially consistent atomics one of the two sees the other, so no listener waits
// while a slot is free.
class ConnectionLimit final : public AcceptGate {
 public:
  ConnectionLimit(size_t max, absl::AnyInvocable<void()> wake_listeners)
      : max_(max), wake_listeners_(std::move(wake_listeners)) {}

  bool TryReserve() override {
    size_t open = open_.load();
    while (open < max_) {
      if (open_.compare_exchange_weak(open, open + 1)) return true;
    }
    return false;
  }
  void Unreserve() override { Release(); }
  bool WaitForSlot() override {
    waiting_.fetch_add(1);
    if (open_.load() < max_) {
      waiting_.fetch_sub(1);
      return false;
    }
    pauses_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }

  // A connection's slot, back at its end.
  void Release() {
    if (open_.fetch_sub(1) == max_ && waiting_.load() > 0) wake_listeners_();
  }
  // A waiting listener polls again (its ResumeAccepting() returned true).
  void Resumed() { waiting_.fetch_sub(1); }
  uint64_t pauses() const { return pauses_.load(std::memory_order_relaxed); }

 private:
  const size_t max_;
  absl::AnyInvocable<void()> wake_listeners_;  // Thread-safe: queues tasks on loops.
  std::atomic<size_t> open_{0};
  std::atomic<size_t> waiting_{0};
  std::atomic<uint64_t> pauses_{0};
};

// One worker loop, its thread and its connections.
struct Worker {
  Worker(Handler* handler, Protocol* protocol, const ServerOptions* options)
      : handler(handler), options(options), dispatch(handler, protocol) {}

  Handler* const handler;
  const ServerOptions* const options;
  ConnectionLimit* limit = nullptr;  // The server's; null without max_connections.
  // Shared with the connections' Config: a ConnectionPtr kept past the server still reaches a
  // (finished) loop.
  std::shared_ptr<EventLoop> loop;
  std::vector<std::unique_ptr<Acceptor>> acceptors;  // ReusePort mode only.
  std::shared_ptr<const Connection::Config> config;
  std::thread thread;
  // Open connections plus, in acceptor mode, those handed over but not yet adopted, which
  // LeastConnection must see at once.
  std::atomic<size_t> connection_count{0};

  // Loop-thread-only state.
  absl::flat_hash_set<ConnectionPtr> connections;
  HandlerDispatch dispatch;
  bool draining = false;
  bool drain_gently = false;  // Draining without closing the connections (yet).

  // Takes over an accepted descriptor. `counted`: the acceptor already counted it.
  void Adopt(int fd, const InetAddress& peer, bool counted) {
    if (!counted) connection_count.fetch_add(1, std::memory_order_relaxed);
    if (draining) {
      ::close(fd);
      connection_count.fetch_sub(1, std::memory_order_relaxed);
      if (limit != nullptr) limit->Release();
      return;
    }
    // Best effort: a socket that refuses an option (its peer already reset it, say) still
    // works, and its first read or write reports any real failure as the close reason.
    bool tcp = peer.family() != AF_UNIX;
    if (tcp && options->tcp_no_delay) (void)sockets::SetTcpNoDelay(fd, true);
    if (tcp && options->tcp_keep_alive > absl::ZeroDuration()) {
      (void)sockets::SetKeepAlive(fd, true, options->tcp_keep_alive);
    }
    ConnectionPtr connection = Connection::Create(config, fd, peer);
    connections.insert(connection);
    connection->Establish();
  }

  // A connection's last callback: OnClose after OnConnect, or OnTransportError in its place.
  void Forget(const ConnectionPtr& connection) {
    connections.erase(connection);
    connection_count.fetch_sub(1, std::memory_order_relaxed);
    if (limit != nullptr) limit->Release();
  }

  // Shutdown, on this loop: stop accepting; close every connection after its output is
  // flushed (`gentle`: tell each it may finish, Handler::OnDrain, and close them only if
  // `hurry` becomes true); force-close what is left at `deadline_ms`; then stop the loop.
  // `keep_socket_files`: the listeners went to a successor, whose Unix socket files they are.
  void BeginDrain(uint64_t deadline_ms, bool gentle, bool keep_socket_files,
                  const std::atomic<bool>* hurry) {
    draining = true;
    drain_gently = gentle;
    for (auto& acceptor : acceptors) {
      if (keep_socket_files) acceptor->KeepSocketFile();
    }
    acceptors.clear();
    std::vector<ConnectionPtr> open(connections.begin(), connections.end());
    for (const ConnectionPtr& connection : open) {
      if (gentle) {
        handler->OnDrain(*connection);
      } else {
        connection->Close();
      }
    }
    loop->RunEvery(absl::Milliseconds(5), [this, deadline_ms, hurry] {
      if (drain_gently && hurry->load(std::memory_order_relaxed)) {
        drain_gently = false;
        std::vector<ConnectionPtr> still_open(connections.begin(), connections.end());
        for (const ConnectionPtr& connection : still_open) connection->Close();
      }
      CheckDrained(deadline_ms);
    });
  }

  void CheckDrained(uint64_t deadline_ms) {
    bool past_deadline = loop->NowMs() >= deadline_ms;
    // Descriptors still registered are other connections on this loop (a Client's, say, a
    // proxy's upstream flushing what its downstream sent): they get until the deadline too.
    if (connections.empty() && (loop->handler_count() == 0 || past_deadline)) {
      loop->Stop();
      return;
    }
    if (!past_deadline) return;
    std::vector<ConnectionPtr> open(connections.begin(), connections.end());
    for (const ConnectionPtr& connection : open) {
      connection->ForceClose(
          drain_gently ? absl::DeadlineExceededError("still open when the drain's time was up")
                       : absl::CancelledError("server stopped before output was flushed"));
    }
  }
};

}  // namespace server_internal

using server_internal::Worker;

absl::StatusOr<std::unique_ptr<Server>> Server::Create(Handler* handler, ServerOptions options) {
  // Given listeners are the server's from here, whatever happens: closed on every early
  // return, until Init takes them.
  std::vector<int> given = options.listeners;
  auto close_given = absl::MakeCleanup([&given] {
    std::sort(given.begin(), given.end());
    given.erase(std::unique(given.begin(), given.end()), given.end());
    for (int fd : given) ::close(fd);
  });
  if (handler == nullptr) return absl::InvalidArgumentError("handler is null");
  if (options.num_loops <= 0) {
    options.num_loops = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
  if (options.num_loops > 1024) {
    return absl::InvalidArgumentError(absl::StrCat("NumLoops(", options.num_loops,
                                                   ") is more than 1024"));
  }
  absl::StatusOr<Connection::Options> connection_options =
      server_internal::ConnectionOptionsFor(options);
  if (!connection_options.ok()) return connection_options.status();
  options.max_pending_output = connection_options->max_pending_output;
  // Given listeners are served wherever they are bound: the address is not used then.
  absl::StatusOr<SocketAddress> address =
      options.listeners.empty() ? SocketAddress::Parse(options.network, options.address)
                                : absl::StatusOr<SocketAddress>(SocketAddress());
  if (!address.ok()) return address.status();
  if (address->is_unix() && options.reuse_port) {
    return absl::InvalidArgumentError("ReusePort is for TCP; a unix socket has one listener");
  }

  sockets::IgnoreSigPipe();
  std::unique_ptr<Server> server(new Server(handler, std::move(options)));
  std::move(close_given).Cancel();  // Init takes them first thing.
  absl::Status status = server->Init(*address, *connection_options);
  if (!status.ok()) return status;
  return server;
}

Server::Server(Handler* handler, ServerOptions options)
    : handler_(handler), options_(std::move(options)) {}

absl::Status Server::Init(const SocketAddress& address,
                          const Connection::Options& connection_options) {
  absl::StatusOr<std::unique_ptr<EventLoop>> main_loop = EventLoop::Create();
  if (!main_loop.ok()) return main_loop.status();
  main_loop_ = std::move(*main_loop);
  balancer_ = options_.load_balancer ? options_.load_balancer : RoundRobin();

  if (options_.max_connections != 0) {
    // The tasks reach the server through `this`: loops run only within Start(), which the
    // server outlives, and a loop that has finished refuses them.
    limit_ = std::make_unique<server_internal::ConnectionLimit>(
        options_.max_connections, [this] { WakeListeners(); });
  }
  // First, so that descriptors the server was given are its own whatever fails below.
  absl::StatusOr<std::vector<InheritedSocket>> sockets = TakeListeners(address);
  if (!sockets.ok()) return sockets.status();
  auto close_sockets = absl::MakeCleanup([&sockets] {
    for (const InheritedSocket& socket : *sockets) ::close(socket.fd);
  });
  for (int i = 0; i < options_.num_loops; ++i) {
    auto worker = std::make_unique<Worker>(handler_, options_.protocol.get(), &options_);
    Worker* w = worker.get();
    w->limit = limit_.get();
    absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Create();
    if (!loop.ok()) return loop.status();
    w->loop = std::move(*loop);

    // The callbacks reach the worker through a raw pointer: they run only on its loop while it
    // runs, and the worker outlives that. A Config kept alive longer by a ConnectionPtr is never
    // called again.
    auto config = std::make_shared<Connection::Config>();
    config->loop = w->loop;
    config->loop_index = static_cast<size_t>(i);
    config->options = connection_options;
    config->transport = options_.transport;
    config->callbacks.on_connect = [w](const ConnectionPtr& c) { w->handler->OnConnect(*c); };
    config->callbacks.on_message = [w](const ConnectionPtr& c, RingBuffer& input) {
      w->dispatch.OnMessage(c, input);
    };
    config->callbacks.on_close = [w](const ConnectionPtr& c, const absl::Status& reason) {
      w->handler->OnClose(*c, reason);
      w->Forget(c);
    };
    config->callbacks.on_transport_error = [w](const ConnectionPtr& c,
                                               const absl::Status& reason) {
      w->handler->OnTransportError(*c, reason);
      w->Forget(c);
    };
    config->callbacks.on_high_water = [w](const ConnectionPtr& c, size_t pending) {
      w->handler->OnHighWater(*c, pending);
    };
    config->callbacks.on_low_water = [w](const ConnectionPtr& c) { w->handler->OnLowWater(*c); };
    config->callbacks.on_peer_shutdown = [w](const ConnectionPtr& c) {
      w->handler->OnPeerShutdown(*c);
    };
    config->callbacks.on_write_complete = [w](const ConnectionPtr& c) {
      w->handler->OnWriteComplete(*c);
    };
    w->config = std::move(config);

    workers_.push_back(std::move(worker));
  }
  std::move(close_sockets).Cancel();  // SetUpAcceptors adopts or closes each.
  absl::Status status = SetUpAcceptors(address, std::move(*sockets));
  if (!status.ok()) return status;
  for (const auto& acceptor : acceptors_) listener_fds_.push_back(acceptor->fd());
  for (const auto& worker : workers_) {
    for (const auto& acceptor : worker->acceptors) listener_fds_.push_back(acceptor->fd());
  }
  connection_counts_.resize(workers_.size());
  return absl::OkStatus();
}

namespace {

// Whether a listener bound at `actual` serves what the options ask for at `wanted` (any port
// when they ask for port 0).
bool ServesAddress(const SocketAddress& wanted, const SocketAddress& actual) {
  if (wanted.is_unix() || actual.is_unix()) {
    return wanted.is_unix() == actual.is_unix() && wanted.ToString() == actual.ToString();
  }
  if (wanted.inet().family() != actual.inet().family()) return false;
  if (wanted.inet().port() != 0) return wanted.ToString() == actual.ToString();
  std::string want = wanted.ToString();
  std::string have = actual.ToString();
  return want.substr(0, want.rfind(':')) == have.substr(0, have.rfind(':'));
}

// net.ipv4.tcp_migrate_req=1 (Linux 5.14 on, per network namespace): closing one of several
// SO_REUSEPORT listeners moves the clients waiting in its backlog to another, instead of
// resetting them.
bool KernelMigratesClosedListenersBacklog() {
  std::ifstream setting("/proc/sys/net/ipv4/tcp_migrate_req");
  int value = 0;
  return (setting >> value) && value == 1;
}

bool HasReusePort(int fd) {
  int on = 0;
  socklen_t length = sizeof(on);
  return ::getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, &length) == 0 && on != 0;
}

}  // namespace

absl::StatusOr<std::vector<InheritedSocket>> Server::TakeListeners(const SocketAddress& address) {
  std::vector<InheritedSocket> sockets;
  if (!options_.listeners.empty()) {
    // The server owns them all from here, whether it starts or not: each is closed once on
    // failure, even one that is no socket.
    std::vector<int> fds = options_.listeners;
    std::sort(fds.begin(), fds.end());
    absl::Status status;
    if (std::adjacent_find(fds.begin(), fds.end()) != fds.end()) {
      status = absl::InvalidArgumentError("ServerOptions::listeners names a descriptor twice");
    }
    fds.erase(std::unique(fds.begin(), fds.end()), fds.end());
    for (int fd : fds) {
      if (!status.ok()) break;
      absl::StatusOr<InheritedSocket> socket = DescribeSocket(fd);
      if (!socket.ok()) {
        status = socket.status();
      } else if (socket->type != SOCK_STREAM || !socket->listening) {
        status = absl::FailedPreconditionError(absl::StrCat(
            "ServerOptions::listeners: descriptor ", fd, " is not a listening stream socket"));
      } else {
        sockets.push_back(std::move(*socket));
      }
    }
    if (!status.ok()) {
      for (int fd : fds) ::close(fd);
      return status;
    }
    listener_source_ = ListenerSource::kGiven;
    listeners_given_ = true;
    return sockets;
  }
  if (options_.handoff_path.empty()) return sockets;
  absl::StatusOr<server_internal::HandedOverListeners> handed =
      server_internal::RequestListeners(options_.handoff_path, options_.handoff_timeout);
  absl::Status why = handed.status();
  // Nobody serves the path (no file, or a stale one that refused through the grace): this
  // server's own handoff service binds it later without waiting again.
  handoff_path_unserved_ = absl::IsUnavailable(why);
  // Listeners the predecessor was given are served wherever they are bound, as given ones
  // are; those it bound must be where this server's options say.
  for (size_t i = 0; why.ok() && !handed->given() && i < handed->listeners().size(); ++i) {
    const SocketAddress& bound = handed->listeners()[i].address;
    if (!ServesAddress(address, bound)) {
      why = absl::FailedPreconditionError(absl::StrCat("handoff: the listener at ",
                                                       bound.ToString(), " is not at ",
                                                       address.ToString()));
    }
  }
  if (!why.ok() && options_.handoff_required) {
    return absl::Status(why.code(), absl::StrCat("taking listeners over ",
                                                 options_.handoff_path, ": ", why.message()));
  }
  if (!why.ok()) {
    // The predecessor, if any, sees the handoff end without "ready" and goes on serving.
    Log(LogSeverity::kWarning, absl::StrCat("taking listeners over ", options_.handoff_path,
                                            ": ", why.message(), "; binding ",
                                            address.ToString(), " instead"));
    return sockets;
  }
  sockets = handed->listeners();
  handed->ReleaseListeners();
  Log(LogSeverity::kInfo, absl::StrCat("took ", sockets.size(), " listener(s) from pid ",
                                       handed->from_pid(), " over ", options_.handoff_path));
  listeners_given_ = handed->given();
  takeover_ = std::make_unique<server_internal::HandedOverListeners>(std::move(*handed));
  listener_source_ = ListenerSource::kHandedOver;
  return sockets;
}

absl::Status Server::SetUpAcceptors(const SocketAddress& address,
                                    std::vector<InheritedSocket> sockets) {
  auto on_main_loop = [this](Acceptor& acceptor) {
    acceptor.set_gate(limit_.get());
    acceptor.set_new_connection_callback(
        [this](int fd, const InetAddress& peer) { Dispatch(fd, peer); });
  };
  auto on_worker = [this](Worker* w, Acceptor& acceptor) {
    acceptor.set_gate(limit_.get());
    acceptor.set_new_connection_callback(
        [w](int fd, const InetAddress& peer) { w->Adopt(fd, peer, /*counted=*/false); });
  };
  if (sockets.empty()) {
    if (!options_.reuse_port) {
      absl::StatusOr<std::unique_ptr<Acceptor>> acceptor =
          Acceptor::Create(main_loop_.get(), address, /*reuse_port=*/false);
      if (!acceptor.ok()) return acceptor.status();
      on_main_loop(**acceptor);
      listen_address_ = (*acceptor)->listen_address();
      acceptors_.push_back(std::move(*acceptor));
      return absl::OkStatus();
    }
    SocketAddress bind_address = address;
    for (auto& worker : workers_) {
      absl::StatusOr<std::unique_ptr<Acceptor>> acceptor =
          Acceptor::Create(worker->loop.get(), bind_address, /*reuse_port=*/true);
      if (!acceptor.ok()) return acceptor.status();
      // Port 0: the first listener picked one; the others must share it.
      bind_address = (*acceptor)->listen_address();
      on_worker(worker.get(), **acceptor);
      worker->acceptors.push_back(std::move(*acceptor));
    }
    listen_address_ = bind_address;
    return absl::OkStatus();
  }

  listen_address_ = sockets[0].address;
  // Each descriptor is either adopted by an acceptor or closed here, failure or not.
  absl::Status status;
  auto adopt = [&](EventLoop* loop, int fd) -> std::unique_ptr<Acceptor> {
    if (!status.ok()) {
      ::close(fd);
      return nullptr;
    }
    absl::StatusOr<std::unique_ptr<Acceptor>> acceptor = Acceptor::Adopt(loop, fd);
    if (!acceptor.ok()) {
      status = acceptor.status();
      ::close(fd);
      return nullptr;
    }
    return std::move(*acceptor);
  };
  if (!options_.reuse_port) {
    for (const InheritedSocket& socket : sockets) {
      std::unique_ptr<Acceptor> acceptor = adopt(main_loop_.get(), socket.fd);
      if (acceptor == nullptr) continue;
      on_main_loop(*acceptor);
      acceptors_.push_back(std::move(acceptor));
    }
    return status;
  }
  const size_t loops = workers_.size();
  // Loops past the last listener share one: a duplicate descriptor of the same socket each.
  for (size_t i = sockets.size(); i < loops; ++i) {
    InheritedSocket shared = sockets[i % sockets.size()];
    shared.fd = ::fcntl(shared.fd, F_DUPFD_CLOEXEC, 0);
    if (shared.fd < 0 && status.ok()) status = absl::ErrnoToStatus(errno, "dup a listener");
    if (shared.fd >= 0) sockets.push_back(shared);
  }
  const bool migrates = sockets.size() > loops && KernelMigratesClosedListenersBacklog();
  for (size_t i = 0; i < sockets.size(); ++i) {
    Worker* w = workers_[i % loops].get();
    if (i >= loops && migrates && HasReusePort(sockets[i].fd) &&
        ServesAddress(sockets[i].address, sockets[i % loops].address)) {
      ::close(sockets[i].fd);  // Its waiting clients move to another listener of its group.
      continue;
    }
    std::unique_ptr<Acceptor> acceptor = adopt(w->loop.get(), sockets[i].fd);
    if (acceptor == nullptr) continue;
    on_worker(w, *acceptor);
    w->acceptors.push_back(std::move(acceptor));
  }
  return status;
}

Server::~Server() {
  Stop();
  // Never started: the loops never ran, so nothing is registered with them. (Started: the
  // acceptors are gone already.) Listeners handed out keep a Unix socket's file, as on Stop.
  if (listeners_shared_.load()) {
    for (auto& acceptor : acceptors_) acceptor->KeepSocketFile();
    for (auto& worker : workers_) {
      for (auto& acceptor : worker->acceptors) acceptor->KeepSocketFile();
    }
  }
}

void Server::WakeListeners() {
  // Refused only by a finished loop, whose listener is gone anyway.
  // Each waiting listener was counted by the gate once, and is resumed (and uncounted) once.
  if (!options_.reuse_port) {
    (void)main_loop_->QueueInLoop([this] {
      for (auto& acceptor : acceptors_) {
        if (acceptor->ResumeAccepting()) limit_->Resumed();
      }
    });
    return;
  }
  for (auto& worker : workers_) {
    Worker* w = worker.get();
    (void)w->loop->QueueInLoop([this, w] {
      for (auto& acceptor : w->acceptors) {
        if (acceptor->ResumeAccepting()) limit_->Resumed();
      }
    });
  }
}

void Server::Dispatch(int fd, const InetAddress& peer) {
  for (size_t i = 0; i < workers_.size(); ++i) {
    connection_counts_[i] = workers_[i]->connection_count.load(std::memory_order_relaxed);
  }
  size_t index = balancer_(peer, connection_counts_) % workers_.size();
  Worker* worker = workers_[index].get();
  worker->connection_count.fetch_add(1, std::memory_order_relaxed);
  // Raw pointers in the tasks below are safe: workers and loops belong to the server, which
  // outlives every loop's run (Stop joins them before the server can be destroyed).
  // Refused only by a finished loop, and workers finish after the acceptor: then the OwnedFd
  // closes the descriptor (its connection-limit slot is not given back: the server is
  // stopping, and its listener is gone).
  (void)worker->loop->RunInLoop([worker, owned = server_internal::OwnedFd(fd), peer]() mutable {
    worker->Adopt(owned.Release(), peer, /*counted=*/true);
  });
}

absl::Status Server::Start() {
  RunState expected = RunState::kCreated;
  if (!run_state_.compare_exchange_strong(expected, RunState::kRunning)) return absl::OkStatus();
  // Queued before the loops run: never refused. OnLoopStart first, so it runs before any
  // connection reaches the loop (handed over or accepted there).
  size_t listening_loops = acceptors_.empty() ? 0 : 1;
  for (const auto& worker : workers_) listening_loops += worker->acceptors.empty() ? 0 : 1;
  listens_pending_.store(listening_loops);
  // The last loop to poll its listeners tells the acceptor loop (refused only once it has
  // finished: the server stopped meanwhile).
  auto listened = [this] {
    if (listens_pending_.fetch_sub(1) == 1) (void)main_loop_->QueueInLoop([this] { OnListening(); });
  };
  for (size_t i = 0; i < workers_.size(); ++i) {
    Worker* w = workers_[i].get();
    (void)w->loop->RunInLoop([w, i] { w->handler->OnLoopStart(*w->loop, i); });
    if (!w->acceptors.empty()) {
      (void)w->loop->RunInLoop([this, w, listened] {
        for (auto& acceptor : w->acceptors) {
          absl::Status status = acceptor->Listen();
          if (!status.ok()) FailToListen(status);  // Queues the stop: the list stays.
        }
        listened();
      });
    }
    w->thread = std::thread([w] { w->loop->Run(); });
  }
  if (!acceptors_.empty()) {
    (void)main_loop_->RunInLoop([this, listened] {
      for (auto& acceptor : acceptors_) {
        absl::Status status = acceptor->Listen();
        if (!status.ok()) FailToListen(status);  // Queues the stop: the list stays.
      }
      listened();
    });
  }
  main_loop_->Run();
  // Not `this` after ShutDown(): once it says the server has stopped, a thread waiting in Stop()
  // or the destructor may free it. ShutDown() hands back the result it read before that.
  return ShutDown();
}

void Server::FailToListen(const absl::Status& status) {
  absl::Status error(status.code(), absl::StrCat("listen on ", listen_address_.ToString(), ": ",
                                                 status.message()));
  Log(LogSeverity::kError, error.ToString());
  {
    std::lock_guard<std::mutex> lock(start_error_mutex_);
    if (start_error_.ok()) start_error_ = error;
  }
  Stop();  // On a server thread: starts the shutdown and returns.
}

void Server::OnListening() {
  if (run_state_.load(std::memory_order_acquire) != RunState::kRunning) return;
  bool took_over = false;
  if (takeover_ != nullptr) {
    absl::Status confirmed = takeover_->ConfirmTakeover();
    if (confirmed.ok()) {
      took_over = true;
    } else {
      // The predecessor may still serve beside this server (both accept, nothing is lost),
      // and may still hold the path: it is not taken from it.
      Log(LogSeverity::kWarning,
          absl::StrCat("handoff: pid ", takeover_->from_pid(), " did not confirm its drain: ",
                       confirmed.message()));
    }
    takeover_.reset();
  }
  if (options_.handoff_path.empty()) return;
  server_internal::HandoffService::Callbacks callbacks;
  callbacks.listeners = [this] {
    listeners_shared_.store(true);  // Another process may serve them from now on.
    return listener_fds_;
  };
  callbacks.given = listeners_given_;
  callbacks.taken_over = [this](pid_t) {
    handed_over_.store(true);
    // Queued: the service that calls this is destroyed by the drain.
    (void)main_loop_->QueueInLoop([this] { Drain(); });
  };
  // After a takeover the path still holds the predecessor's socket, whose service is ending.
  absl::StatusOr<std::unique_ptr<server_internal::HandoffService>> service =
      server_internal::HandoffService::Create(
          main_loop_.get(), options_.handoff_path, /*replace=*/took_over, std::move(callbacks),
          handoff_path_unserved_ ? absl::ZeroDuration() : sockets::kStartingListenerGrace);
  absl::Status status = service.ok() ? (*service)->Start() : service.status();
  if (!status.ok()) {
    Log(LogSeverity::kWarning,
        absl::StrCat("handoff: cannot serve ", options_.handoff_path, " (", status.message(),
                     "): a successor will have to bind its own listeners"));
    return;
  }
  handoff_service_ = std::move(*service);
  serves_handoff_.store(true);
}

absl::Status Server::ShutDown() {
  const bool gentle = drain_.load();
  const bool keep_socket_files = listeners_shared_.load();
  for (auto& worker : workers_) {
    Worker* w = worker.get();
    // The worker loops are still running: never refused.
    (void)w->loop->RunInLoop([this, w, gentle, keep_socket_files] {
      uint64_t deadline_ms = w->loop->NowMs() + static_cast<uint64_t>(absl::ToInt64Milliseconds(
                                                     options_.stop_timeout));
      w->BeginDrain(deadline_ms, gentle, keep_socket_files, &hurry_);
    });
  }
  for (auto& worker : workers_) worker->thread.join();
  absl::Status start_error;
  {
    std::lock_guard<std::mutex> lock(start_error_mutex_);
    start_error = start_error_;
  }
  std::lock_guard<std::mutex> lock(stopped_mutex_);
  run_state_.store(RunState::kStopped, std::memory_order_release);
  stopped_.notify_all();
  return start_error;  // The server may be gone from here on: nothing of it is touched.
}

void Server::Stop() { StopWith(/*drain=*/false); }

void Server::Drain() { StopWith(/*drain=*/true); }

void Server::StopWith(bool drain) {
  // A Stop() during a drain: the connections close now (the workers look every 5 ms).
  if (!drain) hurry_.store(true);
  RunState state = run_state_.load(std::memory_order_acquire);
  if (state == RunState::kCreated) {
    std::lock_guard<std::mutex> lock(stopped_mutex_);
    if (run_state_.compare_exchange_strong(state, RunState::kStopped)) {
      stopped_.notify_all();
      return;
    }
  }
  if (state == RunState::kRunning &&
      run_state_.compare_exchange_strong(state, RunState::kStopping)) {
    drain_.store(drain);
    // The acceptors are the main loop's to destroy, while that loop still runs; queued, so
    // that a stop from the main loop (a listener that failed to start) does not pull the list
    // from under the caller.
    (void)main_loop_->QueueInLoop([this] {
      serves_handoff_.store(false);
      for (auto& acceptor : acceptors_) {
        if (listeners_shared_.load()) acceptor->KeepSocketFile();
      }
      acceptors_.clear();
      handoff_service_.reset();
      takeover_.reset();
      main_loop_->Stop();
    });
  }
  if (IsServerThread()) return;
  std::unique_lock<std::mutex> lock(stopped_mutex_);
  stopped_.wait(lock, [this] {
    return run_state_.load(std::memory_order_acquire) == RunState::kStopped;
  });
}

bool Server::IsServerThread() const {
  if (main_loop_->IsInLoopThread()) return true;
  for (const auto& worker : workers_) {
    if (worker->loop->IsInLoopThread()) return true;
  }
  return false;
}

TimerId Server::RunAfter(absl::Duration delay, absl::AnyInvocable<void()> task) {
  return main_loop_->RunAfter(delay, std::move(task));
}

TimerId Server::RunEvery(absl::Duration interval, absl::AnyInvocable<void()> task) {
  return main_loop_->RunEvery(interval, std::move(task));
}

void Server::Cancel(TimerId id) { main_loop_->Cancel(id); }

size_t Server::NumLoops() const { return workers_.size(); }

std::vector<int> Server::Listeners() const {
  RunState state = run_state_.load(std::memory_order_acquire);
  if (state == RunState::kStopping || state == RunState::kStopped) return {};
  listeners_shared_.store(true);  // Whoever else serves them keeps a Unix socket's file.
  return listener_fds_;
}

std::shared_ptr<EventLoop> Server::Loop(size_t i) const {
  return i < workers_.size() ? workers_[i]->loop : nullptr;
}

size_t Server::ConnectionCount() const {
  size_t total = 0;
  for (const auto& worker : workers_) {
    total += worker->connection_count.load(std::memory_order_relaxed);
  }
  return total;
}

uint64_t LoopStats::closed() const {
  uint64_t total = 0;
  for (const auto& [code, count] : closes) total += count;
  return total;
}

LoopStats& LoopStats::operator+=(const LoopStats& other) {
  open_connections += other.open_connections;
  accepted += other.accepted;
  bytes_read += other.bytes_read;
  bytes_written += other.bytes_written;
  writes += other.writes;
  polls += other.polls;
  wakeups += other.wakeups;
  tasks += other.tasks;
  for (const auto& [code, count] : other.closes) closes[code] += count;
  return *this;
}

LoopStats ServerStats::Total() const {
  LoopStats total;
  for (const LoopStats& loop : loops) total += loop;
  return total;
}

ServerStats Server::Stats() const {
  ServerStats stats;
  for (const auto& worker : workers_) {
    const Connection::Counters& counters = worker->config->counters;
    LoopStats loop;
    loop.open_connections = worker->connection_count.load(std::memory_order_relaxed);
    loop.accepted = counters.opened.load(std::memory_order_relaxed);
    loop.bytes_read = counters.bytes_read.load(std::memory_order_relaxed);
    loop.bytes_written = counters.bytes_written.load(std::memory_order_relaxed);
    loop.writes = counters.writes.load(std::memory_order_relaxed);
    loop.polls = worker->loop->poll_count();
    loop.wakeups = worker->loop->wakeup_count();
    loop.tasks = worker->loop->tasks_run();
    for (size_t code = 0; code < Connection::Counters::kCodes; ++code) {
      uint64_t count = counters.closed[code].load(std::memory_order_relaxed);
      if (count != 0) loop.closes[static_cast<absl::StatusCode>(code)] = count;
    }
    stats.loops.push_back(std::move(loop));
  }
  if (limit_ != nullptr) stats.accept_pauses = limit_->pauses();
  return stats;
}

size_t Server::ConnectionCount(size_t loop) const {
  return loop < workers_.size() ? workers_[loop]->connection_count.load(std::memory_order_relaxed)
                                : 0;
}

}  // namespace gev

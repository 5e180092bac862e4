#include "server/client.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "net/connector.h"
#include "net/socket_ops.h"
#include "server/internal/handler_dispatch.h"

namespace gev {
namespace client_internal {

// The client's state, on its loop. Shared: tasks, timers and the connector's callback hold
// it weakly; the connections' Config holds it strongly (its callbacks call it) until the
// client has stopped and gone quiet, so it outlives the last OnClose.
class ClientCore : public std::enable_shared_from_this<ClientCore> {
 public:
  ClientCore(Handler* handler, ClientOptions options, std::shared_ptr<EventLoop> loop,
             std::optional<SocketAddress> address)
      : options_(std::move(options)),
        loop_(std::move(loop)),
        address_(std::move(address)),
        dispatch_(handler, options_.protocol.get()),
        random_(std::random_device{}()) {}

  void Init(const Connection::Options& connection_options) {
    auto config = std::make_shared<Connection::Config>();
    config->loop = loop_;
    config->options = connection_options;
    // Raw `this` below: this callback set holds the core itself (through on_connect), and
    // callbacks run only while a connection of it is open.
    config->callbacks.on_connect = [core = shared_from_this()](const ConnectionPtr& c) {
      core->OnEstablished(c);
    };
    config->callbacks.on_message = [this](const ConnectionPtr& c, RingBuffer& input) {
      dispatch_.OnMessage(c, input);
    };
    config->callbacks.on_close = [this](const ConnectionPtr& c, const absl::Status& reason) {
      OnConnectionClosed(c, reason);
    };
    config->callbacks.on_transport_error = [this](const ConnectionPtr& c,
                                                  const absl::Status& reason) {
      OnHandshakeFailed(c, reason);
    };
    config->callbacks.on_high_water = [this](const ConnectionPtr& c, size_t pending) {
      dispatch_.handler()->OnHighWater(*c, pending);
    };
    config->callbacks.on_low_water = [this](const ConnectionPtr& c) {
      dispatch_.handler()->OnLowWater(*c);
    };
    config->callbacks.on_peer_shutdown = [this](const ConnectionPtr& c) {
      dispatch_.handler()->OnPeerShutdown(*c);
    };
    config->callbacks.on_write_complete = [this](const ConnectionPtr& c) {
      dispatch_.handler()->OnWriteComplete(*c);
    };
    config->transport = options_.transport;
    config->dialed = true;
    config->server_name = ServerNameFor(options_);
    config_ = std::move(config);
  }

  bool MarkStarted() { return !started_.exchange(true); }

  void StartAttempt() {
    if (stopped_) return;
    attempts_.fetch_add(1, std::memory_order_relaxed);
    if (address_.has_value()) {
      Dial(*address_);
      return;
    }
    uint64_t generation = ++resolve_generation_;
    // The lookup gets connect_timeout of its own: a name service that hangs fails the attempt
    // (DeadlineExceeded), which the reconnect policy then treats as any other.
    ResolveOffLoop(loop_, options_.network, options_.address, options_.resolve,
                   options_.connect_timeout,
                   [weak = weak_from_this(), generation](absl::StatusOr<SocketAddress> address) {
                     std::shared_ptr<ClientCore> core = weak.lock();
                     if (core == nullptr || core->stopped_ ||
                         generation != core->resolve_generation_) {
                       return;
                     }
                     if (!address.ok()) {
                       core->OnAttemptFailed(address.status());
                     } else {
                       core->Dial(*address);
                     }
                   });
  }

  // `force`: the loop is about to stop and cannot flush; the connection ends at once (RST if
  // output is left), its OnClose running in the loop's last tasks.
  void StopInLoop(bool force = false) {
    if (force && connection_ != nullptr) {
      connection_->ForceClose(absl::CancelledError("client destroyed on its own loop"));
    }
    if (stopped_) return;
    stopped_ = true;
    ++resolve_generation_;  // An answer still on its way is ignored.
    if (retry_timer_ != 0) {
      loop_->Cancel(retry_timer_);
      retry_timer_ = 0;
    }
    if (connector_ != nullptr) {
      connector_->Cancel();
      connector_.reset();
    }
    if (connection_ == nullptr) {
      BecomeQuiet();
      return;
    }
    connection_->Close();
    stop_timer_ = loop_->RunAfter(options_.stop_timeout, [weak = weak_from_this()] {
      std::shared_ptr<ClientCore> core = weak.lock();
      if (core == nullptr) return;
      core->stop_timer_ = 0;
      if (core->connection_ != nullptr) {
        core->connection_->ForceClose(
            absl::CancelledError("client stopped before output was flushed"));
      }
    });
  }

  // Off the loop thread: until the connection's OnClose has run, or the loop has finished
  // (then no callback can run any more).
  void WaitUntilQuiet() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!quiet_) {
      if (quiet_changed_.wait_for(lock, std::chrono::milliseconds(20)) ==
              std::cv_status::timeout &&
          loop_->Finished()) {
        return;
      }
    }
  }

  // The loop has finished: nothing of the core runs any more, so its loop-thread state can be
  // let go from here, breaking the config's hold on the core.
  void AbandonOnFinishedLoop() {
    connector_.reset();
    connection_.reset();
    config_.reset();
    std::lock_guard<std::mutex> lock(mutex_);
    published_connection_.reset();
  }

  ConnectionPtr connection() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return published_connection_;
  }

  ClientStats Stats() const {
    ClientStats stats;
    stats.attempts = attempts_.load(std::memory_order_relaxed);
    stats.connects = connects_.load(std::memory_order_relaxed);
    stats.failures_in_a_row = failures_in_a_row_.load(std::memory_order_relaxed);
    std::lock_guard<std::mutex> lock(mutex_);
    stats.connected = published_connection_ != nullptr;
    stats.last_error = last_error_;
    stats.gave_up = gave_up_;
    return stats;
  }

 private:
  void Dial(const SocketAddress& address) {
    connector_ = Connector::Start(
        loop_.get(), address, options_.connect_timeout,
        [weak = weak_from_this(), address](absl::StatusOr<int> fd) {
          std::shared_ptr<ClientCore> core = weak.lock();
          if (core == nullptr) {
            if (fd.ok()) ::close(*fd);
            return;
          }
          core->connector_.reset();
          if (!fd.ok()) {
            core->OnAttemptFailed(fd.status());
          } else {
            core->OnConnected(*fd, address);
          }
        });
  }

  void OnConnected(int fd, const SocketAddress& address) {
    if (!address.is_unix()) {
      // Best effort, as on the server side: a socket that refuses an option still works.
      if (options_.tcp_no_delay) (void)sockets::SetTcpNoDelay(fd, true);
      if (options_.tcp_keep_alive > absl::ZeroDuration()) {
        (void)sockets::SetKeepAlive(fd, true, options_.tcp_keep_alive);
      }
    }
    ConnectionPtr connection = Connection::Create(config_, fd, address.inet());
    if (options_.context.has_value()) connection->SetContext(options_.context);
    connection_ = connection;
    // OnEstablished follows, inside Establish, or once a transport's handshake completes.
    connection->Establish();
  }

  // The connection is established (a transport's handshake included): the attempt succeeded.
  void OnEstablished(const ConnectionPtr& connection) {
    failures_in_a_row_.store(0, std::memory_order_relaxed);
    waits_ = 0;
    connects_.fetch_add(1, std::memory_order_relaxed);
    dispatch_.handler()->OnConnect(*connection);
    // Published once established (a Send from another thread then works); not if OnConnect
    // already closed it, or the client stopped in it.
    if (connection_ == connection && connection->Connected()) {
      std::lock_guard<std::mutex> lock(mutex_);
      published_connection_ = connection;
    }
  }

  void OnAttemptFailed(const absl::Status& error) {
    uint64_t failures = failures_in_a_row_.fetch_add(1, std::memory_order_relaxed) + 1;
    const ReconnectPolicy& policy = options_.reconnect;
    bool retrying =
        !stopped_ && policy.enabled &&
        (policy.max_attempts <= 0 || failures < static_cast<uint64_t>(policy.max_attempts));
    {
      std::lock_guard<std::mutex> lock(mutex_);
      last_error_ = error;
      if (!retrying) gave_up_ = true;
    }
    if (options_.on_connect_error) options_.on_connect_error(error, retrying);
    if (stopped_) return;  // The callback stopped the client.
    if (retrying) {
      ScheduleRetry();
    } else {
      BecomeQuiet();
    }
  }

  // The connection it bounded has ended.
  void CancelStopTimer() {
    if (stop_timer_ == 0) return;
    loop_->Cancel(stop_timer_);
    stop_timer_ = 0;
  }

  // Its transport's handshake failed (a bad certificate, a timeout): the handler saw no
  // OnConnect, so no OnClose either; to the client it is a failed attempt.
  void OnHandshakeFailed(const ConnectionPtr& connection, const absl::Status& reason) {
    if (connection != connection_) return;
    connection_.reset();
    CancelStopTimer();
    if (stopped_) {
      BecomeQuiet();
    } else {
      OnAttemptFailed(reason);
    }
  }

  void OnConnectionClosed(const ConnectionPtr& connection, const absl::Status& reason) {
    dispatch_.handler()->OnClose(*connection, reason);
    if (connection != connection_) return;
    connection_.reset();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      published_connection_.reset();
    }
    CancelStopTimer();
    if (stopped_) {
      BecomeQuiet();
    } else if (options_.reconnect.enabled) {
      ScheduleRetry();
    } else {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        gave_up_ = true;
      }
      BecomeQuiet();
    }
  }

  // The next wait: initial_delay, then `multiplier` times the last, up to max_delay, counted
  // from the last established connection (or the start); jittered down by up to `jitter`.
  absl::Duration NextDelay() {
    const ReconnectPolicy& policy = options_.reconnect;
    double factor = std::pow(policy.multiplier, static_cast<double>(std::min<uint64_t>(waits_, 64)));
    ++waits_;
    absl::Duration delay = std::min(policy.initial_delay * factor, policy.max_delay);
    double draw = std::uniform_real_distribution<double>(0.0, 1.0)(random_);
    return delay * (1.0 - policy.jitter * draw);
  }

  void ScheduleRetry() {
    retry_timer_ = loop_->RunAfter(NextDelay(), [weak = weak_from_this()] {
      std::shared_ptr<ClientCore> core = weak.lock();
      if (core == nullptr) return;
      core->retry_timer_ = 0;
      core->StartAttempt();
    });
  }

  // Nothing is connected and nothing is pending. Once stopped, nothing ever will be: the
  // config lets go of the core (connections still holding it keep it until they go).
  void BecomeQuiet() {
    if (stopped_) config_.reset();
    std::lock_guard<std::mutex> lock(mutex_);
    quiet_ = true;
    quiet_changed_.notify_all();
  }

  const ClientOptions options_;
  const std::shared_ptr<EventLoop> loop_;
  // Known at creation (an IP literal or a path); otherwise looked up before each attempt.
  const std::optional<SocketAddress> address_;
  std::atomic<bool> started_{false};
  std::atomic<uint64_t> attempts_{0};
  std::atomic<uint64_t> connects_{0};
  std::atomic<uint64_t> failures_in_a_row_{0};  // Written by the loop thread only.

  // Loop-thread-only state.
  server_internal::HandlerDispatch dispatch_;
  std::shared_ptr<const Connection::Config> config_;
  std::shared_ptr<Connector> connector_;
  ConnectionPtr connection_;
  TimerId retry_timer_ = 0;
  TimerId stop_timer_ = 0;
  uint64_t resolve_generation_ = 0;
  uint64_t waits_ = 0;  // Retry waits since the last established connection.
  bool stopped_ = false;
  std::mt19937_64 random_;

  mutable std::mutex mutex_;
  std::condition_variable quiet_changed_;
  ConnectionPtr published_connection_;  // Guarded by mutex_.
  absl::Status last_error_;            // Guarded by mutex_.
  bool gave_up_ = false;               // Guarded by mutex_.
  bool quiet_ = false;                 // Guarded by mutex_.
};

}  // namespace client_internal

using client_internal::ClientCore;

namespace client_internal {

std::string ServerNameFor(const ClientOptions& options) {
  if (!options.server_name.empty() || options.network == "unix") return options.server_name;
  std::string_view address = options.address;
  if (!address.empty() && address.front() == '[') {  // "[v6]:port"
    size_t end = address.find(']');
    return std::string(address.substr(1, end == std::string_view::npos ? end : end - 1));
  }
  return std::string(address.substr(0, address.rfind(':')));
}

}  // namespace client_internal

namespace {

absl::Status CheckPolicy(const ReconnectPolicy& policy) {
  if (policy.initial_delay <= absl::ZeroDuration() || policy.max_delay < policy.initial_delay) {
    return absl::InvalidArgumentError(
        "reconnect delays: initial_delay must be positive and at most max_delay");
  }
  if (!(policy.multiplier >= 1.0)) {
    return absl::InvalidArgumentError("reconnect multiplier must be at least 1");
  }
  if (!(policy.jitter >= 0.0 && policy.jitter <= 1.0)) {
    return absl::InvalidArgumentError("reconnect jitter must be within [0, 1]");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Client>> Client::Create(Handler* handler, ClientOptions options) {
  if (handler == nullptr) return absl::InvalidArgumentError("handler is null");
  if (options.address.empty()) return absl::InvalidArgumentError("client address is empty");
  if (options.reconnect.enabled) {
    absl::Status policy = CheckPolicy(options.reconnect);
    if (!policy.ok()) return policy;
  }
  if (options.connect_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("ConnectTimeout must not be negative");
  }
  if (options.transport != nullptr) {
    std::string server_name = client_internal::ServerNameFor(options);
    absl::Status dial = options.transport->CheckDial(TransportContext{true, server_name});
    if (!dial.ok()) return dial;
  }
  absl::StatusOr<Connection::Options> connection_options =
      server_internal::ConnectionOptionsFor(options);
  if (!connection_options.ok()) return connection_options.status();

  std::optional<SocketAddress> address;
  if (NeedsNameLookup(options.network, options.address)) {
    // Only the network is checked now; the name is looked up before each attempt.
    absl::StatusOr<NetworkType> network = ParseNetwork(options.network);
    if (!network.ok()) return network.status();
  } else {
    absl::StatusOr<SocketAddress> parsed = SocketAddress::Parse(options.network, options.address);
    if (!parsed.ok()) return parsed.status();
    address = *parsed;
  }

  sockets::IgnoreSigPipe();
  std::shared_ptr<EventLoop> loop = options.loop;
  bool own_loop = loop == nullptr;
  if (own_loop) {
    absl::StatusOr<std::unique_ptr<EventLoop>> created = EventLoop::Create();
    if (!created.ok()) return created.status();
    loop = std::move(*created);
  }
  auto core = std::make_shared<ClientCore>(handler, std::move(options), loop, std::move(address));
  core->Init(*connection_options);
  std::unique_ptr<Client> client(new Client(loop, std::move(core)));
  if (own_loop) client->own_loop_thread_ = std::thread([loop] { loop->Run(); });
  return client;
}

Client::Client(std::shared_ptr<EventLoop> loop, std::shared_ptr<ClientCore> core)
    : loop_(std::move(loop)), core_(std::move(core)) {}

Client::~Client() {
  if (own_loop_thread_.joinable() && loop_->IsInLoopThread()) {
    // Destroyed by one of its own callbacks: its loop stops after this callback and cannot
    // flush, so the connection ends now and its OnClose runs in the loop's last tasks; the
    // thread then finishes and lets the loop go.
    core_->StopInLoop(/*force=*/true);
    loop_->Stop();
    own_loop_thread_.detach();
    return;
  }
  Stop();
  if (own_loop_thread_.joinable()) {
    loop_->Stop();
    own_loop_thread_.join();
  }
  if (loop_->Finished()) core_->AbandonOnFinishedLoop();
}

void Client::Connect() {
  if (!core_->MarkStarted()) return;
  // Refused only by a finished loop: then there is nothing to connect on.
  (void)loop_->RunInLoop([core = core_] { core->StartAttempt(); });
}

void Client::Stop() {
  if (!loop_->RunInLoop([core = core_] { core->StopInLoop(); })) return;  // Loop finished.
  if (!loop_->IsInLoopThread()) core_->WaitUntilQuiet();
}

ConnectionPtr Client::connection() const { return core_->connection(); }

ClientStats Client::Stats() const { return core_->Stats(); }

absl::StatusOr<std::unique_ptr<Client>> Dial(Handler* handler, std::string address,
                                             ClientOptions options) {
  options.address = std::move(address);
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(handler, std::move(options));
  if (client.ok()) (*client)->Connect();
  return client;
}

}  // namespace gev

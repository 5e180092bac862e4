#include "server/datagram_server.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "eventloop/log.h"
#include "net/datagram_io.h"
#include "net/socket_ops.h"
#include "server/internal/datagram_endpoint.h"

namespace gev {

DatagramLoopStats DatagramServerStats::Total() const {
  DatagramLoopStats total;
  for (const DatagramLoopStats& loop : loops) {
    total.received += loop.received;
    total.bytes_received += loop.bytes_received;
    total.sent += loop.sent;
    total.bytes_sent += loop.bytes_sent;
    total.receive_calls += loop.receive_calls;
    total.send_calls += loop.send_calls;
    total.truncated += loop.truncated;
    total.kernel_drops += loop.kernel_drops;
    total.send_refused += loop.send_refused;
    total.queue_refused += loop.queue_refused;
    total.blocked_flushes += loop.blocked_flushes;
    total.dropped_at_stop += loop.dropped_at_stop;
    total.gso_messages += loop.gso_messages;
    total.gso_refusals += loop.gso_refusals;
    total.gro_reads += loop.gro_reads;
    total.icmp_errors += loop.icmp_errors;
  }
  return total;
}

struct DatagramServer::LoopState {
  std::shared_ptr<EventLoop> loop;
  std::shared_ptr<datagram_internal::DatagramEndpoint> endpoint;
  std::thread thread;
};

DatagramServer::DatagramServer(DatagramHandler* handler, DatagramOptions options)
    : handler_(handler), options_(options) {}

absl::StatusOr<std::unique_ptr<DatagramServer>> DatagramServer::Create(DatagramHandler* handler,
                                                                       ServerOptions options,
                                                                       DatagramOptions datagram) {
  if (handler == nullptr) return absl::InvalidArgumentError("handler is null");
  absl::StatusOr<SocketAddress> address =
      datagram_internal::ParseDatagramAddress(options.network, options.address);
  if (!address.ok()) return address.status();
  if (datagram.batch == 0 || datagram.max_datagram == 0 || datagram.batches_per_event == 0) {
    return absl::InvalidArgumentError("batch, max_datagram and batches_per_event must be positive");
  }
  int loops = options.num_loops;
  if (address->is_unix()) {
    // No SO_REUSEPORT for Unix sockets: one socket, one loop.
    if (loops > 1) {
      return absl::InvalidArgumentError("a unixgram server has one socket, served by one loop");
    }
    loops = 1;
    // The kernel would take a run sent as one UDP_SEGMENT message for one datagram.
    datagram.gso = false;
    datagram.gro = false;
  }
  if (loops <= 0) loops = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const bool reuse_port = loops > 1 || options.reuse_port;

  std::unique_ptr<DatagramServer> server(new DatagramServer(handler, datagram));
  SocketAddress bind_address = *address;
  for (int i = 0; i < loops; ++i) {
    auto state = std::make_unique<LoopState>();
    absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Create();
    if (!loop.ok()) return loop.status();
    state->loop = std::move(*loop);
    absl::StatusOr<int> fd = datagram_internal::OpenBoundDatagramSocket(bind_address, reuse_port);
    if (!fd.ok()) return fd.status();
    datagram_internal::DatagramEndpoint::Owner owner;
    owner.server = server.get();
    owner.index = static_cast<size_t>(i);
    // The endpoint owns the descriptor from here, and closes it on every return below.
    state->endpoint = std::make_shared<datagram_internal::DatagramEndpoint>(
        handler, datagram, state->loop, *fd, owner, /*connected=*/false);
    if (i == 0) {
      // Port 0 is resolved by the first bind, and the others share that port; an unnamed
      // Unix socket's abstract name is the kernel's.
      absl::StatusOr<SocketAddress> bound = sockets::LocalSocketAddress(*fd);
      if (!bound.ok()) return bound.status();
      bind_address = *bound;
      server->listen_address_ = bind_address;
      struct stat file {};
      if (bind_address.is_unix() && !bind_address.is_abstract() &&
          !bind_address.unix_path().empty() &&
          ::stat(bind_address.unix_path().c_str(), &file) == 0) {
        server->socket_file_device_ = static_cast<uint64_t>(file.st_dev);
        server->socket_file_inode_ = static_cast<uint64_t>(file.st_ino);
      }
    }
    absl::Status buffers =
        SetSocketBuffers(*fd, datagram.receive_buffer_bytes, datagram.send_buffer_bytes);
    if (!buffers.ok()) return buffers;
    if (datagram.gro) {
      absl::Status gro = EnableGro(*fd);
      // The slots are large either way; only the coalescing is lost.
      if (!gro.ok()) Log(LogSeverity::kWarning, absl::StrCat("udp server: ", gro.ToString()));
    }
    server->loops_.push_back(std::move(state));
  }
  return server;
}

DatagramServer::~DatagramServer() {
  Stop();
  {
    // A Start running on another thread joins the loops' threads and then returns: wait.
    std::unique_lock<std::mutex> lock(stopped_mutex_);
    stopped_cv_.wait(lock, [this] { return !started_.load() || start_returned_; });
  }
  // The socket file goes while the socket is still bound (the endpoints close it), so the
  // file checked here is this server's own, not a successor's.
  struct stat file {};
  if (socket_file_inode_ != 0 && ::stat(listen_address_.unix_path().c_str(), &file) == 0 &&
      static_cast<uint64_t>(file.st_dev) == socket_file_device_ &&
      static_cast<uint64_t>(file.st_ino) == socket_file_inode_) {
    (void)::unlink(listen_address_.unix_path().c_str());  // Best effort, as a listener's.
  }
}

void DatagramServer::FailToStart(const absl::Status& status) {
  Log(LogSeverity::kError, absl::StrCat("udp server: ", status.ToString()));
  {
    std::lock_guard<std::mutex> lock(stopped_mutex_);
    if (start_error_.ok()) start_error_ = status;
  }
  Stop();
}

absl::Status DatagramServer::Start() {
  if (started_.exchange(true)) return absl::FailedPreconditionError("Start() was called already");
  {
    std::lock_guard<std::mutex> lock(stopped_mutex_);
    if (stop_requested_) {
      start_returned_ = true;
      stopped_cv_.notify_all();
      return absl::OkStatus();
    }
  }
  // The tasks below reach the server and its loop states through raw pointers: they run on
  // the loops, whose threads this function joins before it returns, and the destructor waits
  // for it.
  for (size_t index = 0; index < loops_.size(); ++index) {
    LoopState* state = loops_[index].get();
    // Queued before the thread runs: they run first on the loop's own thread.
    (void)state->loop->QueueInLoop([this, state, index] {
      handler_->OnLoopStart(*state->loop, index);
      absl::Status registered = state->endpoint->Register();
      if (!registered.ok()) FailToStart(registered);
    });
    state->thread = std::thread([state] { state->loop->Run(); });
  }
  std::unique_lock<std::mutex> lock(stopped_mutex_);
  stopped_cv_.wait(lock, [this] { return stop_requested_; });
  lock.unlock();
  for (auto& owned : loops_) {
    LoopState* state = owned.get();
    // Refused only by a loop that has finished already.
    (void)state->loop->QueueInLoop([state] {
      state->endpoint->Finish(/*tries=*/20, [loop = state->loop.get()] { loop->Stop(); });
    });
  }
  for (auto& owned : loops_) {
    if (owned->thread.joinable()) owned->thread.join();
  }
  std::lock_guard<std::mutex> done(stopped_mutex_);
  start_returned_ = true;
  stopped_cv_.notify_all();
  return start_error_;
}

void DatagramServer::Stop() {
  stopping_.store(true, std::memory_order_release);
  std::lock_guard<std::mutex> lock(stopped_mutex_);
  stop_requested_ = true;
  stopped_cv_.notify_all();
}

absl::Status DatagramServer::SendTo(std::string_view payload, const SocketAddress& peer,
                                    size_t loop_hint) {
  if (payload.size() > kMaxDatagram) {
    return absl::InvalidArgumentError(
        absl::StrCat("a datagram of ", payload.size(), " bytes: the most is ", kMaxDatagram));
  }
  if (stopping_.load(std::memory_order_acquire)) {
    return absl::FailedPreconditionError("the server is stopping");
  }
  if (peer.is_unix() != listen_address_.is_unix() || (peer.is_unix() && peer.unix_path().empty())) {
    return absl::InvalidArgumentError(
        absl::StrCat("a ", listen_address_.is_unix() ? "unixgram" : "udp",
                     " server cannot send to ", peer.ToString()));
  }
  sockaddr_storage storage;
  const socklen_t length = peer.Fill(&storage);
  for (auto& owned : loops_) {
    if (owned->loop->IsInLoopThread()) {
      owned->endpoint->SendOwned(std::string(payload), &storage, length);
      return absl::OkStatus();
    }
  }
  LoopState* state = loops_[loop_hint % loops_.size()].get();
  // A task on a loop that has finished is refused, not run: the state outlives every task run.
  bool queued =
      state->loop->QueueInLoop([state, bytes = std::string(payload), storage, length]() mutable {
        state->endpoint->SendOwned(std::move(bytes), &storage, length);
      });
  if (!queued) return absl::FailedPreconditionError("the server has stopped");
  return absl::OkStatus();
}

std::shared_ptr<EventLoop> DatagramServer::Loop(size_t i) const {
  return i < loops_.size() ? loops_[i]->loop : nullptr;
}

DatagramServerStats DatagramServer::Stats() const {
  DatagramServerStats stats;
  for (const auto& state : loops_) stats.loops.push_back(state->endpoint->Snapshot());
  return stats;
}

}  // namespace gev

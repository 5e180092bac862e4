#include "server/datagram_server.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "eventloop/event_handler.h"
#include "eventloop/log.h"
#include "net/datagram_io.h"

namespace gev {

namespace {

// "udp", "udp4", "udp6" as the address parser's families, which it names after TCP's: any
// family, IPv4 only (":port" is 0.0.0.0), IPv6 (":port" is [::]).
absl::StatusOr<NetworkType> DatagramNetwork(const std::string& network) {
  if (network == "udp") return NetworkType::kTcp;
  if (network == "udp4") return NetworkType::kTcp4;
  if (network == "udp6") return NetworkType::kTcp6;
  return absl::InvalidArgumentError(
      absl::StrCat("a datagram server's network is udp, udp4 or udp6, not \"", network, "\""));
}

sockaddr_storage StorageOf(const InetAddress& address) {
  sockaddr_storage storage{};
  std::memcpy(&storage, address.sockaddr(), address.length());
  return storage;
}

// Counters written by one loop thread and read by any: relaxed atomics, added to one at a
// time by their writer.
struct Counter {
  std::atomic<uint64_t> value{0};
  void Add(uint64_t n) {
    value.store(value.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  uint64_t Get() const { return value.load(std::memory_order_relaxed); }
};

}  // namespace

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
  }
  return total;
}

struct DatagramServer::LoopState : EventHandler {
  LoopState(DatagramServer* server, size_t index, const DatagramOptions& options)
      : server(server),
        index(index),
        reader(options.batch, options.gro ? kMaxDatagram : options.max_datagram),
        writer(options.max_queued_bytes) {
    writer.set_gso(options.gso);
    // Views of the handler's Reply::View storage are copied here until the batch is flushed.
    arena.reserve(reader.batch() * std::min<size_t>(reader.slot_size(), 4096));
  }
  ~LoopState() override {
    if (fd >= 0) ::close(fd);
  }

  // --- Loop thread only, from here to the counters. ---

  // What to poll for: writability while datagrams wait for room (reading pauses meanwhile,
  // so that replies do not pile up), readability otherwise.
  Interest WantedInterest() const {
    return writer.kept_bytes() > 0 ? Interest::kWrite : Interest::kRead;
  }
  absl::Status Register() {
    Interest wanted = WantedInterest();  // A SendTo task may have run first.
    absl::Status added = loop->AddHandler(fd, wanted, this);
    if (added.ok()) registered_interest = wanted;
    return added;
  }
  void Unregister() {
    if (registered_interest == Interest::kNone) return;
    // Refused only for a descriptor not registered.
    (void)loop->RemoveHandler(fd);
    registered_interest = Interest::kNone;
  }
  void UpdateInterest() {
    if (registered_interest == Interest::kNone) return;  // Not yet registered, or finished.
    Interest wanted = WantedInterest();
    if (wanted == registered_interest) return;
    // Refused only for a descriptor not registered, which this one is.
    (void)loop->UpdateInterest(fd, wanted);
    registered_interest = wanted;
  }

  void HandleEvent(const PollEvent& event) override {
    if (event.writable || writer.kept_bytes() > 0) Flush();
    // Once stopping, nothing more is read: only what waits is sent.
    if ((event.readable || event.error) && writer.kept_bytes() == 0 && !finishing) ReadBatches();
  }

  void ReadBatches() {
    const DatagramOptions& options = server->options_;
    for (size_t round = 0; round < options.batches_per_event; ++round) {
      const int n = reader.Read(fd);
      if (n < 0) {
        // An unconnected UDP socket reports no ICMP errors by default; whatever this is, the
        // datagrams behind it are still there to read next time.
        Log(LogSeverity::kWarning, absl::StrCat("udp loop ", index, ": recvmmsg: ", strerror(-n)));
        break;
      }
      if (n == 0) break;
      receive_calls.Add(1);
      if (reader.coalesced_reads() != gro_reads.Get()) {
        gro_reads.Add(reader.coalesced_reads() - gro_reads.Get());
      }
      const uint32_t drops = reader.kernel_drops();
      if (drops != last_kernel_drops) {
        kernel_drops.Add(drops - last_kernel_drops);
        last_kernel_drops = drops;
      }
      in_batch = true;
      for (int i = 0; i < n; ++i) Handle(reader.at(static_cast<size_t>(i)));
      in_batch = false;
      Flush();
      if (writer.kept_bytes() > 0) break;  // Blocked: read on once the replies are out.
      if (static_cast<size_t>(n) < reader.batch()) break;
    }
  }

  void Handle(const DatagramReader::Datagram& received) {
    InetAddress peer = InetAddress::FromSockaddr(
        reinterpret_cast<const sockaddr*>(received.peer), received.peer_length);
    Datagram datagram{received.payload, peer, *loop, index, *server};
    this->received.Add(1);
    bytes_received.Add(received.payload.size());
    if (received.truncated) {
      truncated.Add(1);
      server->handler_->OnTruncated(datagram, received.length);
      return;
    }
    Reply reply = server->handler_->OnDatagram(datagram);
    absl::Status queued;
    switch (reply.kind()) {
      case Reply::Kind::kNothing:
        return;
      case Reply::Kind::kFromBuffer:
        // The slot stays as it is until the batch is flushed.
        queued = writer.Queue(received.peer, received.peer_length,
                              received.payload.substr(0, std::min(reply.from_buffer(),
                                                                  received.payload.size())));
        break;
      case Reply::Kind::kView: {
        // The handler may rewrite that storage on its next call: copied into the arena, which
        // the flush empties.
        std::string_view bytes = reply.bytes();
        if (arena.size() + bytes.size() > arena.capacity()) Flush();
        if (arena.size() + bytes.size() <= arena.capacity()) {
          size_t at = arena.size();
          arena.append(bytes);
          queued = writer.Queue(received.peer, received.peer_length,
                                std::string_view(arena).substr(at, bytes.size()));
        } else {
          queued = writer.QueueOwned(received.peer, received.peer_length, std::string(bytes));
        }
        break;
      }
      case Reply::Kind::kOwned:
        queued = writer.QueueOwned(received.peer, received.peer_length, reply.TakeOwned());
        break;
    }
    if (!queued.ok()) Refused(peer, queued);
  }

  void Refused(const InetAddress& peer, const absl::Status& why) {
    if (absl::IsResourceExhausted(why)) {
      queue_refused.Add(1);
    } else {
      send_refused.Add(1);
      server->handler_->OnSendError(peer, why);
    }
  }

  // Loop thread: a datagram from SendTo.
  void SendOwned(std::string bytes, const InetAddress& peer) {
    if (finished) {  // A SendTo that passed its check as the server stopped.
      dropped_at_stop.Add(1);
      return;
    }
    sockaddr_storage storage = StorageOf(peer);
    absl::Status queued = writer.QueueOwned(&storage, peer.length(), std::move(bytes));
    if (!queued.ok()) {
      Refused(peer, queued);
      return;
    }
    if (!in_batch) Flush();
  }

  void Flush() {
    if (writer.empty()) {
      arena.clear();
      return;
    }
    const uint64_t calls_before = writer.send_calls();
    const uint64_t gso_before = writer.gso_messages();
    DatagramWriter::Flushed flushed = writer.Flush(fd);
    send_calls.Add(writer.send_calls() - calls_before);
    gso_messages.Add(writer.gso_messages() - gso_before);
    if (!flushed.gso_refused.ok()) {
      gso_refusals.Add(1);
      Log(LogSeverity::kWarning,
          absl::StrCat("udp loop ", index, ": GSO refused, sending single datagrams from now on: ",
                       flushed.gso_refused.ToString()));
    }
    sent.Add(flushed.sent);
    bytes_sent.Add(flushed.bytes);
    if (flushed.refused > 0) {
      send_refused.Add(flushed.refused);
      // Once per flush, with the first refusal's peer and reason; all are counted.
      InetAddress peer;
      if (flushed.first_error_peer_length > 0) {
        peer = InetAddress::FromSockaddr(
            reinterpret_cast<const sockaddr*>(&flushed.first_error_peer),
            flushed.first_error_peer_length);
      }
      server->handler_->OnSendError(peer, flushed.first_error);
    }
    arena.clear();  // Whatever the writer still holds it has copied.
    if (flushed.blocked) blocked_flushes.Add(1);
    // From what the writer holds, not from this flush: OnSendError above may have sent, and
    // that flush may have blocked.
    UpdateInterest();
  }

  // Stop: what waits for room gets 100 ms (tries every 5 ms); what is left then is counted
  // as dropped at stop, and the loop finishes.
  void Finish(int tries_left) {
    finishing = true;
    Flush();
    if (!writer.empty() && tries_left > 0) {
      loop->RunAfter(absl::Milliseconds(5), [this, tries_left] { Finish(tries_left - 1); });
      return;
    }
    dropped_at_stop.Add(writer.Discard());
    finished = true;
    Unregister();
    loop->Stop();
  }

  DatagramLoopStats Snapshot() const {
    DatagramLoopStats stats;
    stats.received = received.Get();
    stats.bytes_received = bytes_received.Get();
    stats.sent = sent.Get();
    stats.bytes_sent = bytes_sent.Get();
    stats.receive_calls = receive_calls.Get();
    stats.send_calls = send_calls.Get();
    stats.truncated = truncated.Get();
    stats.kernel_drops = kernel_drops.Get();
    stats.send_refused = send_refused.Get();
    stats.queue_refused = queue_refused.Get();
    stats.blocked_flushes = blocked_flushes.Get();
    stats.dropped_at_stop = dropped_at_stop.Get();
    stats.gso_messages = gso_messages.Get();
    stats.gso_refusals = gso_refusals.Get();
    stats.gro_reads = gro_reads.Get();
    return stats;
  }

  DatagramServer* const server;
  const size_t index;
  std::shared_ptr<EventLoop> loop;
  std::thread thread;
  int fd = -1;
  Interest registered_interest = Interest::kNone;
  DatagramReader reader;
  DatagramWriter writer;
  std::string arena;
  bool in_batch = false;
  bool finishing = false;  // Stop has begun: no more reading.
  bool finished = false;   // Stop is done: nothing more is sent.
  uint32_t last_kernel_drops = 0;
  // --- Written by the loop thread, read by any (Stats). ---
  Counter received, bytes_received, sent, bytes_sent, receive_calls, send_calls, truncated,
      kernel_drops, send_refused, queue_refused, blocked_flushes, dropped_at_stop, gso_messages,
      gso_refusals, gro_reads;
};

DatagramServer::DatagramServer(DatagramHandler* handler, DatagramOptions options)
    : handler_(handler), options_(options) {}

absl::StatusOr<std::unique_ptr<DatagramServer>> DatagramServer::Create(DatagramHandler* handler,
                                                                       ServerOptions options,
                                                                       DatagramOptions datagram) {
  if (handler == nullptr) return absl::InvalidArgumentError("handler is null");
  absl::StatusOr<NetworkType> network = DatagramNetwork(options.network);
  if (!network.ok()) return network.status();
  absl::StatusOr<InetAddress> address = InetAddress::Parse(options.address, *network);
  if (!address.ok()) return address.status();
  if (*network == NetworkType::kTcp4 && address->family() != AF_INET) {
    return absl::InvalidArgumentError("udp4 with an IPv6 address");
  }
  if (*network == NetworkType::kTcp6 && address->family() != AF_INET6) {
    return absl::InvalidArgumentError("udp6 with an IPv4 address");
  }
  if (datagram.batch == 0 || datagram.max_datagram == 0 || datagram.batches_per_event == 0) {
    return absl::InvalidArgumentError("batch, max_datagram and batches_per_event must be positive");
  }
  int loops = options.num_loops;
  if (loops <= 0) loops = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const bool reuse_port = loops > 1 || options.reuse_port;

  std::unique_ptr<DatagramServer> server(new DatagramServer(handler, datagram));
  InetAddress bind_address = *address;
  for (int i = 0; i < loops; ++i) {
    auto state = std::make_unique<LoopState>(server.get(), static_cast<size_t>(i), datagram);
    absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Create();
    if (!loop.ok()) return loop.status();
    state->loop = std::move(*loop);
    absl::StatusOr<int> fd = OpenDatagramSocket(bind_address, reuse_port);
    if (!fd.ok()) return fd.status();
    state->fd = *fd;
    absl::Status buffers =
        SetSocketBuffers(*fd, datagram.receive_buffer_bytes, datagram.send_buffer_bytes);
    if (!buffers.ok()) return buffers;
    if (datagram.gro) {
      absl::Status gro = EnableGro(*fd);
      // The slots are large either way; only the coalescing is lost.
      if (!gro.ok()) Log(LogSeverity::kWarning, absl::StrCat("udp server: ", gro.ToString()));
    }
    if (i == 0) {
      // Port 0 is resolved by the first bind; the others share that port.
      sockaddr_storage bound{};
      socklen_t length = sizeof bound;
      if (::getsockname(*fd, reinterpret_cast<sockaddr*>(&bound), &length) != 0) {
        return absl::InternalError(absl::StrCat("getsockname: ", strerror(errno)));
      }
      bind_address = InetAddress::FromSockaddr(reinterpret_cast<const sockaddr*>(&bound), length);
      server->listen_address_ = bind_address;
    }
    server->loops_.push_back(std::move(state));
  }
  return server;
}

DatagramServer::~DatagramServer() {
  Stop();
  // A Start running on another thread joins the loops' threads and then returns: wait for it.
  std::unique_lock<std::mutex> lock(stopped_mutex_);
  stopped_cv_.wait(lock, [this] { return !started_.load() || start_returned_; });
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
  for (auto& owned : loops_) {
    LoopState* state = owned.get();
    // Queued before the thread runs: they run first on the loop's own thread.
    (void)state->loop->QueueInLoop([this, state] {
      handler_->OnLoopStart(*state->loop, state->index);
      absl::Status registered = state->Register();
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
    (void)state->loop->QueueInLoop([state] { state->Finish(/*tries_left=*/20); });
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

absl::Status DatagramServer::SendTo(std::string_view payload, const InetAddress& peer,
                                    size_t loop_hint) {
  if (payload.size() > kMaxDatagram) {
    return absl::InvalidArgumentError(
        absl::StrCat("a datagram of ", payload.size(), " bytes: the most is ", kMaxDatagram));
  }
  if (stopping_.load(std::memory_order_acquire)) {
    return absl::FailedPreconditionError("the server is stopping");
  }
  for (auto& owned : loops_) {
    if (owned->loop->IsInLoopThread()) {
      owned->SendOwned(std::string(payload), peer);
      return absl::OkStatus();
    }
  }
  LoopState* state = loops_[loop_hint % loops_.size()].get();
  // A task on a loop that has finished is refused, not run: the state outlives every task run.
  bool queued = state->loop->QueueInLoop([state, bytes = std::string(payload), peer]() mutable {
    state->SendOwned(std::move(bytes), peer);
  });
  if (!queued) return absl::FailedPreconditionError("the server has stopped");
  return absl::OkStatus();
}

std::shared_ptr<EventLoop> DatagramServer::Loop(size_t i) const {
  return i < loops_.size() ? loops_[i]->loop : nullptr;
}

DatagramServerStats DatagramServer::Stats() const {
  DatagramServerStats stats;
  for (const auto& state : loops_) stats.loops.push_back(state->Snapshot());
  return stats;
}

}  // namespace gev

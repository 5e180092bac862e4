#include "server/datagram_client.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <utility>

#include "absl/strings/str_cat.h"
#include "eventloop/log.h"
#include "net/datagram_io.h"
#include "net/socket_ops.h"
#include "server/internal/datagram_endpoint.h"

namespace gev {

absl::StatusOr<std::unique_ptr<DatagramClient>> DatagramClient::Create(
    DatagramHandler* handler, DatagramClientOptions options) {
  if (handler == nullptr) return absl::InvalidArgumentError("handler is null");
  const DatagramOptions& datagram = options.datagram;  // As adjusted below, for Unix sockets.
  if (datagram.batch == 0 || datagram.max_datagram == 0 || datagram.batches_per_event == 0) {
    return absl::InvalidArgumentError("batch, max_datagram and batches_per_event must be positive");
  }
  absl::StatusOr<SocketAddress> peer =
      datagram_internal::ParseDatagramAddress(options.network, options.address);
  if (!peer.ok()) return peer.status();
  if (peer->is_unix() && peer->unix_path().empty()) {
    return absl::InvalidArgumentError("a unixgram client needs the server's path or @name");
  }
  // Bound where asked; otherwise a UDP socket to the any-address of the peer's family, port 0
  // (connect then settles the address), and a Unix one to an abstract name the kernel picks,
  // so that the server's replies can reach it.
  absl::StatusOr<SocketAddress> local =
      peer->is_unix() ? datagram_internal::ParseDatagramAddress(options.network, "")
                      : absl::StatusOr<SocketAddress>(InetAddress::Parse(
                            ":0", peer->family() == AF_INET6 ? NetworkType::kTcp6
                                                             : NetworkType::kTcp4));
  if (!local.ok()) return local.status();
  if (!options.local_address.empty()) {
    local = datagram_internal::ParseDatagramAddress(options.network, options.local_address);
    if (!local.ok()) return local.status();
    if (local->family() != peer->family()) {
      return absl::InvalidArgumentError("the local address and the peer's differ in family");
    }
  }
  if (peer->is_unix()) {
    // The kernel would take a run sent as one UDP_SEGMENT message for one datagram.
    options.datagram.gso = false;
    options.datagram.gro = false;
  }
  absl::StatusOr<int> opened =
      datagram_internal::OpenBoundDatagramSocket(*local, /*reuse_port=*/false);
  if (!opened.ok()) return opened.status();
  const int fd = *opened;
  sockaddr_storage peer_storage;
  const socklen_t peer_length = peer->Fill(&peer_storage);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&peer_storage), peer_length) != 0) {
    const int error = errno;
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("connect ", peer->ToString(), ": ", strerror(error)));
  }
  auto fail = [fd](absl::Status status) {
    ::close(fd);
    return status;
  };
  absl::Status buffers =
      SetSocketBuffers(fd, datagram.receive_buffer_bytes, datagram.send_buffer_bytes);
  if (!buffers.ok()) return fail(buffers);
  if (datagram.gro) {
    absl::Status gro = EnableGro(fd);
    // The slots are large either way; only the coalescing is lost.
    if (!gro.ok()) Log(LogSeverity::kWarning, absl::StrCat("udp client: ", gro.ToString()));
  }

  std::unique_ptr<DatagramClient> client(new DatagramClient());
  client->peer_address_ = *peer;
  absl::StatusOr<SocketAddress> bound = sockets::LocalSocketAddress(fd);
  if (!bound.ok()) return fail(bound.status());
  client->local_address_ = *bound;
  client->loop_ = options.loop;
  if (client->loop_ == nullptr) {
    absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Create();
    if (!loop.ok()) return fail(loop.status());
    client->loop_ = std::move(*loop);
  }
  datagram_internal::DatagramEndpoint::Owner owner;
  owner.client = client.get();
  // The endpoint owns the descriptor from here.
  client->endpoint_ = std::make_shared<datagram_internal::DatagramEndpoint>(
      handler, datagram, client->loop_, fd, owner, /*connected=*/true, peer->inet());
  // Queued before an own loop's thread runs, so it runs first there.
  bool queued = client->loop_->RunInLoop([endpoint = client->endpoint_] {
    absl::Status registered = endpoint->Register();
    // A fresh descriptor is refused only for want of kernel memory; the client then hears
    // nothing, which Stats shows (no receive calls), and says why here.
    if (!registered.ok()) {
      Log(LogSeverity::kError, absl::StrCat("udp client: ", registered.ToString()));
    }
  });
  // Refused only by a shared loop that has finished (the client's own has not started).
  if (!queued) return absl::FailedPreconditionError("the client's loop has finished");
  if (options.loop == nullptr) {
    client->owns_loop_ = true;
    // The loop runs once the thread object is in place: a callback's Stop may detach it.
    std::promise<void> assigned;
    std::shared_future<void> ready = assigned.get_future().share();
    client->own_loop_thread_ = std::thread([loop = client->loop_, ready] {
      ready.wait();
      loop->Run();
    });
    assigned.set_value();
  }
  return client;
}

DatagramClient::~DatagramClient() { Stop(); }

absl::Status DatagramClient::Send(std::string_view payload) {
  if (payload.size() > kMaxDatagram) {
    return absl::InvalidArgumentError(
        absl::StrCat("a datagram of ", payload.size(), " bytes: the most is ", kMaxDatagram));
  }
  if (stopping_.load(std::memory_order_acquire)) {
    return absl::FailedPreconditionError("the client is stopping");
  }
  if (loop_->IsInLoopThread()) {
    endpoint_->SendOwned(std::string(payload), nullptr, 0);
    return absl::OkStatus();
  }
  bool queued = loop_->QueueInLoop([endpoint = endpoint_, bytes = std::string(payload)]() mutable {
    endpoint->SendOwned(std::move(bytes), nullptr, 0);
  });
  if (!queued) return absl::FailedPreconditionError("the client's loop has stopped");
  return absl::OkStatus();
}

void DatagramClient::Stop() {
  const bool first = !stopping_.exchange(true);
  auto finished = [this, own_loop = owns_loop_, loop = loop_.get()] {
    if (own_loop) loop->Stop();
    std::lock_guard<std::mutex> lock(done_mutex_);
    done_ = true;
    done_cv_.notify_all();
  };
  if (loop_->IsInLoopThread()) {
    // In a callback: nothing can wait here for room, and no callback may follow this return,
    // whoever asked first (Finish does nothing if the endpoint has finished).
    endpoint_->Finish(/*tries=*/0, finished);
    // The loop's thread is this one: it ends once this callback returns, on its own.
    if (first && owns_loop_) own_loop_thread_.detach();
    return;
  }
  if (first) {
    bool queued = loop_->QueueInLoop([endpoint = endpoint_, finished]() mutable {
      endpoint->Finish(/*tries=*/20, std::move(finished));
    });
    if (!queued) {
      // The loop has finished: nothing of the client runs on it any more.
      std::lock_guard<std::mutex> lock(done_mutex_);
      done_ = true;
    }
  }
  {
    std::unique_lock<std::mutex> lock(done_mutex_);
    while (!done_) {
      if (done_cv_.wait_for(lock, std::chrono::milliseconds(10), [this] { return done_; })) break;
      // A shared loop that stopped before the stop ran (its task or its retry timer dropped
      // with the loop): nothing of the client runs there any more.
      if (loop_->Finished()) done_ = true;
    }
  }
  // The first Stop joins an own loop's thread (a second one returns once it is done).
  if (first && owns_loop_) own_loop_thread_.join();
}

DatagramLoopStats DatagramClient::Stats() const { return endpoint_->Snapshot(); }

absl::StatusOr<std::unique_ptr<DatagramClient>> Dial(DatagramHandler* handler, std::string address,
                                                     DatagramClientOptions options) {
  options.address = std::move(address);
  return DatagramClient::Create(handler, std::move(options));
}

}  // namespace gev

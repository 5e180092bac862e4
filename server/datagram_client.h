// -----------------------------------------------------------------------------
// File: server/datagram_client.h
// -----------------------------------------------------------------------------
//
// `gev::DatagramClient` is a connected UDP (or Unix datagram) socket on a gev loop, served by the same
// `DatagramHandler` as a `DatagramServer`: OnDatagram gets each datagram from the peer (only
// the peer's reach a connected socket) and its reply goes back; Send works from any thread;
// replies and sends of one batch leave with one sendmmsg (GSO for runs of one size, as on a
// server). Network "unixgram" is a Unix datagram socket, bound to an abstract name of the
// kernel's unless told otherwise. `gev::Dial` with a DatagramHandler makes one:
//
//   class Resolver : public gev::DatagramHandler {
//     gev::Reply OnDatagram(gev::Datagram& datagram) override { ...; return {}; }
//     void OnSendError(const gev::InetAddress& peer, const absl::Status& why) override {
//       // Unavailable "... Connection refused": nothing listens on the peer's port.
//     }
//   };
//   Resolver resolver;
//   auto client = gev::Dial(&resolver, "127.0.0.1:5353");   // "udp"; options.network for more
//   (void)(*client)->Send(query);
//
// A peer's host that answers a datagram with an ICMP error (port unreachable: nothing listens
// there; host or network unreachable) reaches OnSendError as Unavailable, each error once, and
// is counted in Stats().icmp_errors: the socket's error queue (IP_RECVERR) is read, so an error
// a send took on the way is not lost. UDP promises no delivery: a datagram the peer never gets,
// with no ICMP error back, is silent here as it is on the wire; a protocol above that needs to
// know times out (EventLoop::RunAfter) and sends again.
//
// Loops: by default a client runs its own loop thread; given `options.loop` it runs on that
// loop (a server's, say). A shared loop that finishes first ends the client there (what waits
// to be sent is dropped with the loop's tasks), and Stop() then returns at once.
//
// Thread safety: Send, Stop, Stats and the accessors are thread-safe; callbacks run on the
// client's loop thread. Stop() (and the destructor) off that thread return once the client is
// done with its loop and its handler; on it (in a callback) they return at once, what waits to
// be sent is dropped (counted in dropped_at_stop), and no callback follows.

#ifndef GEV_SERVER_DATAGRAM_CLIENT_H_
#define GEV_SERVER_DATAGRAM_CLIENT_H_

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "eventloop/event_loop.h"
#include "net/inet_address.h"
#include "net/socket_address.h"
#include "server/datagram_handler.h"

namespace gev {

namespace datagram_internal {
class DatagramEndpoint;
}  // namespace datagram_internal

struct DatagramClientOptions {
  // "udp" (IPv4 or IPv6 as the address says), "udp4", "udp6", or "unixgram" (a Unix datagram
  // socket: no GSO or GRO).
  std::string network = "udp";
  // The peer: "host:port" or "[v6]:port" (a host name is looked up in Create: it may block);
  // for unixgram, the server's path or "@name".
  std::string address;
  // Where to bind first ("127.0.0.1:0", a path, "@name"); empty lets connect choose (UDP) or
  // the kernel pick an abstract name (unixgram), so that replies can come back.
  std::string local_address;
  // The loop to run on; null starts a loop thread of the client's own.
  std::shared_ptr<EventLoop> loop;
  // Batching, buffers and offloads, as a server's.
  DatagramOptions datagram;
};

class DatagramClient {
 public:
  // DatagramClient::Create() — the socket, bound and connected to `options.address`, and
  // registered with its loop (the client's own, started here, or options.loop).
  static absl::StatusOr<std::unique_ptr<DatagramClient>> Create(DatagramHandler* handler,
                                                                DatagramClientOptions options);
  ~DatagramClient();
  DatagramClient(const DatagramClient&) = delete;
  DatagramClient& operator=(const DatagramClient&) = delete;

  // DatagramClient::Send() — one datagram to the peer. InvalidArgument past the largest
  // datagram; FailedPrecondition once stopped. A refusal for a full queue (ResourceExhausted)
  // or by the kernel is known only on the loop: counted, and the kernel's goes to OnSendError.
  absl::Status Send(std::string_view payload);
  // DatagramClient::Stop() — what waits for room gets up to 100 ms (the rest is counted in
  // dropped_at_stop), the socket leaves the loop, and the client's own loop (if any) ends.
  // Idempotent.
  void Stop();

  // Where the socket is bound (a Unix client's abstract name, if the kernel picked it), and
  // the peer. Thread-safe.
  const SocketAddress& LocalAddress() const { return local_address_; }
  const SocketAddress& PeerAddress() const { return peer_address_; }
  const std::shared_ptr<EventLoop>& loop() const { return loop_; }
  DatagramLoopStats Stats() const;

 private:
  DatagramClient() = default;

  std::shared_ptr<EventLoop> loop_;
  std::shared_ptr<datagram_internal::DatagramEndpoint> endpoint_;
  bool owns_loop_ = false;       // The client started its own loop (and thread).
  std::thread own_loop_thread_;  // Joined (or, stopped on the loop, detached) by the first Stop.
  SocketAddress local_address_;
  SocketAddress peer_address_;
  std::atomic<bool> stopping_{false};
  std::mutex done_mutex_;
  std::condition_variable done_cv_;
  bool done_ = false;  // Guarded by done_mutex_: the endpoint has finished.
};

// Dial() — a DatagramClient to `address` ("udp" unless options.network says otherwise).
absl::StatusOr<std::unique_ptr<DatagramClient>> Dial(DatagramHandler* handler, std::string address,
                                                     DatagramClientOptions options = {});

}  // namespace gev

#endif  // GEV_SERVER_DATAGRAM_CLIENT_H_

// -----------------------------------------------------------------------------
// File: server/datagram_server.h
// -----------------------------------------------------------------------------
//
// `gev::DatagramServer` serves UDP on gev's loops: a `DatagramHandler` gets each datagram with
// its peer and answers by returning the reply (a `gev::Reply`, as `OnMessage` does), or sends
// with `SendTo` from any thread. Each loop reads with recvmmsg, up to `batch` datagrams per
// call into buffers it owns (no allocation per datagram), and writes the replies of a batch
// with one sendmmsg. With more than one loop, every loop has its own SO_REUSEPORT socket on the
// port and the kernel spreads peers across them (a peer's datagrams stay on one loop); with
// one loop, one socket. Runs of same-size datagrams to one peer leave as one GSO message
// (`DatagramOptions::gso`, on), and may arrive as one GRO buffer (`gro`, off).
//
//   class Echo : public gev::DatagramHandler {
//     gev::Reply OnDatagram(gev::Datagram& datagram) override {
//       return gev::Reply::FromBuffer(datagram.payload.size());   // the payload, no copy
//     }
//   };
//   Echo echo;
//   auto server = gev::NewDatagramServer(&echo, gev::Network("udp"), gev::Address(":5353"),
//                                        gev::NumLoops(2));
//   gev::ServeUntilSignal(**server);   // server/serve.h
//
// Nothing is dropped without a count: a datagram longer than `max_datagram` arrives cut and goes
// to OnTruncated (not OnDatagram), counted; the kernel's drops for want of receive buffer
// (SO_RXQ_OVFL) are counted; a reply the socket cannot take now (its buffer full) waits, up to
// `max_queued_bytes` per loop, past which it is refused and counted (SendTo returns
// ResourceExhausted); a reply the kernel refuses (too long, unreachable) reaches OnSendError.
// All counts are in Stats().
//
// Thread safety: handler callbacks run on the loop threads (one loop's callbacks never
// overlap; different loops' may). SendTo, Stop and Stats are thread-safe.

#ifndef GEV_SERVER_DATAGRAM_SERVER_H_
#define GEV_SERVER_DATAGRAM_SERVER_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "eventloop/event_loop.h"
#include "net/inet_address.h"
#include "net/socket_address.h"
#include "server/datagram_handler.h"
#include "server/options.h"

namespace gev {

struct DatagramServerStats {
  std::vector<DatagramLoopStats> loops;
  DatagramLoopStats Total() const;
};

class DatagramServer {
 public:
  // DatagramServer::Create() — binds (so the port is known and datagrams queue before Start)
  // and creates the loops. `options.network` is "udp", "udp4" or "udp6"; address, num_loops
  // (more than one: SO_REUSEPORT, whatever reuse_port says) apply; the TCP options do not. Or
  // "unixgram" with a path or "@name" (a stale socket file is replaced, and the server removes
  // its file at the end): one loop, no GSO or GRO.
  static absl::StatusOr<std::unique_ptr<DatagramServer>> Create(DatagramHandler* handler,
                                                                ServerOptions options,
                                                                DatagramOptions datagram = {});
  DatagramServer(const DatagramServer&) = delete;
  DatagramServer& operator=(const DatagramServer&) = delete;

  // Stops, and if Start is running on another thread, waits for it to return. Not from a
  // callback (a loop thread), whose thread Start joins.
  ~DatagramServer();

  // DatagramServer::Start() — serves until Stop(), then returns OK (at once if Stop came
  // first); if a loop cannot register its socket, the server stops and Start returns why.
  // The loops run on threads of their own; this thread waits.
  absl::Status Start();
  // DatagramServer::Stop() — the loops send what waits for room (for up to 100 ms; the rest
  // is counted in dropped_at_stop) and finish; Start returns. Idempotent. Thread-safe.
  void Stop();

  // DatagramServer::SendTo() — one datagram to `peer`, from any thread: on a loop thread it
  // goes with that loop's batch, from elsewhere through loop `loop_hint % NumLoops()`.
  // InvalidArgument past the largest datagram; FailedPrecondition once stopped. A refusal for
  // a full queue (ResourceExhausted) is known only on the loop: it is counted.
  // A unixgram server sends to a path or "@name" (SocketAddress::Unix).
  absl::Status SendTo(std::string_view payload, const SocketAddress& peer, size_t loop_hint = 0);

  // The bound address (port 0 resolved). Thread-safe.
  const InetAddress& ListenAddress() const { return listen_address_.inet(); }
  // The same with a unixgram server's path (ListenAddress says only the family). Thread-safe.
  const SocketAddress& ListenSocketAddress() const { return listen_address_; }
  size_t NumLoops() const { return loops_.size(); }
  // Loop `i` (< NumLoops()), or null. Thread-safe.
  std::shared_ptr<EventLoop> Loop(size_t i) const;
  // Per-loop counters (see DatagramLoopStats). Thread-safe.
  DatagramServerStats Stats() const;

 private:
  struct LoopState;
  DatagramServer(DatagramHandler* handler, DatagramOptions options);
  // A loop could not start serving: the server stops, and Start returns `status`.
  void FailToStart(const absl::Status& status);

  DatagramHandler* const handler_;
  const DatagramOptions options_;
  SocketAddress listen_address_;
  // A unixgram server's socket file, removed at the end if it is still this server's.
  uint64_t socket_file_device_ = 0;
  uint64_t socket_file_inode_ = 0;
  std::vector<std::unique_ptr<LoopState>> loops_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> started_{false};
  std::mutex stopped_mutex_;
  std::condition_variable stopped_cv_;
  bool stop_requested_ = false;  // Guarded by stopped_mutex_.
  bool start_returned_ = false;  // Guarded by stopped_mutex_.
  absl::Status start_error_;     // Guarded by stopped_mutex_.
};

// NewDatagramServer() — as NewServer: a handler and option functions (Network, Address,
// NumLoops).
template <typename... Options>
absl::StatusOr<std::unique_ptr<DatagramServer>> NewDatagramServer(DatagramHandler* handler,
                                                                  Options&&... options) {
  ServerOptions server_options;
  server_options.network = "udp";
  (Option(std::forward<Options>(options))(server_options), ...);
  return DatagramServer::Create(handler, std::move(server_options));
}

}  // namespace gev

#endif  // GEV_SERVER_DATAGRAM_SERVER_H_

// -----------------------------------------------------------------------------
// File: examples/proxy/proxy.h
// -----------------------------------------------------------------------------
//
// `gev::examples::TcpProxy` is a TCP (or Unix socket) proxy on gev's public API: the Handler of
// a Server whose every accepted connection (downstream) dials the upstream on the same loop
// and relays bytes both ways, copying nothing it need not (SendFromBuffer).
//
//   gev::examples::TcpProxy proxy({.upstream = "127.0.0.1:6379"});
//   auto server = gev::NewServer(&proxy, gev::Address(":7000"), gev::NumLoops(1),
//                                gev::HighWaterMark(proxy.options().high_water_mark),
//                                gev::PauseReadingAtHighWater(false),  // the proxy pauses
//                                gev::HalfClose(true));                // and relays FINs
//   (*server)->Start();
//
// What it promises:
//   - Downstream bytes are not read until the upstream is connected; if it cannot be, the
//     downstream is reset with the reason.
//   - Backpressure both ways: when one side's pending output crosses the high-water mark,
//     reading from the other side pauses until that output has drained below half the mark
//     (OnHighWater, OnLowWater), so a slow reader costs the proxy at most about the mark per
//     side, not the stream. Neither side pauses itself (the server is made with
//     PauseReadingAtHighWater(false), the upstream clients likewise): a side that stopped
//     reading its peer's replies because that peer reads slowly would stall a full-duplex
//     stream for good.
//   - An orderly close on one side closes the other once what it was sent is flushed; a reset
//     or error on one side resets the other (the stream is known to be cut short), and bytes
//     that can no longer be delivered end the side that sent them with a reason.
//   - Either side may be TLS (Options::upstream_transport, the server's WithTransport): the
//     relay sees plaintext, and a failed upstream handshake resets the downstream with its
//     reason as a failed connect does.
//   - A pair that moves no byte for Options::idle_timeout (nothing read on either side, and
//     neither side's peer taking any of what it was sent: pending output, and what the kernel
//     holds, SIOCOUTQ) is closed: with a FIN both ways when nothing is pending, else reset
//     (DeadlineExceeded), since what is pending would be cut short.
//   - Descriptors: a pair needs two, so a proxy must stop accepting while it could not dial.
//     Made with MaxConnections(max_pairs) (proxy_main does, with MaxPairsForDescriptorLimit()
//     after raising the limit), the server leaves clients past max_pairs in the listen backlog
//     until a pair ends. The server counts downstream connections and a pair can outlive its
//     downstream (an upstream still flushing after its downstream closed), so a client can
//     get in while Options::max_pairs pairs are open: it waits (not read, not dialed for) in
//     its loop's queue until one ends, neither reset nor given a dial that would fail for
//     want of a descriptor. The descriptors stay within two a pair: a waiting client has the
//     server slot the lingering pair's downstream gave up.
//   - Half-closes are relayed: a FIN from one side reaches the other once everything it sent
//     before it has (ShutdownWrite), and the other direction goes on until its own FIN; the
//     pair ends when both directions are done (the server is made with HalfClose(true), the
//     upstream clients likewise). A reset on one side resets the other.
//
// Thread safety: the handler is called on the server's loop threads; each pair lives on one.

#ifndef GEV_EXAMPLES_PROXY_PROXY_H_
#define GEV_EXAMPLES_PROXY_PROXY_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/client.h"
#include "server/handler.h"

namespace gev::examples {

class TcpProxy : public Handler {
 public:
  struct Options {
    std::string upstream_network = "tcp";
    std::string upstream;  // "host:port", or a path for "unix".
    absl::Duration connect_timeout = absl::Seconds(5);
    // Pending output per side past which the other side stops being read. The server's
    // HighWaterMark should be the same.
    size_t high_water_mark = 1 << 20;
    // What runs over the upstream connections (TLS to originate it: tls::ClientTransport);
    // null relays plain TCP. TLS toward the downstream side is the server's transport
    // (gev::WithTransport): the proxy then terminates it, and sees plaintext either way.
    std::shared_ptr<TransportFactory> upstream_transport;
    // The name the upstream's certificate is checked against (and sent as SNI); empty takes
    // the host of `upstream`.
    std::string upstream_server_name;
    // A pair that moves no byte for this long is closed; zero never. The pair's own clock, not
    // the connections' idle timers: a side paused for backpressure reads and writes nothing
    // while the other side moves the stream.
    absl::Duration idle_timeout = absl::ZeroDuration();
    // Most pairs open at once; zero: MaxPairsForDescriptorLimit(1) when the first client comes.
    size_t max_pairs = 0;
  };

  explicit TcpProxy(Options options);
  ~TcpProxy() override;  // Where LoopPairs is complete.

  // The pairs RLIMIT_NOFILE leaves room for now, in a server with `loops` worker loops: two
  // descriptors a pair, after a reserve for the process (listeners, pollers, wakeups, the
  // acceptor's spare, name lookups in flight).
  static size_t MaxPairsForDescriptorLimit(int loops);
  const Options& options() const { return options_; }

  void OnLoopStart(EventLoop& loop, size_t loop_index) override;
  void OnConnect(Connection& downstream) override;
  Reply OnMessage(Connection& downstream, RingBuffer& input) override;
  void OnHighWater(Connection& downstream, size_t pending) override;
  void OnLowWater(Connection& downstream) override;
  void OnPeerShutdown(Connection& downstream) override;
  void OnClose(Connection& downstream, const absl::Status& reason) override;

  // Thread-safe counts.
  uint64_t pairs_opened() const { return pairs_opened_.load(std::memory_order_relaxed); }
  uint64_t upstream_failures() const {
    return upstream_failures_.load(std::memory_order_relaxed);
  }
  // Clients that waited for a pair to end because max_pairs were open.
  uint64_t parked_for_descriptors() const { return parked_.load(std::memory_order_relaxed); }

 private:
  struct Pair;
  struct LoopPairs;
  // Closes the pairs of `loop` that moved no byte for idle_timeout.
  void EndQuietPairs(LoopPairs& loop, uint64_t now_ms);
  // A place among the max_pairs, if one is free.
  bool TakePairSlot();
  // Dials for the clients waiting on `loop` while places are free.
  void DialParked(LoopPairs& loop);
  // Dials the upstream for `pair`, which holds a place.
  void Dial(Pair* pair);
  // The upstream connections' handler.
  class Upstream : public Handler {
   public:
    void OnConnect(Connection& upstream) override;
    Reply OnMessage(Connection& upstream, RingBuffer& input) override;
    void OnHighWater(Connection& upstream, size_t pending) override;
    void OnLowWater(Connection& upstream) override;
    void OnPeerShutdown(Connection& upstream) override;
    void OnClose(Connection& upstream, const absl::Status& reason) override;
  };

  const Options options_;
  Upstream upstream_handler_;
  std::atomic<uint64_t> pairs_opened_{0};
  std::atomic<uint64_t> upstream_failures_{0};
  std::atomic<uint64_t> parked_{0};
  std::atomic<size_t> open_pairs_{0};
  std::atomic<size_t> max_pairs_{0};  // Options::max_pairs, or the limit's, set once.
  // Each loop's pairs (for the idle sweep) and waiting clients; made in OnLoopStart, then used
  // on that loop only.
  std::mutex loops_mutex_;
  std::map<size_t, std::unique_ptr<LoopPairs>> loops_;  // Guarded by loops_mutex_.
};

}  // namespace gev::examples

#endif  // GEV_EXAMPLES_PROXY_PROXY_H_

#include "examples/proxy/proxy.h"

#include <sys/ioctl.h>
#include <sys/resource.h>
#ifdef __linux__
#include <linux/sockios.h>  // SIOCOUTQ
#endif

#include <algorithm>
#include <any>
#include <deque>
#include <atomic>
#include <cstdint>
#include <memory>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace gev::examples {

// One downstream connection and its upstream, on one loop, reached from both connections'
// contexts as a plain pointer (a std::any holding a pointer copies without allocating, and the
// context is read per message). Freed when both sides have closed. Loop thread only.
struct TcpProxy::Pair {
  Connection* downstream = nullptr;  // Until its OnClose (the server holds it until then).
  Connection* upstream = nullptr;    // From its OnConnect until its OnClose.
  std::unique_ptr<Client> client;  // Dials the upstream; let go when the downstream closes.
  std::atomic<size_t>* open_pairs = nullptr;  // The proxy's count.
  LoopPairs* home = nullptr;  // Its loop's pairs.
  // In open_pairs: dialing or relaying. False while parked: accepted when max_pairs were open,
  // waiting in its loop's queue for one to end.
  bool counted = false;
  // The idle sweep's: whether it is in its loop's set (with an idle timeout), when a byte last
  // moved, and both sides' undelivered bytes at the last sweep (a change is a write's
  // progress).
  bool swept = false;
  uint64_t last_active_ms = 0;
  size_t undelivered_seen[2] = {0, 0};

  void FreeIfBothClosed();
  void Touch(const Connection& side) {
    if (swept) last_active_ms = side.loop()->NowMs();
  }
};

struct TcpProxy::LoopPairs {
  EventLoop* loop = nullptr;
  std::unordered_set<Pair*> pairs;  // With an idle timeout: every pair, for the sweep.
  std::deque<Pair*> parked;         // Oldest first.
  TimerId retry = 0;                // Dials parked pairs as pairs end; set while any wait.
};

void TcpProxy::Pair::FreeIfBothClosed() {
  if (downstream != nullptr || upstream != nullptr) return;
  if (counted) open_pairs->fetch_sub(1, std::memory_order_relaxed);
  if (swept) home->pairs.erase(this);
  delete this;
}

namespace {

// What `side` has accepted and its peer has not yet taken: its pending output, and what the
// kernel holds unsent or unacknowledged. A slow reader drains the kernel's buffer (megabytes
// once autotuned) long before the socket is writable again, so pending output alone would
// stand still while the stream moves.
size_t Undelivered(const Connection* side) {
  if (side == nullptr) return 0;
  size_t undelivered = side->PendingOutput();
#ifdef SIOCOUTQ
  int queued = 0;
  // A failure (a descriptor already closing) counts nothing: one sweep sees less movement.
  if (::ioctl(side->fd(), SIOCOUTQ, &queued) == 0 && queued > 0) {
    undelivered += static_cast<size_t>(queued);
  }
#endif
  return undelivered;
}

template <typename T>
T* ContextAs(const Connection& connection) {
  std::any context = connection.Context();
  T** pointer = std::any_cast<T*>(&context);
  return pointer != nullptr ? *pointer : nullptr;
}

// The other side ended: an orderly end is passed on once flushed, anything else as a reset.
void EndBecauseOtherSideEnded(Connection& side, const absl::Status& reason, const char* other) {
  if (reason.ok()) {
    side.Close();
  } else {
    side.ForceClose(absl::Status(reason.code(), absl::StrCat(other, ": ", reason.message())));
  }
}

// Bytes relayed to `to`; if it refuses them (closing, or its pending output at the cap), the
// sender `from` cannot be told to wait any more and is ended with the reason.
void Relay(Connection& from, RingBuffer& input, Connection* to, const char* to_name) {
  if (to == nullptr) {
    from.ForceClose(absl::UnavailableError(absl::StrCat(to_name, " is gone")));
    return;
  }
  absl::Status sent = to->SendFromBuffer(input, input.Length());
  if (!sent.ok()) {
    from.ForceClose(absl::Status(sent.code(), absl::StrCat(to_name, ": ", sent.message())));
  }
}

}  // namespace

TcpProxy::TcpProxy(Options options) : options_(std::move(options)) {}

TcpProxy::~TcpProxy() = default;

size_t TcpProxy::MaxPairsForDescriptorLimit(int loops) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) {
    return SIZE_MAX;
  }
  // Measured: 11 descriptors at rest with one loop (stdio, the listener, the acceptor's spare,
  // a poller and a wakeup per loop, and the acceptor loop's own). Per loop: its poller and
  // wakeup, and with ReusePort its listener and spare. The rest of the reserve is for name
  // lookups in flight (up to 16 resolver threads, each with a socket and a file for a moment).
  const size_t kept_back = 32 + 4 * static_cast<size_t>(std::max(loops, 1));
  return limit.rlim_cur > kept_back + 2 ? (limit.rlim_cur - kept_back) / 2 : 1;
}

bool TcpProxy::TakePairSlot() {
  const size_t max_pairs = max_pairs_.load(std::memory_order_relaxed);
  size_t open = open_pairs_.load(std::memory_order_relaxed);
  while (open < max_pairs) {
    if (open_pairs_.compare_exchange_weak(open, open + 1, std::memory_order_relaxed)) return true;
  }
  return false;
}

void TcpProxy::OnConnect(Connection& downstream) {
  if (max_pairs_.load(std::memory_order_relaxed) == 0) {
    // Read when the first client comes: the server has raised the limit by then.
    max_pairs_.store(options_.max_pairs != 0 ? options_.max_pairs : MaxPairsForDescriptorLimit(1),
                     std::memory_order_relaxed);
  }
  LoopPairs* home = nullptr;
  {
    std::lock_guard<std::mutex> lock(loops_mutex_);
    auto found = loops_.find(downstream.LoopIndex());
    if (found != loops_.end()) home = found->second.get();
  }
  if (home == nullptr) {  // Only a server that skipped OnLoopStart; never ours.
    downstream.ForceClose(absl::FailedPreconditionError("the proxy's loop was not started"));
    return;
  }
  // Nothing is read until there is somewhere to send it.
  downstream.PauseReading();
  Pair* pair = new Pair;
  pair->open_pairs = &open_pairs_;
  pair->home = home;
  pair->downstream = &downstream;
  if (options_.idle_timeout > absl::ZeroDuration()) {
    pair->swept = true;
    home->pairs.insert(pair);
    pair->Touch(downstream);
  }
  downstream.SetContext(pair);
  if (!TakePairSlot()) {
    // The server's MaxConnections let it in while pairs were still ending (an upstream
    // flushing after its downstream closed holds its descriptors): it waits, not reset.
    parked_.fetch_add(1, std::memory_order_relaxed);
    home->parked.push_back(pair);
    if (home->retry == 0) {
      home->retry = home->loop->RunEvery(absl::Milliseconds(10), [this, home] {
        DialParked(*home);
      });
    }
    return;
  }
  pair->counted = true;
  Dial(pair);
}

void TcpProxy::DialParked(LoopPairs& home) {
  while (!home.parked.empty() && TakePairSlot()) {
    Pair* pair = home.parked.front();
    home.parked.pop_front();
    pair->counted = true;
    Dial(pair);
  }
  if (home.parked.empty() && home.retry != 0) {
    home.loop->Cancel(home.retry);
    home.retry = 0;
  }
}

void TcpProxy::Dial(Pair* pair) {
  Connection& downstream = *pair->downstream;
  ClientOptions client;
  client.network = options_.upstream_network;
  client.address = options_.upstream;
  client.loop = downstream.shared_loop();  // Both sides on one thread: no locks between them.
  client.connect_timeout = options_.connect_timeout;
  client.high_water_mark = options_.high_water_mark;
  client.pause_reading_at_high_water = false;  // The downstream's OnHighWater pauses it.
  client.half_close = true;                    // Its FIN is relayed, not an end.
  client.context = pair;
  client.transport = options_.upstream_transport;
  client.server_name = options_.upstream_server_name;
  // Runs only while the client lives, and the pair owns the client.
  client.on_connect_error = [this, pair](const absl::Status& error, bool) {
    upstream_failures_.fetch_add(1, std::memory_order_relaxed);
    if (pair->downstream != nullptr) {
      pair->downstream->ForceClose(
          absl::Status(error.code(), absl::StrCat("upstream: ", error.message())));
    }
  };
  absl::StatusOr<std::unique_ptr<Client>> dialer =
      Client::Create(&upstream_handler_, std::move(client));
  if (!dialer.ok()) {
    // The pair is freed by the downstream's OnClose (its context).
    downstream.ForceClose(dialer.status());
    return;
  }
  pairs_opened_.fetch_add(1, std::memory_order_relaxed);
  pair->client = std::move(*dialer);
  pair->client->Connect();
}

void TcpProxy::OnLoopStart(EventLoop& loop, size_t loop_index) {
  auto pairs = std::make_unique<LoopPairs>();
  LoopPairs* raw = pairs.get();
  raw->loop = &loop;
  {
    std::lock_guard<std::mutex> lock(loops_mutex_);
    loops_[loop_index] = std::move(pairs);
  }
  if (options_.idle_timeout <= absl::ZeroDuration()) return;
  // A quarter of the timeout between sweeps: a quiet pair ends within 1.25 of it.
  absl::Duration every = std::max(options_.idle_timeout / 4, absl::Milliseconds(10));
  loop.RunEvery(every, [this, raw, &loop] { EndQuietPairs(*raw, loop.NowMs()); });
}

void TcpProxy::EndQuietPairs(LoopPairs& loop, uint64_t now_ms) {
  uint64_t idle_ms = static_cast<uint64_t>(absl::ToInt64Milliseconds(options_.idle_timeout));
  std::vector<Pair*> quiet;
  for (Pair* pair : loop.pairs) {
    size_t undelivered[2] = {Undelivered(pair->downstream), Undelivered(pair->upstream)};
    if (undelivered[0] != pair->undelivered_seen[0] ||
        undelivered[1] != pair->undelivered_seen[1]) {
      pair->undelivered_seen[0] = undelivered[0];
      pair->undelivered_seen[1] = undelivered[1];
      pair->last_active_ms = now_ms;  // A peer took bytes (or more were relayed).
    }
    if (now_ms - pair->last_active_ms >= idle_ms) quiet.push_back(pair);
  }
  // Closing runs no callback here (the teardowns follow as tasks), so the pairs stay.
  for (Pair* pair : quiet) {
    pair->last_active_ms = now_ms;  // Ended once.
    // What the kernel holds goes out before a FIN anyway; only our own output would be cut.
    bool nothing_pending = (pair->downstream == nullptr || pair->downstream->PendingOutput() == 0) &&
                           (pair->upstream == nullptr || pair->upstream->PendingOutput() == 0);
    for (Connection* side : {pair->downstream, pair->upstream}) {
      if (side == nullptr) continue;
      if (nothing_pending) {
        side->Close();
      } else {
        side->ForceClose(absl::DeadlineExceededError(absl::StrCat(
            "proxy pair moved no byte for ", absl::FormatDuration(options_.idle_timeout))));
      }
    }
  }
}

Reply TcpProxy::OnMessage(Connection& downstream, RingBuffer& input) {
  Pair* pair = ContextAs<Pair>(downstream);
  if (pair != nullptr) pair->Touch(downstream);
  Relay(downstream, input, pair != nullptr ? pair->upstream : nullptr, "upstream");
  return {};
}

void TcpProxy::OnHighWater(Connection& downstream, size_t) {
  Pair* pair = ContextAs<Pair>(downstream);
  if (pair != nullptr && pair->upstream != nullptr) pair->upstream->PauseReading();
}

void TcpProxy::OnLowWater(Connection& downstream) {
  Pair* pair = ContextAs<Pair>(downstream);
  if (pair != nullptr && pair->upstream != nullptr) pair->upstream->ResumeReading();
}

void TcpProxy::OnPeerShutdown(Connection& downstream) {
  // The client is done sending: the upstream hears it after what came before (ShutdownWrite
  // flushes first). Reading was paused until the upstream connected, so it is there.
  Pair* pair = ContextAs<Pair>(downstream);
  if (pair != nullptr && pair->upstream != nullptr) {
    pair->upstream->ShutdownWrite();
  } else {
    downstream.Close();
  }
}

void TcpProxy::OnClose(Connection& downstream, const absl::Status& reason) {
  Pair* pair = ContextAs<Pair>(downstream);
  if (pair == nullptr) return;
  downstream.SetContext(std::any());
  pair->downstream = nullptr;
  if (!pair->counted) {  // Parked: it leaves the queue.
    std::deque<Pair*>& parked = pair->home->parked;
    parked.erase(std::find(parked.begin(), parked.end(), pair));
  }
  if (pair->upstream != nullptr) EndBecauseOtherSideEnded(*pair->upstream, reason, "downstream");
  // On the loop thread this returns at once: a connect in progress is cancelled (no callback
  // follows), a connected upstream flushes and closes, and its OnClose follows.
  pair->client.reset();
  pair->FreeIfBothClosed();
}

void TcpProxy::Upstream::OnConnect(Connection& upstream) {
  Pair* pair = ContextAs<Pair>(upstream);
  pair->upstream = &upstream;
  if (pair->downstream == nullptr || !pair->downstream->Connected()) {
    upstream.Close();
    return;
  }
  pair->downstream->ResumeReading();
}

Reply TcpProxy::Upstream::OnMessage(Connection& upstream, RingBuffer& input) {
  Pair* pair = ContextAs<Pair>(upstream);
  pair->Touch(upstream);
  Relay(upstream, input, pair->downstream, "downstream");
  return {};
}

void TcpProxy::Upstream::OnHighWater(Connection& upstream, size_t) {
  Pair* pair = ContextAs<Pair>(upstream);
  if (pair->downstream != nullptr) pair->downstream->PauseReading();
}

void TcpProxy::Upstream::OnLowWater(Connection& upstream) {
  Pair* pair = ContextAs<Pair>(upstream);
  if (pair->downstream != nullptr) pair->downstream->ResumeReading();
}

void TcpProxy::Upstream::OnPeerShutdown(Connection& upstream) {
  Pair* pair = ContextAs<Pair>(upstream);
  if (pair->downstream != nullptr) {
    pair->downstream->ShutdownWrite();
  } else {
    upstream.Close();
  }
}

void TcpProxy::Upstream::OnClose(Connection& upstream, const absl::Status& reason) {
  Pair* pair = ContextAs<Pair>(upstream);
  upstream.SetContext(std::any());
  pair->upstream = nullptr;
  if (pair->downstream != nullptr) EndBecauseOtherSideEnded(*pair->downstream, reason, "upstream");
  // Deleting the pair destroys its client inside the client's own callback: allowed (on the
  // loop thread it only marks itself stopped), and the client's state outlives this call.
  pair->FreeIfBothClosed();
}

}  // namespace gev::examples

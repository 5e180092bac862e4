#include "examples/proxy/proxy.h"

#include <any>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"

namespace gev::examples {

// One downstream connection and its upstream, on one loop, reached from both connections'
// contexts as a plain pointer (a std::any holding a pointer copies without allocating, and the
// context is read per message). Freed when both sides have closed. Loop thread only.
struct TcpProxy::Pair {
  Connection* downstream = nullptr;  // Until its OnClose (the server holds it until then).
  Connection* upstream = nullptr;    // From its OnConnect until its OnClose.
  std::unique_ptr<Client> client;  // Dials the upstream; let go when the downstream closes.

  void FreeIfBothClosed() {
    if (downstream == nullptr && upstream == nullptr) delete this;
  }
};

namespace {

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

void TcpProxy::OnConnect(Connection& downstream) {
  // Nothing is read until there is somewhere to send it.
  downstream.PauseReading();
  Pair* pair = new Pair;
  pair->downstream = &downstream;
  downstream.SetContext(pair);

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
    downstream.ForceClose(dialer.status());
    return;
  }
  pairs_opened_.fetch_add(1, std::memory_order_relaxed);
  pair->client = std::move(*dialer);
  pair->client->Connect();
}

Reply TcpProxy::OnMessage(Connection& downstream, RingBuffer& input) {
  Pair* pair = ContextAs<Pair>(downstream);
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

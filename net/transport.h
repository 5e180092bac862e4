// -----------------------------------------------------------------------------
// File: net/transport.h
// -----------------------------------------------------------------------------
//
// `gev::Transport` is what a `Connection` puts between its socket and its buffers when the
// bytes on the wire are not the bytes its user reads and sends: TLS (//tls), say. As Envoy's
// TransportSocket, it sits under an unchanged Connection: the user's callbacks, `Send`,
// backpressure, `ShutdownWrite` and `Close` behave as on plain TCP, and the connection does not
// know what the transport does. net knows only this interface; a user who does not use a
// transport links none.
//
// A connection given a `TransportFactory` (Connection::Config::transport) makes one Transport
// when it is established, and then:
//   - reads through it: the transport reads the socket itself (`TransportIo::fd`), appends the
//     plaintext it yields to the input buffer, and says when its handshake has completed. The
//     connection is `kHandshaking` until then, and runs on_connect only then (after
//     `Transport::handshake_timeout` without it, it ends with DeadlineExceeded); on_close runs
//     after on_connect as always. A connection whose handshake fails runs neither: its reason
//     goes to `Connection::Callbacks::on_transport_error`;
//   - writes through it: what the user sends is handed to `Transport::Write`, which passes what
//     goes on the wire to `TransportIo::Write`; those bytes are gathered, written and buffered
//     as any send's, so the output, its limits and PendingOutput() count wire bytes;
//   - ends through it: before the FIN of a ShutdownWrite() or an orderly close,
//     `Transport::Shutdown` (TLS close_notify) writes its last bytes.
//
// Thread safety: a Transport is used on its connection's loop thread only. A TransportFactory
// is shared by every loop of a server: NewTransport must be thread-safe.

#ifndef GEV_NET_TRANSPORT_H_
#define GEV_NET_TRANSPORT_H_

#if __cplusplus < 201703L
#error "gev needs C++17: compile with -std=c++17 (with Bazel: build --cxxopt=-std=c++17 in .bazelrc)"
#endif

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ringbuffer/ring_buffer.h"

namespace gev {

class Connection;
class EventLoop;

// TransportIo — what a transport reaches of its connection. A small value, valid as long as the
// transport (its connection owns it): a transport may keep the one Start was given.
class TransportIo {
 public:
  // The connection's socket: the transport reads it (and may set options on it).
  int fd() const;
  EventLoop* loop() const;
  // TransportIo::Write() — sends bytes the transport made (records, handshake messages) as
  // the connection sends: gathered, written, buffered in order. Never refused for the pending
  // output cap: they stand for bytes the connection already accepted. False once the
  // connection is closed for writing (the bytes are dropped: the peer will not see them).
  bool Write(std::string_view wire_bytes);
  // TransportIo::CountRead() — counts bytes the transport read from the socket
  // (Counters::bytes_read) and marks the connection active (the idle timeout).
  void CountRead(size_t n);
  // TransportIo::Abort() — ends the connection at once with `reason` (RST), for a transport that
  // gives up outside its own calls: a TLS server evicting a stalled handshake for a new one.
  // Before on_connect the reason reaches on_transport_error. Loop thread only.
  void Abort(absl::Status reason);

 private:
  friend class Connection;
  explicit TransportIo(Connection* connection) : connection_(connection) {}
  Connection* connection_;
};

class Transport {
 public:
  virtual ~Transport() = default;

  // Transport::Start() — the connection is registered with its loop; a client writes its
  // first handshake message here. An error ends the connection with that reason.
  virtual absl::Status Start(TransportIo io) = 0;

  struct ReadResult {
    // Not OK: the connection ends with this reason (after the plaintext read before it has
    // been delivered), with a FIN after one try at writing what the transport wrote last (its
    // alert); with RST if more is left unsent.
    absl::Status error;
    // The handshake completed in this call: the connection runs on_connect.
    bool established = false;
    // The peer ended its stream. `peer_close_reason` OK: properly (TLS close_notify); the
    // connection then behaves as after a FIN. Not OK (a TCP FIN without close_notify): as
    // after a FIN too, but it ends with that reason.
    bool peer_closed = false;
    absl::Status peer_close_reason;
    // Stopped at its per-call limit with input it has not delivered: call Read again (the
    // socket may not become readable again for it).
    bool more = false;
  };
  // Transport::Read() — reads what the socket has, through the transport, and appends the
  // plaintext to `input` (at most its limit: a transport that has more closes with
  // ResourceExhausted, as a plain connection's read does).
  virtual ReadResult Read(TransportIo io, RingBuffer& input) = 0;

  // Transport::Write() — `plaintext` to send, all of it, in order; called only after the
  // handshake (the connection refuses sends before it). An error ends the connection with
  // that reason.
  virtual absl::Status Write(TransportIo io, std::string_view plaintext) = 0;

  // Transport::Shutdown() — the write side ends: the transport writes what tells its peer so
  // (TLS close_notify). Called once, before the FIN, after all pending plaintext was written.
  virtual void Shutdown(TransportIo io) = 0;

  // How long the handshake may take; zero waits as long as the idle timeout (or forever):
  // TLS's transports never return zero.
  virtual absl::Duration handshake_timeout() const = 0;

  // What the transport is, for logs and reasons ("TLS").
  virtual const char* name() const = 0;
};

// Where a connection's transport will run.
struct TransportContext {
  // True for a connection we dialed (Client): the transport starts the handshake.
  bool client = false;
  // The name the client dialed (its address's host): TLS sends it (SNI) and checks the
  // server's certificate against it. Empty for accepted connections.
  std::string_view server_name;
};

// TransportOf() — the transport `connection` runs over (Config::transport), or null: for the
// layer that made it, to read what it negotiated (tls::Info). It lives as long as the
// connection. Loop thread only.
Transport* TransportOf(const Connection& connection);

class TransportFactory {
 public:
  virtual ~TransportFactory() = default;
  // TransportFactory::NewTransport() — a transport for one new connection; an error closes
  // that connection with the reason. Thread-safe.
  virtual absl::StatusOr<std::unique_ptr<Transport>> NewTransport(
      const TransportContext& context) = 0;
  // TransportFactory::CheckDial() — whether this transport can ever make such a dial; Client's
  // Create asks once, so that a dial that could never work (TLS with no name to verify) is
  // refused there rather than failing, and reconnecting, attempt after attempt. Thread-safe.
  virtual absl::Status CheckDial(const TransportContext& context) const {
    (void)context;  // Any dial is fine unless a transport says otherwise.
    return absl::OkStatus();
  }
};

}  // namespace gev

#endif  // GEV_NET_TRANSPORT_H_

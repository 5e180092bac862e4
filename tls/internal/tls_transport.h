// -----------------------------------------------------------------------------
// File: tls/internal/tls_transport.h
// -----------------------------------------------------------------------------
//
// `TlsTransport` is the Transport (net/transport.h) of a TLS connection: it owns the
// connection's SSL, drives its handshake from the connection's reads, turns the records read
// into the plaintext the user reads and the user's sends into records, and writes close_notify
// on Shutdown. Its BIO (transport_bio.h) reads the socket and writes the connection's output.
// The server's and the client's transport factories make one per connection:
//
//   SSL* ssl = SSL_new(state->ctx);
//   auto transport = std::make_unique<TlsTransport>(ssl, /*client=*/true, std::move(name),
//                                                   state->handshake_timeout, nullptr, state);
//
// The SSL's app data points at its TlsTransport: that is how OpenSSL's callbacks
// (MessageCallback, the client's new-session callback) find it, and Info() finds the SSL.
//
// Thread safety: loop thread only, as any Transport.

#ifndef GEV_TLS_INTERNAL_TLS_TRANSPORT_H_
#define GEV_TLS_INTERNAL_TLS_TRANSPORT_H_

#include <openssl/ssl.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "net/transport.h"
#include "ringbuffer/ring_buffer.h"
#include "tls/internal/transport_bio.h"
#include "tls/tls.h"

namespace gev::tls::internal {

class TlsTransport final : public Transport, public BioBackend {
 public:
  // Takes `ssl`.
  TlsTransport(SSL* ssl, bool client, std::string server_name, absl::Duration handshake_timeout,
               std::shared_ptr<const ServerContext::Generation> generation,
               std::shared_ptr<ClientContext::State> client_state);
  ~TlsTransport() override;
  // Server: counts this handshake against max_handshakes until it completes or ends.
  void CountHandshake(std::shared_ptr<ServerContext::HandshakeCount> count) {
    handshake_count_ = std::move(count);
  }
  // EvictStalledHandshake() — at max_handshakes, a new handshake takes the place of the one on
  // this thread (loop) counted in `count` that has gone longest without a byte from its peer:
  // it ends (ResourceExhausted, RST) and its count is released at once. False when this loop
  // has none to evict. Loop thread only.
  static bool EvictStalledHandshake(const ServerContext::HandshakeCount* count);

  absl::Status Start(TransportIo io) override;
  ReadResult Read(TransportIo io, RingBuffer& input) override;
  absl::Status Write(TransportIo io, std::string_view plaintext) override;
  void Shutdown(TransportIo io) override;
  absl::Duration handshake_timeout() const override { return handshake_timeout_; }
  const char* name() const override { return "TLS"; }

  SSL* ssl() const { return ssl_; }
  bool established() const { return established_; }
  const std::string& server_name() const { return server_name_; }
  const std::shared_ptr<ClientContext::State>& client_state() const { return client_state_; }
  void NoteRenegotiation() { renegotiation_attempted_ = true; }
  bool saw_end_of_stream() const override { return saw_end_of_stream_; }

  // The BIO's side.
  int ReadSocket(char* data, int size, BIO* bio) override;
  int WriteOutput(const char* data, int size) override;

 private:
  // A failed SSL call's reason, with `what` ("TLS handshake failed").
  absl::Status Failure(int ssl_result, std::string_view what);

  SSL* const ssl_;
  const bool client_;
  const std::string server_name_;
  const absl::Duration handshake_timeout_;
  const std::shared_ptr<const ServerContext::Generation> generation_;  // Server: its SNI map.
  const std::shared_ptr<ClientContext::State> client_state_;           // Client: its sessions.
  std::optional<TransportIo> io_;  // During a call into OpenSSL: where the BIO goes.
  int read_errno_ = 0;
  bool established_ = false;
  bool renegotiation_attempted_ = false;
  bool saw_end_of_stream_ = false;
  bool socket_drained_ = false;  // In this Read(), a read returned less than it asked for.
  std::shared_ptr<ServerContext::HandshakeCount> handshake_count_;  // Until established.
  // Server, while counted: its place in this thread's list of handshakes under way (oldest
  // first), the connection to end if it is evicted, and when its peer last sent a byte.
  TlsTransport* previous_handshake_ = nullptr;
  TlsTransport* next_handshake_ = nullptr;
  bool listed_ = false;
  std::optional<TransportIo> evict_io_;
  uint64_t last_progress_ms_ = 0;

  void EndHandshakeCount();
  void ListHandshake(TransportIo io);
  void UnlistHandshake();
};

// Renegotiation: TLS 1.3 has none; a TLS 1.2 peer that sends a handshake record after the
// handshake is asking for one. OpenSSL refuses it with a warning and goes on (with
// SSL_OP_NO_RENEGOTIATION); we end the connection instead, as the issue asks of hostile peers.
// What SSL_CTX_set_msg_callback takes, on every context that allows TLS 1.2.
void MessageCallback(int write, int version, int content_type, const void* buf, size_t len,
                     SSL* ssl, void* arg);

}  // namespace gev::tls::internal

#endif  // GEV_TLS_INTERNAL_TLS_TRANSPORT_H_

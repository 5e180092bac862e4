// -----------------------------------------------------------------------------
// File: tls/tls.h
// -----------------------------------------------------------------------------
//
// TLS for gev's servers and clients, with OpenSSL 3, as a transport (net/transport.h) under an
// unchanged Connection: OnConnect runs after the handshake, OnMessage sees plaintext, Send
// encrypts (from any thread, as always), backpressure counts the bytes on the wire, and
// ShutdownWrite() and Close() send close_notify before the FIN. Only a target that depends on
// //tls links OpenSSL.
//
// A server:
//
//   gev::tls::ServerConfig tls;
//   tls.certificate = {.chain_file = "cert.pem", .key_file = "key.pem"};
//   tls.alpn = {"h2", "http/1.1"};                       // the server's preference first
//   absl::StatusOr<std::shared_ptr<gev::tls::ServerContext>> context =
//       gev::tls::ServerContext::Create(tls);
//   auto server = gev::NewServer(&handler, gev::Address(":8443"),
//                                gev::WithTransport(gev::tls::ServerTransport(*context)));
//   ...
//   (*context)->Reload(new_config);   // new handshakes use the new certificates
//
// A client (verifies the server against the system's CAs, or `ca_file`, and its name):
//
//   gev::ClientOptions options;
//   options.transport = gev::tls::ClientTransport(*gev::tls::ClientContext::Create({}));
//   gev::Dial(&handler, "example.com:443", options);
//
// In a callback, `gev::tls::Info(conn)` says what was negotiated (version, ALPN, SNI,
// resumption). Reasons of TLS failures name them: "TLS handshake failed: ...", "certificate
// verify failed: ...", "peer closed without close_notify", "renegotiation refused", and a
// handshake that takes longer than `handshake_timeout` ends with DeadlineExceeded. On a
// server, a connection whose handshake fails reaches Handler::OnTransportError (no OnConnect);
// on a client it is a failed attempt (ClientOptions::on_connect_error).
//
// Versions: TLS 1.3, and 1.2 unless `allow_tls12` is false; nothing older. Renegotiation is
// refused (the connection ends). Session resumption: the server issues tickets (stateless: no
// per-session memory) encrypted with keys it rotates every `ticket_key_lifetime`, still
// accepting (and renewing) tickets of the previous key for one more period; a client reuses
// the last session of each server name it has seen.
//
// Thread safety: contexts are thread-safe (shared by every loop; Reload and RotateTicketKeys
// from any thread). Info() is for the connection's loop thread.

#ifndef GEV_TLS_TLS_H_
#define GEV_TLS_TLS_H_

#if __cplusplus < 201703L
#error "gev needs C++17: compile with -std=c++17 (with Bazel: build --cxxopt=-std=c++17 in .bazelrc)"
#endif

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "net/connection.h"
#include "net/transport.h"

// OpenSSL's context, for the `configure` hooks; include <openssl/ssl.h> to use it.
typedef struct ssl_ctx_st SSL_CTX;

namespace gev::tls {

// A certificate chain (leaf first) and its private key, PEM: from files, or in memory. When
// both are given, the in-memory PEM wins.
struct CertificateKeyPair {
  std::string chain_file;
  std::string key_file;
  std::string chain_pem;
  std::string key_pem;
};

struct ServerConfig {
  // The certificate served when the client names no server, or a name no other one has.
  CertificateKeyPair certificate;
  // More certificates, each chosen (SNI) for the DNS names it carries (subjectAltName, or the
  // common name without one); "*.example.com" covers one label.
  std::vector<CertificateKeyPair> sni_certificates;
  // ALPN protocols, the server's preference first; empty: no ALPN. A client that offers ALPN
  // and none of these is refused (no_application_protocol), as RFC 7301 says.
  std::vector<std::string> alpn;
  // TLS 1.2 as well as 1.3.
  bool allow_tls12 = true;
  // Longest handshake (positive); the connection ends with DeadlineExceeded after it.
  absl::Duration handshake_timeout = absl::Seconds(10);
  // Most handshakes under way at once, over every loop (0: no limit): a half-open handshake
  // holds about 45 KiB of OpenSSL's buffers until its timeout, so this bounds a flood's memory
  // (4096: about 180 MiB). At the cap a new handshake takes the place of the one of its loop
  // that has gone longest without a byte from its peer, which ends at once (OnTransportError,
  // ResourceExhausted "evicted"): idle half-open sockets cannot lock real clients out for a
  // whole handshake timeout, and a client in the middle of its handshake keeps its place. Only
  // a loop with no handshake of this server to evict refuses the new one (ResourceExhausted).
  size_t max_handshakes = 4096;
  // Client certificates (mutual TLS): set, every client must present a certificate that chains
  // to one of these CAs (PEM, in memory or a file; the PEM wins), which the server names in its
  // request. A client without one, or with another, fails its handshake (OnTransportError);
  // tls::Info's peer_subject says who a client is.
  std::string client_ca_pem;
  std::string client_ca_file;
  // Resumption by session tickets; false: every handshake is a full one.
  bool session_tickets = true;
  // How long a ticket key encrypts new tickets; tickets of the key before it are accepted (and
  // replaced) for one more period.
  absl::Duration ticket_key_lifetime = absl::Hours(1);
  // Anything else OpenSSL offers (ciphers, curves, client certificates), applied to every
  // context made from this config, last.
  std::function<absl::Status(SSL_CTX*)> configure;
};

class TicketKeys;  // tls/internal/ticket_keys.h

class ServerContext {
 public:
  // ServerContext::Create() — loads and checks the certificates and keys (a key that does not
  // match its certificate is InvalidArgument).
  static absl::StatusOr<std::shared_ptr<ServerContext>> Create(ServerConfig config);
  ~ServerContext();
  ServerContext(const ServerContext&) = delete;
  ServerContext& operator=(const ServerContext&) = delete;

  // ServerContext::Reload() — a new certificate set (and ALPN list, versions...): handshakes
  // that start afterwards use it, those under way and the connections open keep theirs.
  // Ticket keys are kept, so resumption survives a reload. On error the old set stays.
  // Thread-safe.
  absl::Status Reload(ServerConfig config);
  // ServerContext::ReloadFiles() — Reload() of the current config, the files read again (a
  // renewed certificate in place). Thread-safe.
  absl::Status ReloadFiles();
  // ServerContext::RotateTicketKeys() — a new key for new tickets now; the current one
  // becomes the previous (accepted for one more period), the previous is forgotten. Thread-safe.
  void RotateTicketKeys();

  // Handshakes that started with each certificate set: 1 for the first, 2 after one Reload.
  uint64_t generation() const;

  // The certificate set new handshakes start with (tls/internal/server_state.h).
  struct Generation;
  std::shared_ptr<const Generation> current() const;
  // Handshakes under way, shared with the transports (see max_handshakes;
  // tls/internal/server_state.h).
  struct HandshakeCount;
  const std::shared_ptr<HandshakeCount>& handshakes() const { return handshakes_; }

 private:
  explicit ServerContext(std::shared_ptr<TicketKeys> keys);
  // Reload() with reload_mutex_ held.
  absl::Status ReloadLocked(ServerConfig config);

  const std::shared_ptr<TicketKeys> ticket_keys_;
  const std::shared_ptr<HandshakeCount> handshakes_;
  // Held for a whole reload (which reads files: handshakes do not wait for it, they take
  // mutex_ only), so that reloads apply in the order they were called.
  std::mutex reload_mutex_;
  mutable std::mutex mutex_;
  ServerConfig config_;                        // Guarded by mutex_.
  std::shared_ptr<const Generation> current_;  // Guarded by mutex_.
};

struct ClientConfig {
  // Trusted CAs, PEM: a file, or in memory; both empty: the system's (/etc/ssl/certs).
  std::string ca_file;
  std::string ca_pem;
  // Check the server's certificate (chain and name). Off only for tests against self-signed
  // servers: anyone in the path can then read and change the traffic.
  bool verify_peer = true;
  // ALPN protocols offered, preferred first; empty: no ALPN.
  std::vector<std::string> alpn;
  bool allow_tls12 = true;
  absl::Duration handshake_timeout = absl::Seconds(10);
  // Offer the last session of the same server name (TLS 1.3 tickets; 1.2 tickets or IDs).
  bool resume_sessions = true;
  // A client certificate, for servers that ask for one; empty: none.
  CertificateKeyPair certificate;
  std::function<absl::Status(SSL_CTX*)> configure;
};

class ClientContext {
 public:
  static absl::StatusOr<std::shared_ptr<ClientContext>> Create(ClientConfig config);
  ~ClientContext();
  ClientContext(const ClientContext&) = delete;
  ClientContext& operator=(const ClientContext&) = delete;

  // The client's context and session cache, shared with its transports
  // (tls/internal/client_state.h).
  struct State;
  const std::shared_ptr<State>& state() const { return state_; }

 private:
  explicit ClientContext(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

// ServerTransport() / ClientTransport() — what ServerOptions::transport
// (gev::WithTransport) and ClientOptions::transport take. The client's checks the server's
// certificate against ClientOptions::server_name, or the host of the address dialed (an IP
// address is checked as one, and sent as no SNI). A Unix socket has no host: with verify_peer
// on, Client::Create refuses one without server_name (InvalidArgument).
std::shared_ptr<TransportFactory> ServerTransport(std::shared_ptr<ServerContext> context);
std::shared_ptr<TransportFactory> ClientTransport(std::shared_ptr<ClientContext> context);

// What a TLS connection negotiated; empty fields before the handshake has completed.
struct ConnectionInfo {
  bool tls = false;            // The connection runs over TLS at all.
  std::string version;         // "TLSv1.3"
  std::string cipher;          // "TLS_AES_256_GCM_SHA384"
  std::string alpn;            // The selected protocol; empty if none.
  std::string server_name;     // SNI: what the client asked for (server) or sent (client).
  bool session_reused = false; // Resumed (a ticket), not a full handshake.
  std::string peer_subject;    // The peer certificate's subject, if it sent one.
};

// Info() — of `conn`'s TLS; `tls` false when it has no TLS transport. Loop thread only.
ConnectionInfo Info(const Connection& conn);

}  // namespace gev::tls

#endif  // GEV_TLS_TLS_H_

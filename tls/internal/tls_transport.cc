#include "tls/internal/tls_transport.h"

#include <openssl/err.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "eventloop/event_loop.h"
#include "tls/internal/openssl_util.h"
#include "tls/internal/server_state.h"

namespace gev::tls::internal {

TlsTransport::TlsTransport(SSL* ssl, bool client, std::string server_name,
                           absl::Duration handshake_timeout,
                           std::shared_ptr<const ServerContext::Generation> generation,
                           std::shared_ptr<ClientContext::State> client_state)
    : ssl_(ssl),
      client_(client),
      server_name_(std::move(server_name)),
      handshake_timeout_(handshake_timeout),
      generation_(std::move(generation)),
      client_state_(std::move(client_state)) {
  SSL_set_app_data(ssl_, this);
  BIO* bio = NewTransportBio(this);
  SSL_set_bio(ssl_, bio, bio);  // One BIO both ways; the SSL owns it.
  if (client_) {
    SSL_set_connect_state(ssl_);
  } else {
    SSL_set_accept_state(ssl_);
  }
}

TlsTransport::~TlsTransport() {
  EndHandshakeCount();
  SSL_free(ssl_);
}

void TlsTransport::EndHandshakeCount() {
  UnlistHandshake();
  if (handshake_count_ == nullptr) return;
  handshake_count_->in_flight.fetch_sub(1, std::memory_order_relaxed);
  handshake_count_.reset();
}

namespace {

// This thread's server handshakes under way, oldest first. A loop's transports live on its
// thread, so the list needs no lock; each server's cap is its own (HandshakeCount), so an
// eviction looks only at its own server's entries.
struct HandshakeList {
  TlsTransport* front = nullptr;
  TlsTransport* back = nullptr;
};
thread_local HandshakeList this_thread_handshakes;

}  // namespace

void TlsTransport::ListHandshake(TransportIo io) {
  evict_io_ = io;
  last_progress_ms_ = io.loop()->NowMs();
  HandshakeList& list = this_thread_handshakes;
  previous_handshake_ = list.back;
  (list.back != nullptr ? list.back->next_handshake_ : list.front) = this;
  list.back = this;
  listed_ = true;
}

void TlsTransport::UnlistHandshake() {
  if (!listed_) return;
  HandshakeList& list = this_thread_handshakes;
  (previous_handshake_ != nullptr ? previous_handshake_->next_handshake_ : list.front) =
      next_handshake_;
  (next_handshake_ != nullptr ? next_handshake_->previous_handshake_ : list.back) =
      previous_handshake_;
  previous_handshake_ = next_handshake_ = nullptr;
  listed_ = false;
}

bool TlsTransport::EvictStalledHandshake(const ServerContext::HandshakeCount* count) {
  // The one quiet longest: a socket that opened a handshake and sends nothing (or a byte now
  // and then) loses its place before a client in the middle of its handshake. A scan: the cap
  // is reached only under a flood, and a few thousand entries take microseconds.
  TlsTransport* victim = nullptr;
  for (TlsTransport* t = this_thread_handshakes.front; t != nullptr; t = t->next_handshake_) {
    if (t->handshake_count_.get() != count) continue;
    if (victim == nullptr || t->last_progress_ms_ < victim->last_progress_ms_) victim = t;
  }
  if (victim == nullptr) return false;
  TransportIo io = *victim->evict_io_;
  uint64_t quiet_ms = io.loop()->NowMs() - victim->last_progress_ms_;
  victim->EndHandshakeCount();  // Its place is the new handshake's from now on.
  io.Abort(absl::ResourceExhaustedError(absl::StrCat(
      "TLS: evicted at max_handshakes for a new handshake, after ", quiet_ms,
      " ms without a byte")));
  return true;
}

int TlsTransport::ReadSocket(char* data, int size, BIO* bio) {
  BIO_clear_retry_flags(bio);
  if (socket_drained_) {
    BIO_set_retry_read(bio);
    return -1;
  }
  ssize_t n;
  do {
    n = ::read(io_->fd(), data, static_cast<size_t>(size));
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    io_->CountRead(static_cast<size_t>(n));
    if (listed_) last_progress_ms_ = io_->loop()->NowMs();
    // Less than asked for: the socket is empty for now. The next read of this call would only
    // say EAGAIN (a syscall per event for nothing); the poller, level-triggered, reports what
    // arrives later.
    if (n < size) socket_drained_ = true;
    return static_cast<int>(n);
  }
  if (n == 0) {  // The peer's FIN: OpenSSL says whether a close_notify came first.
    saw_end_of_stream_ = true;
    return 0;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    BIO_set_retry_read(bio);
    return -1;
  }
  read_errno_ = errno;
  return -1;
}

int TlsTransport::WriteOutput(const char* data, int size) {
  // A connection closed for writing drops them: nobody will read them. Taken as written, so
  // that OpenSSL's state does not wait for a retry that never comes.
  (void)io_->Write(std::string_view(data, static_cast<size_t>(size)));
  return size;
}

absl::Status TlsTransport::Failure(int ssl_result, std::string_view what) {
  int error = SSL_get_error(ssl_, ssl_result);
  if (error == SSL_ERROR_SYSCALL && read_errno_ != 0) {
    ERR_clear_error();
    return absl::ErrnoToStatus(read_errno_, absl::StrCat(std::string(what), ": read"));
  }
  long verify = client_ ? SSL_get_verify_result(ssl_) : X509_V_OK;
  if (verify != X509_V_OK) {
    ERR_clear_error();
    return absl::UnauthenticatedError(
        absl::StrCat(std::string(what), ": certificate verify failed: ",
                     X509_verify_cert_error_string(verify)));
  }
  return absl::UnavailableError(absl::StrCat(std::string(what), ": ", DrainErrors()));
}

absl::Status TlsTransport::Start(TransportIo io) {
  if (!client_) {
    // A server waits for the ClientHello; until its handshake ends it may be evicted.
    if (handshake_count_ != nullptr) ListHandshake(io);
    return absl::OkStatus();
  }
  ERR_clear_error();  // As in Write().
  io_ = io;
  int result = SSL_do_handshake(ssl_);  // Writes the ClientHello.
  absl::Status status;
  if (result != 1) {
    int error = SSL_get_error(ssl_, result);
    if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE) {
      status = Failure(result, "TLS handshake failed");
    }
  }
  io_.reset();
  return status;
}

Transport::ReadResult TlsTransport::Read(TransportIo io, RingBuffer& input) {
  // Most plaintext one call delivers: a peer that keeps the socket full does not keep the
  // loop from its other connections.
  constexpr size_t kMaxPlaintextPerRead = 256 * 1024;
  ReadResult result;
  ERR_clear_error();  // As in Write().
  io_ = io;
  socket_drained_ = false;
  if (!established_) {
    int handshake = SSL_do_handshake(ssl_);
    if (handshake != 1) {
      int error = SSL_get_error(ssl_, handshake);
      if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE) {
        if (error == SSL_ERROR_SSL &&
            ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
          ERR_clear_error();
          result.error = absl::UnavailableError("TLS handshake failed: the peer closed");
        } else {
          result.error = Failure(handshake, "TLS handshake failed");
        }
      }
      io_.reset();
      return result;
    }
    established_ = true;
    result.established = true;
    EndHandshakeCount();
  }
  char* scratch = io.loop()->scratch_buffer();
  size_t delivered = 0;
  for (;;) {
    if (renegotiation_attempted_) {
      result.error = absl::UnavailableError("TLS renegotiation refused");
      break;
    }
    if (delivered >= kMaxPlaintextPerRead) {
      result.more = true;
      break;
    }
    size_t n = 0;
    int read = SSL_read_ex(ssl_, scratch, EventLoop::kScratchSize, &n);
    if (read == 1) {
      if (!input.Write(scratch, n)) {
        result.error = absl::ResourceExhaustedError("input buffer limit exceeded");
        break;
      }
      delivered += n;
      continue;
    }
    int error = SSL_get_error(ssl_, read);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) break;
    if (error == SSL_ERROR_ZERO_RETURN) {  // close_notify.
      result.peer_closed = true;
      break;
    }
    if (error == SSL_ERROR_SSL &&
        ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
      ERR_clear_error();
      result.peer_closed = true;
      result.peer_close_reason = absl::UnavailableError(
          "TLS: the peer closed without close_notify (its stream may be truncated)");
      break;
    }
    result.error = Failure(read, "TLS error");
    break;
  }
  // OpenSSL answers a renegotiation request with a warning and waits: a peer that then says
  // nothing must not stay connected.
  if (renegotiation_attempted_ && result.error.ok()) {
    result.error = absl::UnavailableError("TLS renegotiation refused");
  }
  io_.reset();
  return result;
}

absl::Status TlsTransport::Write(TransportIo io, std::string_view plaintext) {
  if (plaintext.empty()) return absl::OkStatus();
  if (!established_) {
    // The connection sends only after on_connect; this would be a bug of its.
    return absl::FailedPreconditionError("TLS: write before the handshake completed");
  }
  // A stale error another call left on this thread's queue would make SSL_get_error misread
  // this call's outcome.
  ERR_clear_error();
  io_ = io;
  size_t written = 0;
  int result = SSL_write_ex(ssl_, plaintext.data(), plaintext.size(), &written);
  absl::Status status = result == 1 ? absl::OkStatus() : Failure(result, "TLS write failed");
  io_.reset();
  return status;
}

void TlsTransport::Shutdown(TransportIo io) {
  if (!established_) return;
  io_ = io;
  // Writes close_notify. 0 (sent, the peer's not yet read) is the expected answer, and a
  // failure leaves nothing to do: the FIN follows either way.
  (void)SSL_shutdown(ssl_);
  ERR_clear_error();
  io_.reset();
}

void MessageCallback(int write, int version, int content_type, const void* buf, size_t len,
                     SSL* ssl, void* arg) {
  (void)version;
  (void)arg;
  if (write || content_type != SSL3_RT_HEADER || len < 1) return;
  if (static_cast<const unsigned char*>(buf)[0] != SSL3_RT_HANDSHAKE) return;
  if (!SSL_is_init_finished(ssl) || SSL_version(ssl) >= TLS1_3_VERSION) return;
  if (auto* transport = static_cast<TlsTransport*>(SSL_get_app_data(ssl))) {
    transport->NoteRenegotiation();
  }
}

}  // namespace gev::tls::internal

// -----------------------------------------------------------------------------
// File: tls/internal/transport_bio.h
// -----------------------------------------------------------------------------
//
// Our BIO, under each TLS connection's SSL in both directions: it reads the connection's
// socket, and hands what OpenSSL writes to the connection's output (gathered and written as any
// send), so records from many sends leave in one write. It reaches the connection through a
// `BioBackend` (TlsTransport is one), so the BIO knows nothing of the transport that owns it:
//
//   BIO* bio = NewTransportBio(this);   // `this` a BioBackend, alive as long as the BIO
//   SSL_set_bio(ssl, bio, bio);         // One BIO both ways; the SSL owns it.
//
// Thread safety: a BIO is used where its SSL is, on the connection's loop thread;
// NewTransportBio may be called from any thread (the method is made once).

#ifndef GEV_TLS_INTERNAL_TRANSPORT_BIO_H_
#define GEV_TLS_INTERNAL_TRANSPORT_BIO_H_

#include <openssl/bio.h>

namespace gev::tls::internal {

// What the BIO reads from and writes to.
class BioBackend {
 public:
  // BioBackend::ReadSocket() — BIO_read: up to `size` bytes into `data`. What a socket read
  // returns, with `bio`'s retry flag set when it would block.
  virtual int ReadSocket(char* data, int size, BIO* bio) = 0;
  // BioBackend::WriteOutput() — BIO_write: `data` to the connection's output.
  virtual int WriteOutput(const char* data, int size) = 0;
  // BioBackend::saw_end_of_stream() — a read returned the peer's FIN (BIO_CTRL_EOF: how
  // OpenSSL tells the peer's FIN from an error).
  virtual bool saw_end_of_stream() const = 0;

 protected:
  ~BioBackend() = default;  // The BIO never owns its backend.
};

// NewTransportBio() — a BIO of our method over `backend`.
BIO* NewTransportBio(BioBackend* backend);

}  // namespace gev::tls::internal

#endif  // GEV_TLS_INTERNAL_TRANSPORT_BIO_H_

#include "tls/internal/transport_bio.h"

namespace gev::tls::internal {
namespace {

// The BIO method, made once.
int BioWrite(BIO* bio, const char* data, int size) {
  return static_cast<BioBackend*>(BIO_get_data(bio))->WriteOutput(data, size);
}

int BioRead(BIO* bio, char* data, int size) {
  return static_cast<BioBackend*>(BIO_get_data(bio))->ReadSocket(data, size, bio);
}

long BioCtrl(BIO* bio, int command, long arg, void* ptr) {
  (void)arg;
  (void)ptr;
  switch (command) {
    case BIO_CTRL_FLUSH:  // After each flight; our writes are already with the connection.
      return 1;
    case BIO_CTRL_EOF:  // How OpenSSL tells the peer's FIN from an error.
      return static_cast<BioBackend*>(BIO_get_data(bio))->saw_end_of_stream() ? 1 : 0;
    default:
      return 0;
  }
}

int BioCreate(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

const BIO_METHOD* TransportBioMethod() {
  static BIO_METHOD* const method = [] {
    BIO_METHOD* made = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "gev");
    BIO_meth_set_write(made, BioWrite);
    BIO_meth_set_read(made, BioRead);
    BIO_meth_set_ctrl(made, BioCtrl);
    BIO_meth_set_create(made, BioCreate);
    return made;
  }();
  return method;
}

}  // namespace

BIO* NewTransportBio(BioBackend* backend) {
  BIO* bio = BIO_new(TransportBioMethod());
  // A BioBackend*, not its derived class's: the casts above read it back as one.
  BIO_set_data(bio, backend);
  return bio;
}

}  // namespace gev::tls::internal

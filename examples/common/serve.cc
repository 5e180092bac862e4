#include "examples/common/serve.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "server/serve.h"

namespace gev::examples {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "error: %s\n", status.ToString().c_str());
  return 1;
}

std::string AddressForPort(int port) { return absl::StrCat(":", port); }

int ServeUntilSignal(Server& server) {
  absl::Status served = gev::ServeUntilSignal(server);
  return served.ok() ? 0 : Fail(served);
}

int ServeUntilSignal(DatagramServer& server) {
  absl::Status served = gev::ServeUntilSignal(server);
  return served.ok() ? 0 : Fail(served);
}

}  // namespace gev::examples

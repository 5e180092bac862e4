// For tests: names for Unix sockets that no other test (or run of this one) shares. Socket
// files go in a directory short enough for sun_path's 107 bytes (Bazel's TEST_TMPDIR can be
// longer); abstract names carry the process id and a random part. Thread safety: plain
// functions.

#ifndef GEV_NET_TESTING_SOCKET_PATHS_H_
#define GEV_NET_TESTING_SOCKET_PATHS_H_

#include <stdlib.h>
#include <unistd.h>

#include <random>
#include <string>

namespace gev::testing {

inline std::string SocketDirectory() {
  const char* test_tmp = std::getenv("TEST_TMPDIR");
  if (test_tmp != nullptr && std::string(test_tmp).size() < 60) return test_tmp;
  static std::string directory = [] {
    char pattern[] = "/tmp/gev-unix-XXXXXX";
    const char* made = ::mkdtemp(pattern);
    return std::string(made != nullptr ? made : "/tmp");
  }();
  return directory;
}

// A path for a socket file named `name`, nothing there yet.
inline std::string SocketPath(const std::string& name) {
  std::string path = SocketDirectory() + "/" + name + "." + std::to_string(::getpid());
  ::unlink(path.c_str());
  return path;
}

// "@gev-NAME-PID-RANDOM".
inline std::string AbstractSocketName(const std::string& name) {
  static thread_local std::mt19937_64 random(std::random_device{}());
  return "@gev-" + name + "-" + std::to_string(::getpid()) + "-" + std::to_string(random());
}

}  // namespace gev::testing

#endif  // GEV_NET_TESTING_SOCKET_PATHS_H_

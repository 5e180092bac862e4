#include "net/testing/test_process.h"

#include <spawn.h>
#include <unistd.h>

#include <cstdlib>
#include <vector>

extern char** environ;

namespace gev::testing {

pid_t StartTestProcess(const std::string& gtest_name, const std::string& environment_entry,
                       const std::function<void()>& body_after_fork) {
#ifdef __linux__
  (void)body_after_fork;  // The re-executed binary runs the named test instead.
  std::string entry = environment_entry;
  std::vector<char*> environment;
  for (char** variable = environ; *variable != nullptr; ++variable) {
    environment.push_back(*variable);
  }
  environment.push_back(entry.data());
  environment.push_back(nullptr);
  std::string program = "test_process";
  std::string all = "--gtest_also_run_disabled_tests";
  std::string filter = "--gtest_filter=" + gtest_name;
  char* arguments[] = {program.data(), all.data(), filter.data(), nullptr};
  pid_t child = -1;
  if (::posix_spawn(&child, "/proc/self/exe", nullptr, nullptr, arguments,
                    environment.data()) != 0) {
    return -1;
  }
  return child;
#else
  (void)gtest_name;
  (void)environment_entry;
  pid_t child = ::fork();
  if (child == 0) {
    body_after_fork();
    ::_exit(0);
  }
  return child;
#endif
}

}  // namespace gev::testing

// GEV_CHECK(condition, message): aborts with a message when a programmer error is detected
// (wrong thread, broken invariant). Never used for a failed system call or a peer's behaviour:
// those are reported as absl::Status or a closed connection.
//
// abseil 20220623 has no absl/log, so this is the project's own, small and dependency-free.
//
// Thread safety: usable from any thread.

#ifndef GEV_EVENTLOOP_CHECK_H_
#define GEV_EVENTLOOP_CHECK_H_

namespace gev::check_internal {
[[noreturn]] void CheckFailed(const char* file, int line, const char* condition,
                              const char* message);
}  // namespace gev::check_internal

#define GEV_CHECK(condition, message)                                                \
  do {                                                                               \
    if (__builtin_expect(!(condition), 0)) {                                         \
      ::gev::check_internal::CheckFailed(__FILE__, __LINE__, #condition, (message)); \
    }                                                                                \
  } while (false)

#endif  // GEV_EVENTLOOP_CHECK_H_

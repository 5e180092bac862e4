#include "net/resolver.h"

#include <arpa/inet.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace gev {
namespace {

// One lookup's answer reaches `done` once, on the loop: the answer, or DeadlineExceeded when
// the timeout comes first (the answer is then dropped). Touched on the loop thread only.
struct Pending {
  absl::AnyInvocable<void(absl::StatusOr<SocketAddress>)> done;
  // The timeout's timer. Set before the lookup is queued, so the answer's task (which the
  // resolver thread queues after taking the lookup under the pool's lock) sees it.
  EventLoop* loop = nullptr;
  TimerId timer = 0;

  // `from_timer`: the timer itself, which does not read `timer` (it may fire before the
  // caller has stored it).
  void Finish(absl::StatusOr<SocketAddress> address, bool from_timer) {
    if (!done) return;  // The other one came first.
    if (!from_timer && timer != 0) loop->Cancel(timer);
    auto callback = std::move(done);
    done = nullptr;
    callback(std::move(address));
  }
};

struct Lookup {
  std::shared_ptr<EventLoop> loop;
  std::string network;
  std::string address;
  ResolveFunction resolve;
  std::shared_ptr<Pending> pending;
  // Past it the name service is not asked (the timeout has answered); monotonic, so that a
  // clock step cannot fail lookups.
  std::optional<std::chrono::steady_clock::time_point> deadline;
};

// A few threads for every lookup of the process, started as lookups wait for one and ended
// after a quiet spell: lookups are rare (a connect, a reconnect), yet a burst of them (a proxy
// dialing for many clients at once) should not be answered one after another, and a name
// service that hangs should not hold a thread per reconnecting client either (kMaxThreads).
class ResolverPool {
 public:
  static constexpr size_t kMaxThreads = 16;
  static constexpr size_t kMaxQueued = 4096;
  static constexpr std::chrono::seconds kIdleExit{30};

  static ResolverPool& Get() {
    // Never destroyed: a lookup may still be running at exit, and joining it would wait for DNS.
    static ResolverPool* pool = new ResolverPool;
    return *pool;
  }

  void Add(Lookup lookup) {
    bool start_thread = false;
    bool refused = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (queue_.size() >= kMaxQueued) {
        refused = true;
      } else {
        queue_.push_back(std::move(lookup));
        // Every waiting lookup gets a thread of its own, up to the cap.
        if (queue_.size() > idle_ && threads_ < kMaxThreads) {
          ++threads_;
          start_thread = true;
        }
      }
    }
    if (refused) {
      std::string why = absl::StrCat("resolving \"", lookup.address, "\": ", kMaxQueued,
                                     " lookups are waiting already");
      Answer(std::move(lookup), absl::ResourceExhaustedError(why));
      return;
    }
    if (start_thread) {
      std::thread([this] { Serve(); }).detach();
    } else {
      ready_.notify_one();
    }
  }

 private:
  static void Answer(Lookup lookup, absl::StatusOr<SocketAddress> address) {
    // Refused by a finished loop, which destroys the task unrun: nobody waits for it any more.
    (void)lookup.loop->QueueInLoop(
        [pending = std::move(lookup.pending), address = std::move(address)]() mutable {
          pending->Finish(std::move(address), /*from_timer=*/false);
        });
  }

  void Serve() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (true) {
      ++idle_;
      bool woken = ready_.wait_for(lock, kIdleExit, [this] { return !queue_.empty(); });
      --idle_;
      if (!woken) {
        if (threads_ > 1) {  // One stays for the next lookup.
          --threads_;
          return;
        }
        continue;
      }
      Lookup lookup = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      absl::StatusOr<SocketAddress> address =
          lookup.deadline.has_value() && std::chrono::steady_clock::now() >= *lookup.deadline
              // Its timeout has answered already; the name service is not asked in vain.
              ? absl::StatusOr<SocketAddress>(absl::DeadlineExceededError("lookup not started"))
          : lookup.resolve ? lookup.resolve(lookup.network, lookup.address)
                           : SocketAddress::Parse(lookup.network, lookup.address);
      Answer(std::move(lookup), std::move(address));
      lock.lock();
    }
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Lookup> queue_;  // Guarded by mutex_, as the counts.
  size_t threads_ = 0;
  size_t idle_ = 0;
};

}  // namespace

bool NeedsNameLookup(absl::string_view network, absl::string_view address) {
  if (network == "unix") return false;
  size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos) return false;
  absl::string_view host = address.substr(0, colon);
  if (host.empty()) return false;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  std::string text(host);
  in6_addr v6;
  in_addr v4;
  return ::inet_pton(AF_INET, text.c_str(), &v4) != 1 &&
         ::inet_pton(AF_INET6, text.c_str(), &v6) != 1;
}

void ResolveOffLoop(std::shared_ptr<EventLoop> loop, std::string network, std::string address,
                    ResolveFunction resolve, absl::Duration timeout,
                    absl::AnyInvocable<void(absl::StatusOr<SocketAddress>)> done) {
  auto pending = std::make_shared<Pending>();
  pending->done = std::move(done);
  Lookup lookup{loop, std::move(network), address, std::move(resolve), pending, std::nullopt};
  if (timeout > absl::ZeroDuration() && timeout != absl::InfiniteDuration()) {
    lookup.deadline = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(timeout);
    pending->loop = loop.get();
    pending->timer = loop->RunAfter(timeout, [pending, address, timeout] {
      pending->Finish(absl::DeadlineExceededError(absl::StrCat("resolving \"", address,
                                                               "\" took longer than ",
                                                               absl::FormatDuration(timeout))),
                      /*from_timer=*/true);
    });
  }
  ResolverPool::Get().Add(std::move(lookup));
}

}  // namespace gev

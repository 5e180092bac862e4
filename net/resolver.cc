#include "net/resolver.h"

#include <arpa/inet.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>

namespace gev {
namespace {

struct Lookup {
  std::shared_ptr<EventLoop> loop;
  std::string network;
  std::string address;
  ResolveFunction resolve;
  absl::AnyInvocable<void(absl::StatusOr<SocketAddress>)> done;
};

// One thread for every lookup of the process: lookups are rare (a connect, a reconnect) and
// a thread each would be a thread per reconnecting client when DNS hangs.
class ResolverThread {
 public:
  static ResolverThread& Get() {
    // Never destroyed: a lookup may still be running at exit, and joining it would wait for DNS.
    static ResolverThread* resolver = new ResolverThread;
    return *resolver;
  }

  void Add(Lookup lookup) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(std::move(lookup));
    }
    ready_.notify_one();
  }

 private:
  ResolverThread() {
    std::thread([this] { Serve(); }).detach();
  }

  void Serve() {
    while (true) {
      Lookup lookup;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [this] { return !queue_.empty(); });
        lookup = std::move(queue_.front());
        queue_.pop_front();
      }
      absl::StatusOr<SocketAddress> address =
          lookup.resolve ? lookup.resolve(lookup.network, lookup.address)
                         : SocketAddress::Parse(lookup.network, lookup.address);
      // Refused by a finished loop, which destroys `done` unrun: nobody waits for it any more.
      (void)lookup.loop->QueueInLoop(
          [done = std::move(lookup.done), address = std::move(address)]() mutable {
            done(std::move(address));
          });
    }
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Lookup> queue_;  // Guarded by mutex_.
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
                    ResolveFunction resolve,
                    absl::AnyInvocable<void(absl::StatusOr<SocketAddress>)> done) {
  ResolverThread::Get().Add(Lookup{std::move(loop), std::move(network), std::move(address),
                                   std::move(resolve), std::move(done)});
}

}  // namespace gev

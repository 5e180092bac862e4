// -----------------------------------------------------------------------------
// File: net/resolver.h
// -----------------------------------------------------------------------------
//
// Name resolution that never blocks an event loop. `getaddrinfo` blocks for as long as the
// name service takes (seconds, when DNS is slow), so a host name is resolved on a small
// process-wide pool of resolver threads (up to 16, started as lookups wait, ended after 30 s
// without one) and the result comes back to the loop as a task, within a timeout; an IP
// literal or a Unix path is parsed on the spot. A name that does not exist is NotFound; a name
// service that does not answer is Unavailable (EAI_AGAIN) or, past the timeout,
// DeadlineExceeded.
//
//   if (!gev::NeedsNameLookup("tcp", "db.internal:5432")) { ... parse inline ... }
//   gev::ResolveOffLoop(loop, "tcp", "db.internal:5432", /*resolve=*/nullptr, absl::Seconds(5),
//                       [](absl::StatusOr<gev::SocketAddress> address) { ... });
//
// Thread safety: every function is thread-safe. A `resolve` function runs on a resolver
// thread, possibly beside other lookups: it must be thread-safe.

#ifndef GEV_NET_RESOLVER_H_
#define GEV_NET_RESOLVER_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "eventloop/event_loop.h"
#include "net/socket_address.h"

namespace gev {

// Turns a network ("tcp", "tcp4", "tcp6", "unix") and an address into a SocketAddress; may
// block. Null means SocketAddress::Parse (getaddrinfo, the hosts file and DNS).
using ResolveFunction =
    std::function<absl::StatusOr<SocketAddress>(const std::string& network,
                                                const std::string& address)>;

// NeedsNameLookup() — false when `address` parses without asking a name service: an IP
// literal, an empty host (":port"), a Unix path, or something malformed (Parse says why).
bool NeedsNameLookup(absl::string_view network, absl::string_view address);

// ResolveOffLoop() — resolves on a resolver thread, then runs `done` on `loop` (a queued
// task), once: with the answer, or with DeadlineExceeded once `timeout` has passed without one
// (a later answer is dropped; zero or infinite waits for it), or ResourceExhausted when 4,096
// lookups wait already. If the loop has finished by then, `done` is destroyed unrun.
void ResolveOffLoop(std::shared_ptr<EventLoop> loop, std::string network, std::string address,
                    ResolveFunction resolve, absl::Duration timeout,
                    absl::AnyInvocable<void(absl::StatusOr<SocketAddress>)> done);

}  // namespace gev

#endif  // GEV_NET_RESOLVER_H_

// -----------------------------------------------------------------------------
// File: server/load_balancer.h
// -----------------------------------------------------------------------------
//
// How an acceptor-mode server picks the worker loop for a new connection (gev's
// LoadBalance option): a function of the peer's address and each loop's open connections.
//
//   gev::NewServer(&handler, gev::LoadBalance(gev::LeastConnection()));
//   gev::NewServer(&handler, gev::LoadBalance([](const gev::InetAddress& peer,
//                                                absl::Span<const size_t> loops) {
//     return IsPremium(peer) ? 0 : 1 + Hash(peer) % (loops.size() - 1);
//   }));
//
// In ReusePort mode the kernel spreads connections and no balancer is asked.
//
// Thread safety: a server calls its balancer on the acceptor thread only; one balancer object
// serves one server (RoundRobin keeps a counter).

#ifndef GEV_SERVER_LOAD_BALANCER_H_
#define GEV_SERVER_LOAD_BALANCER_H_

#if __cplusplus < 201703L
#error "gev needs C++17: compile with -std=c++17 (with Bazel: build --cxxopt=-std=c++17 in .bazelrc)"
#endif

#include <cstddef>
#include <functional>

#include "absl/types/span.h"
#include "net/inet_address.h"

namespace gev {

// Picks a loop (an index below connections_per_loop.size(); larger values wrap) for a new
// connection from `peer`.
using LoadBalancer =
    std::function<size_t(const InetAddress& peer, absl::Span<const size_t> connections_per_loop)>;

// RoundRobin() — each loop in turn.
LoadBalancer RoundRobin();
// LeastConnection() — the loop with the fewest open connections (the lowest index on ties).
LoadBalancer LeastConnection();
// SourceAddrHash() — by the peer's host (not its port): one client's connections share a loop.
LoadBalancer SourceAddrHash();

}  // namespace gev

#endif  // GEV_SERVER_LOAD_BALANCER_H_

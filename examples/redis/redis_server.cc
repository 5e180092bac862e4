// A Redis server (RESP2) on gev: the commands of commands.h over a sharded store, for real
// clients (redis-cli, redis-benchmark, any Redis client library). Pipelined and split requests
// are answered in order; small replies of one read are built into one buffer and leave in one
// write, and large ones stream: every 64 KiB of replies is sent as it is made, and parsing
// stops while the connection's pending output is over --output_high_water_mib, going on where
// it stopped once the peer has read its replies (as redis-server's client output buffer). A
// pipeline's answer costs the server that mark, one reply and the input, not the whole answer.
//
//   tools/bazel run //examples/redis:redis_server -- --port=6380 --loops=2
//   redis-cli -p 6380 set greeting hello
//
// Restarts (--handoff, examples/common/restart.h): on SIGHUP a new process takes the listeners
// and this one drains. A connection quiet for kDrainQuiet with no command under way is closed
// (FIN) at once or when it has been; one with a command under way is closed after the replies
// to everything it sent. RESP has no way to say "this is the last reply", so a client that
// sends its next command as the close leaves loses that command to the close, as with any
// Redis restart: Redis clients reconnect and retry.
//
// Unlike redis-server: no persistence, no other data types, and a connection's unparsed input
// is bounded by --max_input_mib (Redis allows a 512 MiB bulk string; past the bound the
// connection is closed with that reason).

#include <algorithm>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "examples/common/restart.h"
#include "examples/common/serve.h"
#include "examples/redis/commands.h"
#include "examples/redis/resp.h"
#include "examples/redis/store.h"
#include "server/server.h"

ABSL_FLAG(int, port, 6380, "TCP port to listen on (0: any free port)");
ABSL_FLAG(int, loops, 1, "worker loops (<= 0: one per CPU)");
ABSL_FLAG(bool, reuseport, false, "one SO_REUSEPORT listener per loop instead of one acceptor");
ABSL_FLAG(int, max_input_mib, 64, "most unparsed input per connection, in MiB");
ABSL_FLAG(bool, gather_writes, true, "write each loop iteration's replies once per connection");
ABSL_FLAG(int, output_high_water_mib, 8,
          "stop answering a pipeline while this much of its replies waits for the peer, in MiB");

namespace gev::redis {
namespace {

// What a connection needs between reads: how many bytes its incomplete command needs before
// parsing it again is worth it (a large value arriving in many reads is parsed once).
struct ConnectionState {
  size_t needed = 0;
  MultibulkProgress progress;
  uint64_t last_input_ms = 0;  // EventLoop::NowMs of its last bytes (or of its start).
  bool partial = false;        // Part of a command is in the input.
  size_t index = 0;            // In its loop's `connections`.
};

// Draining: how long a connection with no command under way must have been quiet to be closed.
constexpr uint64_t kDrainQuietMs = 1000;

class RedisHandler : public Handler {
 public:
  // Replies are sent once this many are made, rather than built up for the whole read.
  static constexpr size_t kStreamBytes = 64 * 1024;

  RedisHandler(size_t loops, size_t high_water_mark)
      : loops_(loops), high_water_mark_(high_water_mark) {}

  void OnLoopStart(EventLoop& loop, size_t loop_index) override {
    per_loop_[loop_index] = std::make_unique<LoopState>();
    // Keys with an expiry that nobody reads again: each loop sweeps its share of the shards.
    loop.RunEvery(absl::Milliseconds(100), [this, loop_index] {
      store_.SweepExpired(loop_index, loops_, Store::NowMs());
    });
  }

  void OnConnect(Connection& conn) override {
    ConnectionState& state = conn.EmplaceContext<ConnectionState>();
    state.last_input_ms = conn.loop()->NowMs();
    auto& connections = per_loop_[conn.LoopIndex()]->connections;
    state.index = connections.size();
    connections.push_back(&conn);
  }

  void OnClose(Connection& conn, const absl::Status&) override {
    auto& connections = per_loop_[conn.LoopIndex()]->connections;
    size_t index = conn.ContextAs<ConnectionState>()->index;
    connections[index] = connections.back();
    connections[index]->ContextAs<ConnectionState>()->index = index;
    connections.pop_back();
  }

  // The server drains: each loop closes its quiet connections now and every 50 ms.
  void OnDrain(Connection& conn) override {
    LoopState& loop = *per_loop_[conn.LoopIndex()];
    if (loop.draining) return;
    loop.draining = true;
    EventLoop* event_loop = conn.loop();
    CloseQuiet(loop, event_loop->NowMs());
    event_loop->RunEvery(absl::Milliseconds(50),
                         [&loop, event_loop] { CloseQuiet(loop, event_loop->NowMs()); });
  }

  Reply OnMessage(Connection& conn, RingBuffer& buffer) override {
    ConnectionState* state = conn.ContextAs<ConnectionState>();
    state->last_input_ms = conn.loop()->NowMs();
    state->partial = !buffer.IsEmpty();
    if (buffer.Length() < state->needed) return {};
    LoopState& loop = *per_loop_[conn.LoopIndex()];
    loop.Trim();
    loop.out.clear();
    std::string_view input = buffer.Contiguous(buffer.Length(), &loop.wrapped);
    size_t pos = 0;
    bool close = false;
    state->needed = 0;
    while (pos < input.size() && !close) {
      if (loop.out.size() >= kStreamBytes) {
        if (!SendNow(conn, loop.out)) return {};
        loop.out.clear();
        // The peer reads slower than it asks: the rest of the pipeline waits in the input. The
        // connection stopped reading at the same mark, and hands the rest back to OnMessage
        // when the replies have drained (Connection::ResumeReading).
        if (conn.PendingOutput() > high_water_mark_) break;
      }
      ParseResult parsed = ParseCommand(input.substr(pos), &loop.args, &loop.unquoted, &state->progress);
      if (parsed.outcome == ParseResult::Outcome::kIncomplete) {
        state->needed = parsed.needed;
        break;
      }
      if (parsed.outcome == ParseResult::Outcome::kError) {
        // As Redis: the commands before it are answered, then the error, then the close.
        AppendError(&loop.out, "ERR " + parsed.error);
        pos = input.size();
        close = true;
        break;
      }
      pos += parsed.consumed;
      if (loop.args.empty()) continue;
      close = Execute(store_, loop.args, &loop.out) == After::kClose;
    }
    buffer.Retrieve(close ? buffer.Length() : pos);
    state->partial = !buffer.IsEmpty();
    // Draining: everything it sent is answered, so it goes with the replies.
    if (loop.draining && !state->partial) close = true;
    if (close) conn.Close();  // After the reply below: Close() lets it out first.
    // The loop's buffer is rewritten only by the next OnMessage on this loop, after the server
    // has taken these bytes.
    return Reply::View(loop.out);
  }

 private:
  // Sends `replies` now; false when the connection could not take them (it is closed then).
  static bool SendNow(Connection& conn, const std::string& replies) {
    absl::Status sent = conn.SendSlices({replies, {}});
    if (sent.ok()) return true;
    // Refused for the pending-output cap: a hole in the answers, so the connection ends, with
    // the reason. Otherwise it is closed already, with its own.
    if (absl::IsResourceExhausted(sent)) conn.ForceClose(sent);
    return false;
  }

  struct LoopState {
    // The loop's open connections (from OnConnect to OnClose), for a drain.
    std::vector<Connection*> connections;
    bool draining = false;
    std::string out;       // Every reply of one OnMessage call.
    std::string wrapped;   // The input, when it wraps around its ring.
    std::string unquoted;  // An inline command's arguments.
    std::vector<std::string_view> args;

    // A burst's large buffers are not kept for the replies after it.
    void Trim() {
      constexpr size_t kKeep = 1 << 20;
      if (out.capacity() > kKeep) std::string().swap(out);
      if (wrapped.capacity() > kKeep) std::string().swap(wrapped);
    }
  };

  // Draining: connections with no command under way, quiet for kDrainQuietMs, close (FIN).
  static void CloseQuiet(LoopState& loop, uint64_t now_ms) {
    // Collected first: a Close may end a connection at once, and OnClose edits the list.
    std::vector<ConnectionPtr> quiet;
    for (Connection* conn : loop.connections) {
      const ConnectionState* state = conn->ContextAs<ConnectionState>();
      if (!state->partial && now_ms - state->last_input_ms >= kDrainQuietMs) {
        quiet.push_back(conn->shared_from_this());
      }
    }
    for (const ConnectionPtr& conn : quiet) conn->Close();
  }

  const size_t loops_;
  const size_t high_water_mark_;
  Store store_;
  // One per loop, created and used on that loop's thread only.
  std::vector<std::unique_ptr<LoopState>> per_loop_{loops_};
};

}  // namespace
}  // namespace gev::redis

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("A Redis (RESP2) server. Usage: redis_server --port=6380 --loops=1");
  absl::ParseCommandLine(argc, argv);
  int loops = absl::GetFlag(FLAGS_loops);
  if (loops <= 0) loops = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  size_t max_input = static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_max_input_mib))) << 20;
  size_t high_water =
      static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_output_high_water_mib))) << 20;
  gev::redis::RedisHandler handler(static_cast<size_t>(loops), high_water);
  absl::StatusOr<gev::Option> listeners = gev::examples::RestartableListeners();
  if (!listeners.ok()) return gev::examples::Fail(listeners.status());
  auto server = gev::NewServer(
      &handler, *listeners, gev::Address(gev::examples::AddressForPort(absl::GetFlag(FLAGS_port))),
      gev::NumLoops(loops), gev::ReusePort(absl::GetFlag(FLAGS_reuseport)),
      gev::MaxInputBytes(max_input), gev::HighWaterMark(high_water),
      // Parsing stops past the mark, so pending output stays within it, the replies of one
      // stream chunk and one reply, which can be as large as a value the input limit let in.
      gev::MaxPendingOutput(std::min<size_t>(2 * high_water + max_input + (1 << 20),
                                             gev::RingBuffer::kMaxLimit)),
      gev::GatherWrites(absl::GetFlag(FLAGS_gather_writes)));
  if (!server.ok()) return gev::examples::Fail(server.status());
  return gev::examples::ServeWithRestarts(**server, argc, argv);
}

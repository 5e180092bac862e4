// -----------------------------------------------------------------------------
// File: examples/redis/store.h
// -----------------------------------------------------------------------------
//
// The Redis example's keyspace: string keys to string values with an optional expiry, split
// into shards by the key's hash, each under its own mutex, so every loop serves every key (a
// store per loop would give each loop's clients a different database). Expired keys vanish
// when they are next touched and, for keys nobody touches, in `SweepExpired` passes that each
// loop runs over its share of the shards.
//
//   gev::redis::Store store;
//   store.WithShard(key, [&](gev::redis::Store::Map& map) { ... });
//
// Thread safety: thread-safe; a shard's map is used only inside WithShard's callback.

#ifndef GEV_EXAMPLES_REDIS_STORE_H_
#define GEV_EXAMPLES_REDIS_STORE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/strings/string_view.h"

namespace gev::redis {

struct Entry {
  std::string value;
  int64_t expires_at_ms = 0;  // Monotonic milliseconds (NowMs); 0: never.
};

class Store {
 public:
  using Map = absl::flat_hash_map<std::string, Entry>;
  static constexpr size_t kShards = 64;

  // Milliseconds on a monotonic clock: what expiry times are measured in.
  static int64_t NowMs();

  // Store::WithShard() — runs `f(map, volatile_keys)` with the shard that holds `key` locked;
  // `volatile_keys` counts its keys with an expiry (kept up to date by the callback, so sweeps
  // can skip shards without any).
  template <typename F>
  auto WithShard(std::string_view key, F&& f) {
    Shard& shard = shards_[absl::Hash<absl::string_view>()(ToAbsl(key)) % kShards];
    std::lock_guard<std::mutex> lock(shard.mutex);
    return f(shard.map, shard.volatile_keys);
  }

  // Looks `key` up in a locked shard's map, erasing it (and returning null) if it has expired.
  static Entry* FindLive(Map& map, size_t& volatile_keys, std::string_view key, int64_t now_ms);

  // Erases every expired key of the shards i with i % stride == offset.
  void SweepExpired(size_t offset, size_t stride, int64_t now_ms);
  size_t Size();
  void Clear();

  static absl::string_view ToAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

 private:
  struct Shard {
    std::mutex mutex;
    Map map;                   // Guarded by mutex.
    size_t volatile_keys = 0;  // Guarded by mutex.
  };
  std::unique_ptr<Shard[]> shards_ = std::make_unique<Shard[]>(kShards);
};

}  // namespace gev::redis

#endif  // GEV_EXAMPLES_REDIS_STORE_H_

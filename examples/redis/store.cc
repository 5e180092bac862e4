#include "examples/redis/store.h"

#include <chrono>

namespace gev::redis {

int64_t Store::NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

Entry* Store::FindLive(Map& map, size_t& volatile_keys, std::string_view key, int64_t now_ms) {
  auto it = map.find(ToAbsl(key));
  if (it == map.end()) return nullptr;
  if (it->second.expires_at_ms != 0 && it->second.expires_at_ms <= now_ms) {
    --volatile_keys;
    map.erase(it);
    return nullptr;
  }
  return &it->second;
}

void Store::SweepExpired(size_t offset, size_t stride, int64_t now_ms) {
  for (size_t i = offset; i < kShards; i += stride) {
    Shard& shard = shards_[i];
    std::lock_guard<std::mutex> lock(shard.mutex);
    if (shard.volatile_keys == 0) continue;
    for (auto it = shard.map.begin(); it != shard.map.end();) {
      auto current = it++;
      if (current->second.expires_at_ms != 0 && current->second.expires_at_ms <= now_ms) {
        --shard.volatile_keys;
        shard.map.erase(current);
      }
    }
  }
}

size_t Store::Size() {
  size_t total = 0;
  for (size_t i = 0; i < kShards; ++i) {
    std::lock_guard<std::mutex> lock(shards_[i].mutex);
    total += shards_[i].map.size();
  }
  return total;
}

void Store::Clear() {
  for (size_t i = 0; i < kShards; ++i) {
    std::lock_guard<std::mutex> lock(shards_[i].mutex);
    shards_[i].map.clear();
    shards_[i].volatile_keys = 0;
  }
}

}  // namespace gev::redis

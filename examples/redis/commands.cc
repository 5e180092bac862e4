#include "examples/redis/commands.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "examples/redis/resp.h"

namespace gev::redis {
namespace {

using Args = std::vector<std::string_view>;

bool Is(std::string_view arg, std::string_view name) {
  return absl::EqualsIgnoreCase(Store::ToAbsl(arg), Store::ToAbsl(name));
}

void WrongArity(std::string* out, std::string_view name) {
  AppendError(out, "ERR wrong number of arguments for '" + std::string(name) + "' command");
}

void NotAnInteger(std::string* out) {
  AppendError(out, "ERR value is not an integer or out of range");
}

void UnknownCommand(const Args& args, std::string* out) {
  // As processCommand formats it with "%.*s": the name and the first arguments, each quoted
  // and cut so the list stays near 128 bytes, and each, as a C string, cut at its first NUL.
  auto as_c_string = [](std::string_view arg, size_t most) {
    return arg.substr(0, std::min(arg.find('\0'), most));
  };
  std::string listed;
  for (size_t i = 1; i < args.size() && listed.size() < 128; ++i) {
    std::string_view arg = as_c_string(args[i], 128 - listed.size());
    listed.append("'").append(arg.data(), arg.size()).append("' ");
  }
  std::string_view name = as_c_string(args[0], 128);
  AppendError(out, "ERR unknown command '" + std::string(name) + "', with args beginning with: " +
                       listed);
}

void Set(Store& store, const Args& args, std::string* out) {
  enum Flag : unsigned { kNx = 1, kXx = 2, kGet = 4, kKeepTtl = 8, kEx = 16, kPx = 32,
                         kExAt = 64, kPxAt = 128 };
  unsigned flags = 0;
  std::string_view expire_arg;
  constexpr unsigned kAnyExpire = kEx | kPx | kExAt | kPxAt;
  for (size_t j = 3; j < args.size(); ++j) {
    std::string_view opt = args[j];
    bool has_next = j + 1 < args.size();
    // Redis's parseExtendedStringArgumentsOrReply: repeats are allowed, conflicts are not.
    if (Is(opt, "nx") && !(flags & kXx)) {
      flags |= kNx;
    } else if (Is(opt, "xx") && !(flags & kNx)) {
      flags |= kXx;
    } else if (Is(opt, "get")) {
      flags |= kGet;
    } else if (Is(opt, "keepttl") && !(flags & kAnyExpire)) {
      flags |= kKeepTtl;
    } else if (Is(opt, "ex") && !(flags & (kKeepTtl | kPx | kExAt | kPxAt)) && has_next) {
      flags |= kEx;
      expire_arg = args[++j];
    } else if (Is(opt, "px") && !(flags & (kKeepTtl | kEx | kExAt | kPxAt)) && has_next) {
      flags |= kPx;
      expire_arg = args[++j];
    } else if (Is(opt, "exat") && !(flags & (kKeepTtl | kEx | kPx | kPxAt)) && has_next) {
      flags |= kExAt;
      expire_arg = args[++j];
    } else if (Is(opt, "pxat") && !(flags & (kKeepTtl | kEx | kPx | kExAt)) && has_next) {
      flags |= kPxAt;
      expire_arg = args[++j];
    } else {
      AppendError(out, "ERR syntax error");
      return;
    }
  }
  const int64_t now = Store::NowMs();
  int64_t expires_at = 0;
  if (flags & kAnyExpire) {
    std::optional<int64_t> amount = ParseInt64(expire_arg);
    if (!amount) {
      NotAnInteger(out);
      return;
    }
    bool seconds = flags & (kEx | kExAt);
    if (*amount <= 0 || (seconds && *amount > LLONG_MAX / 1000)) {
      AppendError(out, "ERR invalid expire time in 'set' command");
      return;
    }
    int64_t ms = seconds ? *amount * 1000 : *amount;
    // Redis keeps absolute Unix milliseconds and refuses what overflows them; here they are
    // turned into the monotonic clock, and one in the past deletes the key.
    int64_t unix_now = absl::ToUnixMillis(absl::Now());
    if (flags & (kEx | kPx)) {
      if (ms > LLONG_MAX - unix_now) {
        AppendError(out, "ERR invalid expire time in 'set' command");
        return;
      }
      expires_at = now + ms;
    } else {
      expires_at = ms <= unix_now ? -1 : now + (ms - unix_now);
    }
  }
  store.WithShard(args[1], [&](Store::Map& map, size_t& volatile_keys) {
    Entry* found = Store::FindLive(map, volatile_keys, args[1], now);
    if (flags & kGet) {
      if (found != nullptr) {
        AppendBulk(out, found->value);
      } else {
        AppendNull(out);
      }
    }
    if (((flags & kNx) && found != nullptr) || ((flags & kXx) && found == nullptr)) {
      if (!(flags & kGet)) AppendNull(out);
      return;
    }
    if (!(flags & kGet)) AppendSimple(out, "OK");
    if (expires_at < 0) {  // Already expired.
      if (found != nullptr) {
        if (found->expires_at_ms != 0) --volatile_keys;
        map.erase(Store::ToAbsl(args[1]));
      }
      return;
    }
    if (found == nullptr) {
      found = &map[Store::ToAbsl(args[1])];
    }
    found->value.assign(args[2].data(), args[2].size());
    if (flags & kKeepTtl) return;
    if ((found->expires_at_ms != 0) != (expires_at != 0)) {
      volatile_keys += expires_at != 0 ? 1 : -1;
    }
    found->expires_at_ms = expires_at;
  });
}

void Get(Store& store, std::string_view key, std::string* out) {
  store.WithShard(key, [&](Store::Map& map, size_t& volatile_keys) {
    Entry* found = Store::FindLive(map, volatile_keys, key, Store::NowMs());
    if (found != nullptr) {
      AppendBulk(out, found->value);
    } else {
      AppendNull(out);
    }
  });
}

void Incr(Store& store, std::string_view key, std::string* out) {
  store.WithShard(key, [&](Store::Map& map, size_t& volatile_keys) {
    Entry* found = Store::FindLive(map, volatile_keys, key, Store::NowMs());
    int64_t value = 0;
    if (found != nullptr) {
      std::optional<int64_t> parsed = ParseInt64(found->value);
      if (!parsed) {
        NotAnInteger(out);
        return;
      }
      value = *parsed;
    }
    if (value == LLONG_MAX) {
      AppendError(out, "ERR increment or decrement would overflow");
      return;
    }
    ++value;
    if (found == nullptr) found = &map[Store::ToAbsl(key)];
    found->value = absl::StrCat(value);  // The expiry, if any, stays.
    AppendInteger(out, value);
  });
}

// DEL (erase: true) and EXISTS: how many of the keys were there (EXISTS counts repeats).
void CountKeys(Store& store, const Args& args, bool erase, std::string* out) {
  int64_t count = 0;
  const int64_t now = Store::NowMs();
  for (size_t i = 1; i < args.size(); ++i) {
    store.WithShard(args[i], [&](Store::Map& map, size_t& volatile_keys) {
      Entry* found = Store::FindLive(map, volatile_keys, args[i], now);
      if (found == nullptr) return;
      ++count;
      if (erase) {
        if (found->expires_at_ms != 0) --volatile_keys;
        map.erase(Store::ToAbsl(args[i]));
      }
    });
  }
  AppendInteger(out, count);
}

void Config(const Args& args, std::string* out) {
  if (!Is(args[1], "get")) {
    std::string_view name = args[1].substr(0, std::min(args[1].find('\0'), size_t{128}));
    AppendError(out, "ERR unknown subcommand '" + std::string(name) + "'. Try CONFIG HELP.");
    return;
  }
  if (args.size() < 3) {
    WrongArity(out, "config|get");
    return;
  }
  // What redis-benchmark asks at start (it warns and goes on without them); in Redis's order.
  bool appendonly = false, save = false;
  for (size_t i = 2; i < args.size(); ++i) {
    appendonly |= Is(args[i], "appendonly");
    save |= Is(args[i], "save");
  }
  AppendArrayHeader(out, 2 * (appendonly + save));
  if (appendonly) {
    AppendBulk(out, "appendonly");
    AppendBulk(out, "no");
  }
  if (save) {
    AppendBulk(out, "save");
    AppendBulk(out, "");
  }
}

}  // namespace

After Execute(Store& store, const Args& args, std::string* out) {
  std::string_view name = args[0];
  const size_t argc = args.size();
  // Each command with Redis's arity: n exactly, or -n for at least n.
  auto arity_ok = [&](int arity) {
    return arity > 0 ? argc == static_cast<size_t>(arity) : argc >= static_cast<size_t>(-arity);
  };
  struct Command {
    std::string_view name;
    int arity;
  };
  static constexpr Command kCommands[] = {
      {"get", 2},     {"set", -3},     {"ping", -1},    {"echo", 2},    {"del", -2},
      {"incr", 2},    {"exists", -2},  {"config", -2},  {"quit", -1},   {"dbsize", 1},
      {"flushall", -1}, {"flushdb", -1}, {"command", -1},
  };
  const Command* command = nullptr;
  for (const Command& candidate : kCommands) {
    if (Is(name, candidate.name)) {
      command = &candidate;
      break;
    }
  }
  if (command == nullptr) {
    UnknownCommand(args, out);
    return After::kContinue;
  }
  if (!arity_ok(command->arity) || (command->name == "ping" && argc > 2)) {
    WrongArity(out, command->name);
    return After::kContinue;
  }
  std::string_view which = command->name;
  if (which == "get") {
    Get(store, args[1], out);
  } else if (which == "set") {
    Set(store, args, out);
  } else if (which == "ping") {
    if (argc == 1) {
      AppendSimple(out, "PONG");
    } else {
      AppendBulk(out, args[1]);
    }
  } else if (which == "echo") {
    AppendBulk(out, args[1]);
  } else if (which == "del") {
    CountKeys(store, args, /*erase=*/true, out);
  } else if (which == "exists") {
    CountKeys(store, args, /*erase=*/false, out);
  } else if (which == "incr") {
    Incr(store, args[1], out);
  } else if (which == "config") {
    Config(args, out);
  } else if (which == "dbsize") {
    AppendInteger(out, static_cast<int64_t>(store.Size()));
  } else if (which == "flushall" || which == "flushdb") {
    // FLUSHALL [ASYNC|SYNC]; anything else is Redis's syntax error.
    if (argc > 2 || (argc == 2 && !Is(args[1], "async") && !Is(args[1], "sync"))) {
      AppendError(out, "ERR syntax error");
    } else {
      store.Clear();
      AppendSimple(out, "OK");
    }
  } else if (which == "command") {
    AppendArrayHeader(out, 0);
  } else if (which == "quit") {
    AppendSimple(out, "OK");
    return After::kClose;
  }
  return After::kContinue;
}

}  // namespace gev::redis

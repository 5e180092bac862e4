// Text validation speed, bytes per second: ASCII (most chat and JSON), and text where every
// character takes two to four bytes.
//
//   tools/bazel run --config=opt //websocket:utf8_benchmark

#include <string>

#include "benchmark/benchmark.h"
#include "websocket/utf8.h"

namespace {

std::string Repeat(const std::string& unit, size_t size) {
  std::string text;
  while (text.size() + unit.size() <= size) text += unit;
  return text;
}

void Validate(benchmark::State& state, const std::string& text) {
  for (auto _ : state) {
    gev::websocket::Utf8Validator validator;
    bool ok = validator.Feed(text) && validator.AtBoundary();
    benchmark::DoNotOptimize(ok);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}

void BM_Ascii(benchmark::State& state) {
  Validate(state, Repeat("{\"user\":\"gev\",\"text\":\"hello, world\"} ",
                         static_cast<size_t>(state.range(0))));
}
BENCHMARK(BM_Ascii)->Arg(512)->Arg(64 << 10);

void BM_Multibyte(benchmark::State& state) {
  // Greek, CJK and an emoji: two, three and four bytes a character.
  Validate(state, Repeat("\xCE\xBA\xE1\xBD\xB9\xE4\xBD\xA0\xE5\xA5\xBD\xF0\x9F\x98\x80",
                         static_cast<size_t>(state.range(0))));
}
BENCHMARK(BM_Multibyte)->Arg(512)->Arg(64 << 10);

}  // namespace

BENCHMARK_MAIN();

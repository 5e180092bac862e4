#!/usr/bin/env bash
# Runs the project's libFuzzer targets with clang for a bounded time each.
#
#   tools/fuzz.sh [seconds-per-target]      (default 30)
#
# Bazel's toolchain here is g++, which has no libFuzzer, so the harnesses are built directly with
# clang++ -fsanitize=fuzzer,address,undefined from the sources listed below. Under Bazel the same
# harnesses run as *_fuzzer_replay_test on seeded random inputs. Crash inputs land in fuzz-out/.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
if ! command -v clang++ >/dev/null 2>&1 || [[ ! -d /usr/lib/llvm-14/lib/clang ]]; then
  if [[ "$(id -u)" == 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang libclang-rt-14-dev >&2
  else
    echo "tools/fuzz.sh: needs clang: sudo apt-get install -y clang libclang-rt-14-dev" >&2
    exit 1
  fi
fi

# name: sources (workspace-relative) [| pkg-config modules to link]
protocol_sources="server/fuzz/protocol_fuzz_checks.cc server/protocol.cc ringbuffer/ring_buffer.cc"
protocol_libs="absl_status absl_statusor absl_strings"
websocket_sources="websocket/fuzz/websocket_fuzz_checks.cc websocket/testing/utf8_reference.cc websocket/message_reader.cc websocket/frame.cc websocket/utf8.cc websocket/deflate.cc http/request.cc ringbuffer/ring_buffer.cc"
targets=(
  "ring_buffer_fuzzer: ringbuffer/ring_buffer_fuzzer.cc ringbuffer/ring_buffer_model.cc ringbuffer/ring_buffer.cc"
  "websocket_message_reader_fuzzer: websocket/fuzz/message_reader_fuzzer.cc ${websocket_sources} | zlib"
  "websocket_utf8_fuzzer: websocket/fuzz/utf8_fuzzer.cc ${websocket_sources} | zlib"
  "websocket_inflate_fuzzer: websocket/fuzz/inflate_fuzzer.cc ${websocket_sources} | zlib"
  "length_field_fuzzer: server/fuzz/length_field_fuzzer.cc ${protocol_sources} | ${protocol_libs}"
  "delimiter_fuzzer: server/fuzz/delimiter_fuzzer.cc ${protocol_sources} | ${protocol_libs}"
)

mkdir -p fuzz-out
failed=0
for entry in "${targets[@]}"; do
  name="${entry%%:*}"
  spec="${entry#*:}"
  read -r -a sources <<<"${spec%%|*}"
  libs=()
  if [[ "$spec" == *"|"* ]]; then
    read -r -a libs <<<"$(pkg-config --libs ${spec#*|})"
  fi
  binary="fuzz-out/${name}"
  clang++ -std=c++17 -O1 -g -I. -fsanitize=fuzzer,address,undefined \
    -fno-sanitize-recover=all "${sources[@]}" "${libs[@]}" -o "${binary}"
  mkdir -p "fuzz-out/${name}.corpus"
  echo "fuzzing ${name} for ${seconds}s" >&2
  if ! "${binary}" -max_total_time="${seconds}" -print_final_stats=1 \
      -artifact_prefix="fuzz-out/${name}." "fuzz-out/${name}.corpus" >"fuzz-out/${name}.log" 2>&1; then
    echo "FAIL: ${name} (see fuzz-out/${name}.log)" >&2
    tail -30 "fuzz-out/${name}.log" >&2
    failed=$((failed + 1))
  else
    echo "ok: ${name}: $(grep -m1 'stat::number_of_executed_units' "fuzz-out/${name}.log")" >&2
  fi
done
exit "${failed}"

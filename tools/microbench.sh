#!/usr/bin/env bash
# Runs every module's Google Benchmark binary (targets tagged "benchmark"), optimized.
#
#   tools/microbench.sh [extra Google Benchmark flags, e.g. --benchmark_filter=Drain]
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t targets < <(tools/bazel query 'attr(tags, "\bbenchmark\b", kind(cc_binary, //...))' 2>/dev/null)
if [[ ${#targets[@]} -eq 0 ]]; then
  echo "microbench: no targets tagged benchmark" >&2
  exit 1
fi
tools/bazel build --config=opt "${targets[@]}" >&2
for target in "${targets[@]}"; do
  binary="bazel-bin/$(sed 's|^//||; s|:|/|' <<<"$target")"
  echo "== $target"
  "$binary" "$@"
done

#!/usr/bin/env bash
# Checks the tables tools/bench_lib.sh renders from a results.tsv: medians, ratios to the
# baseline, the round count of the rows themselves, and the CPU ratio paired by round, on rows
# made up so that the median ratio and the paired one differ.
set -euo pipefail
lib="${TEST_SRCDIR:-$(dirname "$0")/..}"
[[ -f "$lib/gev/tools/bench_lib.sh" ]] && lib="$lib/gev/tools" || lib="$(dirname "$0")"
# shellcheck source=/dev/null
source "$lib/bench_lib.sh"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
results="$work/results.tsv"
rounds=99  # Not what the rows hold: the table must count their rounds itself.
failures=0
check() {  # $1 = what, $2 = expected, $3 = actual
  if [[ "$2" != "$3" ]]; then
    echo "FAIL: $1: expected [$2], got [$3]"
    failures=$((failures + 1))
  else
    echo "ok: $1"
  fi
}

# Three rounds of all three servers; the machine is slow in round 3 (everything costs twice as
# much). "fast" costs 0.9x the baseline in every round it shares with it, "slow" 1.1x. A
# fourth round, a slow spell the baseline missed, puts "fast" at a median of 135 against the
# baseline's 100 (1.35x in the ratio of medians), while pairing by round still gives 0.9x.
{
  printf 'w\tbase\t1\t100\t1000\t10\t100\ttrue\n'
  printf 'w\tfast\t1\t100\t1000\t10\t90\ttrue\n'
  printf 'w\tslow\t1\t100\t1000\t10\t110\ttrue\n'
  printf 'w\tbase\t2\t100\t1000\t10\t100\ttrue\n'
  printf 'w\tfast\t2\t100\t1000\t10\t90\ttrue\n'
  printf 'w\tslow\t2\t100\t1000\t10\t110\ttrue\n'
  printf 'w\tbase\t3\t100\t1000\t10\t200\ttrue\n'
  printf 'w\tfast\t3\t100\t1000\t10\t180\ttrue\n'
  printf 'w\tslow\t3\t100\t1000\t10\t220\ttrue\n'
  # A round the baseline missed is left out of the pairing.
  printf 'w\tfast\t4\t100\t1000\t10\t500\ttrue\n'
} >"$results"

check "paired ratio, fast" "0.9" "$(paired_ratio w fast base 7)"
check "paired ratio, slow" "1.1" "$(paired_ratio w slow base 7)"
check "paired ratio, baseline" "1" "$(paired_ratio w base base 7)"

table_out="$(table w base)"
check "round count from the rows" "**w** (medians of 4 rounds)" "$(grep '^\*\*' <<<"$table_out")"
fast_row="$(grep '^| fast ' <<<"$table_out")"
# Columns: label, msgs/s, MiB/s, vs baseline, vs fastest, p99, p99 vs baseline, CPU ns/msg,
# vs baseline (of medians), vs lowest, vs baseline paired.
check "fast: CPU median" "135" "$(awk -F' [|] ' '{ print $8 }' <<<"$fast_row")"
check "fast: vs baseline, ratio of medians" "1.35x" "$(awk -F' [|] ' '{ print $9 }' <<<"$fast_row")"
check "fast: paired column" "0.900x |" "$(awk -F' [|] ' '{ print $11 }' <<<"$fast_row")"
slow_row="$(grep '^| slow ' <<<"$table_out")"
check "slow: paired column" "1.100x |" "$(awk -F' [|] ' '{ print $11 }' <<<"$slow_row")"

[[ $failures == 0 ]]

// -----------------------------------------------------------------------------
// File: net/output_budget.h
// -----------------------------------------------------------------------------
//
// `gev::OutputBudget` counts the bytes a stream has accepted for sending and not yet written
// or dropped, against a cap, so that a send is taken whole or refused whole (never cut) and a
// peer that does not read costs at most the cap. Any thread reserves; the writer releases.
//
//   gev::OutputBudget budget;
//   if (!budget.Reserve(data.size(), cap)) return budget.Exhausted(data.size(), cap);
//   ...                                  // later, when the bytes are written (or dropped):
//   budget.Release(written);
//
// Counts fit in 32 bits: a cap is at most RingBuffer::kMaxLimit (2 GiB).
//
// Thread safety: every method is thread-safe. Reserve() and NothingPending() are sequentially
// consistent with each other, so that a closer that sees nothing pending after marking the
// stream closed cannot miss a send that reserved before it saw the mark.

#ifndef GEV_NET_OUTPUT_BUDGET_H_
#define GEV_NET_OUTPUT_BUDGET_H_

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace gev {

class OutputBudget {
 public:
  // OutputBudget::Reserve() — counts `n` more bytes unless that takes the count past `cap`;
  // false, counting nothing, if it would.
  bool Reserve(size_t n, size_t cap) {
    uint32_t pending = pending_.load(std::memory_order_relaxed);
    do {
      if (n > cap || pending > cap - n) return false;
    } while (!pending_.compare_exchange_weak(pending, static_cast<uint32_t>(pending + n),
                                             std::memory_order_seq_cst));
    return true;
  }
  // OutputBudget::Add() — counts `n` bytes whatever the cap: bytes that stand for bytes already
  // reserved (a transport's wire bytes for the user's, released by the caller).
  void Add(size_t n) { pending_.fetch_add(static_cast<uint32_t>(n), std::memory_order_seq_cst); }
  // OutputBudget::Release() — `n` counted bytes were written or dropped.
  void Release(size_t n) {
    pending_.fetch_sub(static_cast<uint32_t>(n), std::memory_order_relaxed);
  }

  // Bytes counted now: a statistic, read without ordering.
  size_t pending() const { return pending_.load(std::memory_order_relaxed); }
  // OutputBudget::NothingPending() — no byte is counted (see the ordering note above).
  bool NothingPending() const { return pending_.load(std::memory_order_seq_cst) == 0; }

  // OutputBudget::Exhausted() — the ResourceExhausted a refused Reserve(n, cap) is reported
  // with.
  absl::Status Exhausted(size_t n, size_t cap) const {
    return absl::ResourceExhaustedError(absl::StrCat("sending ", n,
                                                     " bytes would take pending output (",
                                                     pending(), " bytes) past its limit of ",
                                                     cap));
  }

 private:
  std::atomic<uint32_t> pending_{0};
};

}  // namespace gev

#endif  // GEV_NET_OUTPUT_BUDGET_H_

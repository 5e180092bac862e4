// -----------------------------------------------------------------------------
// File: net/context_slot.h
// -----------------------------------------------------------------------------
//
// `gev::ContextSlot` holds one user value (a `std::any`: a session, a parser, the other side
// of a proxy) that any thread may replace or copy out, and that the thread owning it (a
// connection's loop) may use in place without a copy.
//
//   gev::ContextSlot slot;
//   slot.Set(Session{...});                  // any thread
//   std::any copy = slot.Get();              // any thread
//   if (Session* s = slot.As<Session>()) ... // the owning thread, until the next Set
//
// Thread safety: Set() and Get() are thread-safe; they hold a spin lock only while they swap
// or copy the value (a replaced value is destroyed after it is released, so a slow or
// re-entrant destructor blocks no one). As() is for the owning thread, and its pointer is
// good until the value is set again: do not Set() from another thread while it is in use.

#ifndef GEV_NET_CONTEXT_SLOT_H_
#define GEV_NET_CONTEXT_SLOT_H_

#include <any>
#include <atomic>
#include <thread>
#include <utility>

namespace gev {

class ContextSlot {
 public:
  // ContextSlot::Set() — makes `value` the slot's value.
  void Set(std::any value) {
    std::any previous;  // Destroyed after the lock is released.
    {
      Lock lock(locked_);
      previous = std::exchange(value_, std::move(value));
    }
  }
  // ContextSlot::Get() — a copy of the value (empty if none).
  std::any Get() const {
    Lock lock(locked_);
    return value_;
  }
  // ContextSlot::As() — the value in place, typed: null when there is none or it holds
  // another type.
  template <typename T>
  T* As() {
    return std::any_cast<T>(&value_);
  }

 private:
  // A spin lock rather than a mutex: the critical sections only swap or copy the value.
  class Lock {
   public:
    explicit Lock(std::atomic<bool>& locked) : locked_(locked) {
      while (locked_.exchange(true, std::memory_order_acquire)) {
        while (locked_.load(std::memory_order_relaxed)) std::this_thread::yield();
      }
    }
    ~Lock() { locked_.store(false, std::memory_order_release); }
    Lock(const Lock&) = delete;
    Lock& operator=(const Lock&) = delete;

   private:
    std::atomic<bool>& locked_;
  };

  mutable std::atomic<bool> locked_{false};
  std::any value_;  // Guarded by locked_ (but see As()).
};

}  // namespace gev

#endif  // GEV_NET_CONTEXT_SLOT_H_

#include "eventloop/timing_wheel.h"

#include <algorithm>
#include <utility>

namespace gev {

TimingWheel::TimingWheel(uint64_t now_ms) : current_(now_ms) {}

uint32_t TimingWheel::AllocateNode() {
  if (!free_nodes_.empty()) {
    uint32_t index = free_nodes_.back();
    free_nodes_.pop_back();
    return index;
  }
  nodes_.emplace_back();
  return static_cast<uint32_t>(nodes_.size() - 1);
}

void TimingWheel::FreeNode(uint32_t index) {
  Node& node = nodes_[index];
  node.state = State::kFree;
  Callback callback = std::move(node.callback);
  free_nodes_.push_back(index);
  // `callback` is destroyed last, when the wheel is consistent again: its captures' destructors
  // may themselves use the wheel.
}

TimingWheel::List& TimingWheel::ListOf(const Node& node) {
  return node.level == kFiringList ? firing_ : slots_[node.level][node.slot];
}

void TimingWheel::Link(uint32_t index) {
  Node& node = nodes_[index];
  uint64_t delta = node.due > current_ ? node.due - current_ : 0;
  int level = 0;
  while (level < kLevels - 1 && delta >= (uint64_t{1} << (kSlotBits * (level + 1)))) ++level;
  int slot = static_cast<int>((node.due >> (kSlotBits * level)) & (kSlots - 1));
  node.level = static_cast<uint8_t>(level);
  node.slot = static_cast<uint8_t>(slot);
  List& list = slots_[level][slot];
  node.prev = list.tail;
  node.next = kNil;
  if (list.tail == kNil) {
    list.head = index;
  } else {
    nodes_[list.tail].next = index;
  }
  list.tail = index;
  occupied_[level] |= uint64_t{1} << slot;
}

void TimingWheel::Unlink(uint32_t index) {
  Node& node = nodes_[index];
  List& list = ListOf(node);
  if (node.prev == kNil) {
    list.head = node.next;
  } else {
    nodes_[node.prev].next = node.next;
  }
  if (node.next == kNil) {
    list.tail = node.prev;
  } else {
    nodes_[node.next].prev = node.prev;
  }
  if (list.head == kNil && node.level != kFiringList) {
    occupied_[node.level] &= ~(uint64_t{1} << node.slot);
  }
  node.prev = node.next = kNil;
}

void TimingWheel::Schedule(uint64_t id, uint64_t due_ms, uint64_t interval_ms,
                           Callback callback) {
  uint32_t index = AllocateNode();
  Node& node = nodes_[index];
  node.id = id;
  node.due = std::max(due_ms, current_ + 1);
  node.interval = interval_ms;
  node.callback = std::move(callback);
  node.state = State::kPending;
  ids_[id] = index;
  Link(index);
}

bool TimingWheel::Cancel(uint64_t id) {
  auto it = ids_.find(id);
  if (it == ids_.end()) return false;
  uint32_t index = it->second;
  ids_.erase(it);
  Node& node = nodes_[index];
  if (node.state == State::kFiring) {
    node.state = State::kCancelledWhileFiring;  // Its callback is running: free it afterwards.
    return true;
  }
  Unlink(index);
  FreeNode(index);
  return true;
}

void TimingWheel::CancelAll() {
  // A callback's captures may schedule or cancel timers as they are destroyed: repeat until none
  // is left.
  std::vector<uint64_t> ids;
  while (!ids_.empty()) {
    ids.clear();
    for (const auto& entry : ids_) ids.push_back(entry.first);
    for (uint64_t id : ids) Cancel(id);
  }
}

void TimingWheel::Cascade(int level, int slot) {
  List list = slots_[level][slot];
  slots_[level][slot] = List();
  occupied_[level] &= ~(uint64_t{1} << slot);
  for (uint32_t index = list.head; index != kNil;) {
    uint32_t next = nodes_[index].next;
    Link(index);
    index = next;
  }
}

size_t TimingWheel::FireSlot(int slot) {
  firing_ = slots_[0][slot];
  slots_[0][slot] = List();
  occupied_[0] &= ~(uint64_t{1} << slot);
  for (uint32_t index = firing_.head; index != kNil; index = nodes_[index].next) {
    nodes_[index].level = kFiringList;
  }

  size_t fired = 0;
  while (firing_.head != kNil) {
    uint32_t index = firing_.head;
    Unlink(index);
    Node& node = nodes_[index];
    bool periodic = node.interval != 0;
    if (!periodic) ids_.erase(node.id);
    node.state = State::kFiring;
    // Run the callback from a local: it may schedule timers, which can move nodes_.
    Callback callback = std::move(node.callback);
    callback();
    ++fired;

    Node& after = nodes_[index];
    if (periodic && after.state == State::kFiring) {
      after.callback = std::move(callback);
      after.due += after.interval;
      if (after.due + after.interval <= advancing_to_) {
        // A stall spanned whole periods: their runs coalesce into one, on the cadence.
        after.due += ((advancing_to_ - after.due) / after.interval) * after.interval;
      }
      after.state = State::kPending;
      Link(index);
    } else {
      FreeNode(index);
    }
  }
  return fired;
}

uint64_t TimingWheel::TicksToNextLevel0Work() const {
  uint64_t position = current_ & (kSlots - 1);
  uint64_t to_wrap = kSlots - position;  // The wrap tick cascades the upper levels.
  if (position == kSlots - 1) return 1;
  uint64_t ahead = occupied_[0] >> (position + 1);
  if (ahead == 0) return to_wrap;
  return std::min<uint64_t>(to_wrap, static_cast<uint64_t>(__builtin_ctzll(ahead)) + 1);
}

size_t TimingWheel::Advance(uint64_t now_ms) {
  advancing_to_ = now_ms;
  size_t fired = 0;
  while (current_ < now_ms) {
    if (ids_.empty()) {
      current_ = now_ms;
      break;
    }
    uint64_t target = current_ + TicksToNextLevel0Work();
    if (target > now_ms) {  // Nothing due by now, and no wrap before it.
      current_ = now_ms;
      break;
    }
    current_ = target;
    int position = static_cast<int>(current_ & (kSlots - 1));
    if (position == 0) {
      for (int level = 1; level < kLevels; ++level) {
        int slot = static_cast<int>((current_ >> (kSlotBits * level)) & (kSlots - 1));
        Cascade(level, slot);
        if (slot != 0) break;
      }
    }
    if ((occupied_[0] >> position) & 1) fired += FireSlot(position);
  }
  return fired;
}

int64_t TimingWheel::NextTimeoutMs(uint64_t now_ms) const {
  if (ids_.empty()) return -1;
  uint64_t best = UINT64_MAX;  // Ticks after current_.
  if (occupied_[0] != 0) {
    uint64_t position = current_ & (kSlots - 1);
    uint64_t ahead = position == kSlots - 1 ? 0 : occupied_[0] >> (position + 1);
    best = ahead != 0 ? static_cast<uint64_t>(__builtin_ctzll(ahead)) + 1
                      : (kSlots - position) + static_cast<uint64_t>(__builtin_ctzll(occupied_[0]));
  }
  for (int level = 1; level < kLevels; ++level) {
    if (occupied_[level] == 0) continue;
    // The next granule of this level whose slot is occupied: its first tick cascades it.
    int shift = kSlotBits * level;
    uint64_t base = (current_ >> shift) + 1;
    uint64_t base_slot = base & (kSlots - 1);
    uint64_t from_base = occupied_[level] >> base_slot;
    uint64_t granule =
        from_base != 0
            ? base + static_cast<uint64_t>(__builtin_ctzll(from_base))
            : base + (kSlots - base_slot) + static_cast<uint64_t>(__builtin_ctzll(occupied_[level]));
    best = std::min(best, (granule << shift) - current_);
  }
  if (best == UINT64_MAX) return 0;  // Only a firing-list timer: let the loop come round.
  uint64_t due = current_ + best;
  return due > now_ms ? static_cast<int64_t>(due - now_ms) : 0;
}

}  // namespace gev

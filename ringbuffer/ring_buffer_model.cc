#include "ringbuffer/ring_buffer_model.h"

#include <deque>
#include <string>

#include "ringbuffer/ring_buffer.h"

namespace gev::ringbuffer_internal {
namespace {

std::string ModelBytes(const std::deque<char>& model, size_t from, size_t n) {
  return std::string(model.begin() + from, model.begin() + from + n);
}

template <typename T>
std::optional<T> ModelBigEndian(const std::deque<char>& model) {
  if (model.size() < sizeof(T)) return std::nullopt;
  T value = 0;
  for (size_t i = 0; i < sizeof(T); ++i) {
    value = static_cast<T>((value << 8) | static_cast<unsigned char>(model[i]));
  }
  return value;
}

}  // namespace

std::string RunModelOperations(const ChoiceSource& next, size_t max_operations) {
  RingBuffer buffer;
  std::deque<char> model;
  size_t model_virtual = 0;  // Bytes virtually read past the model's front.
  size_t limit = RingBuffer::kMaxLimit;
  uint8_t fill = 0;

  for (size_t step = 0; step < max_operations; ++step) {
    int64_t op = next(13);
    if (op < 0) break;
    std::string where = "step " + std::to_string(step) + " op " + std::to_string(op) + ": ";
    switch (op) {
      case 0:
      case 1: {  // Write: mostly small, sometimes across several doublings.
        int64_t size_kind = next(8);
        int64_t n = size_kind < 0 ? 0 : next(size_kind < 6 ? 64 : 5000);
        if (n < 0) n = 0;
        std::string data(static_cast<size_t>(n), '\0');
        for (char& c : data) c = static_cast<char>(fill++);
        bool fits = model.size() + data.size() <= limit;
        if (buffer.Write(data.data(), data.size()) != fits) return where + "Write refusal differs";
        if (fits) model.insert(model.end(), data.begin(), data.end());
        break;
      }
      case 2: {
        char c = static_cast<char>(fill++);
        bool fits = model.size() + 1 <= limit;
        if (buffer.WriteByte(c) != fits) return where + "WriteByte refusal differs";
        if (fits) model.push_back(c);
        break;
      }
      case 3: {  // Peek(n)
        int64_t n = next(model.size() + 8);
        if (n < 0) n = 0;
        size_t expect = std::min<size_t>(static_cast<size_t>(n), model.size());
        if (buffer.Peek(static_cast<size_t>(n)).ToString() != ModelBytes(model, 0, expect)) {
          return where + "Peek bytes differ";
        }
        break;
      }
      case 4: {  // Retrieve(n)
        int64_t n = next(model.size() + 8);
        if (n < 0) n = 0;
        size_t take = std::min<size_t>(static_cast<size_t>(n), model.size());
        buffer.Retrieve(static_cast<size_t>(n));
        model.erase(model.begin(), model.begin() + take);
        model_virtual = 0;
        break;
      }
      case 5: {  // Read(dst, n)
        int64_t n = next(model.size() + 8);
        if (n < 0) n = 0;
        std::string dst(static_cast<size_t>(n), '\0');
        size_t got = buffer.Read(dst.data(), dst.size());
        size_t expect = std::min(dst.size(), model.size());
        if (got != expect || dst.substr(0, got) != ModelBytes(model, 0, expect)) {
          return where + "Read differs";
        }
        model.erase(model.begin(), model.begin() + expect);
        model_virtual = 0;
        break;
      }
      case 6: {
        std::optional<char> c = buffer.ReadByte();
        if (c.has_value() != !model.empty()) return where + "ReadByte presence differs";
        if (c) {
          if (*c != model.front()) return where + "ReadByte value differs";
          model.pop_front();
        }
        model_virtual = 0;
        break;
      }
      case 7: {
        if (buffer.PeekUint8() != ModelBigEndian<uint8_t>(model) ||
            buffer.PeekUint16() != ModelBigEndian<uint16_t>(model) ||
            buffer.PeekUint32() != ModelBigEndian<uint32_t>(model) ||
            buffer.PeekUint64() != ModelBigEndian<uint64_t>(model)) {
          return where + "PeekUint* differs";
        }
        break;
      }
      case 8: {  // VirtualRead(n)
        int64_t n = next(model.size() + 8);
        if (n < 0) n = 0;
        size_t expect = std::min<size_t>(static_cast<size_t>(n), model.size() - model_virtual);
        if (buffer.VirtualRead(static_cast<size_t>(n)).ToString() !=
            ModelBytes(model, model_virtual, expect)) {
          return where + "VirtualRead bytes differ";
        }
        model_virtual += expect;
        break;
      }
      case 9: {
        int64_t which = next(2);
        if (which == 0) {
          buffer.VirtualFlush();
          model.erase(model.begin(), model.begin() + model_virtual);
        } else {
          buffer.VirtualRevert();
        }
        model_virtual = 0;
        break;
      }
      case 10: {
        if (buffer.Bytes() != ModelBytes(model, 0, model.size())) return where + "Bytes differ";
        break;
      }
      case 11: {  // Reset, or a new limit.
        if (next(4) == 0) {
          buffer.Reset();
          model.clear();
          model_virtual = 0;
        } else {
          int64_t choice = next(3);
          limit = choice == 0 ? RingBuffer::kMaxLimit : model.size() + static_cast<size_t>(next(10000));
          buffer.set_limit(limit);
        }
        break;
      }
      case 12: {  // Invariants.
        if (buffer.Length() != model.size()) return where + "Length differs";
        if (buffer.VirtualLength() != model.size() - model_virtual) {
          return where + "VirtualLength differs";
        }
        if (buffer.IsEmpty() != model.empty()) return where + "IsEmpty differs";
        if (model.empty() && buffer.Capacity() != 0) return where + "empty buffer owns storage";
        if (buffer.Capacity() < buffer.Length()) return where + "capacity below length";
        if (buffer.Capacity() != 0 &&
            (buffer.Capacity() & (buffer.Capacity() - 1)) != 0) {
          return where + "capacity not a power of two";
        }
        if (buffer.IsFull() != (buffer.Capacity() != 0 && buffer.Length() == buffer.Capacity())) {
          return where + "IsFull differs";
        }
        break;
      }
    }
  }
  if (buffer.Bytes() != ModelBytes(model, 0, model.size())) return "final bytes differ";
  return "";
}

}  // namespace gev::ringbuffer_internal

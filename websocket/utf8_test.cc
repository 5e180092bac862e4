#include "websocket/utf8.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "websocket/testing/utf8_reference.h"

namespace gev::websocket {
namespace {

bool ReferenceIsValid(const std::string& text) { return testing::ReferenceIsValid(text); }

std::string Bytes(std::initializer_list<int> bytes) {
  std::string s;
  for (int b : bytes) s.push_back(static_cast<char>(b));
  return s;
}

TEST(Utf8Test, AgreesWithTheReferenceOnEverySequenceOfUpToThreeBytes) {
  std::string text(3, '\0');
  for (int a = 0; a < 256; ++a) {
    std::string one = Bytes({a});
    ASSERT_EQ(IsValidUtf8(one), ReferenceIsValid(one)) << a;
    for (int b = 0; b < 256; ++b) {
      std::string two = Bytes({a, b});
      ASSERT_EQ(IsValidUtf8(two), ReferenceIsValid(two)) << a << " " << b;
      if (a < 0xE0 || a > 0xF4) continue;  // Only three- and four-byte leads need a third.
      for (int c = 0; c < 256; ++c) {
        text[0] = static_cast<char>(a);
        text[1] = static_cast<char>(b);
        text[2] = static_cast<char>(c);
        ASSERT_EQ(IsValidUtf8(text), ReferenceIsValid(text)) << a << " " << b << " " << c;
      }
    }
  }
}

TEST(Utf8Test, AgreesOnFourByteSequencesAtEveryBoundary) {
  // Every lead, with continuation bytes from the edges of each byte class.
  const int edges[] = {0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xF4, 0xFF};
  for (int a = 0xE0; a < 256; ++a) {
    for (int b : edges) {
      for (int c : edges) {
        for (int d : edges) {
          std::string text = Bytes({a, b, c, d});
          ASSERT_EQ(IsValidUtf8(text), ReferenceIsValid(text)) << a << " " << b << " " << c
                                                               << " " << d;
        }
      }
    }
  }
  EXPECT_TRUE(IsValidUtf8(Bytes({0xF4, 0x8F, 0xBF, 0xBF})));   // U+10FFFF
  EXPECT_FALSE(IsValidUtf8(Bytes({0xF4, 0x90, 0x80, 0x80})));  // U+110000
  EXPECT_FALSE(IsValidUtf8(Bytes({0xED, 0xA0, 0x80})));        // U+D800, a surrogate
  EXPECT_FALSE(IsValidUtf8(Bytes({0xC0, 0xAF})));              // an overlong '/'
  EXPECT_FALSE(IsValidUtf8(Bytes({0xF0, 0x8F, 0xBF, 0xBF})));  // overlong U+FFFF
}

// Random texts, valid and damaged, fed whole and in random pieces: the same verdict, and a
// piecewise feed fails at the very byte the whole one does.
TEST(Utf8Test, PiecesGiveTheSameVerdictAndFailAtTheSameByte) {
  std::mt19937 random(20261207);
  auto random_code_point = [&]() -> uint32_t {
    switch (random() % 4) {
      case 0: return random() % 0x80;
      case 1: return 0x80 + random() % (0x800 - 0x80);
      case 2: {
        uint32_t cp = 0x800 + random() % (0x10000 - 0x800);
        return cp >= 0xD800 && cp <= 0xDFFF ? 0x41 : cp;
      }
      default: return 0x10000 + random() % (0x110000 - 0x10000);
    }
  };
  auto append = [](std::string* s, uint32_t cp) {
    if (cp < 0x80) {
      s->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      s->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      s->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      s->push_back(static_cast<char>(0xF0 | (cp >> 18)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  };
  for (int round = 0; round < 3000; ++round) {
    std::string text;
    size_t characters = random() % 200;
    for (size_t k = 0; k < characters; ++k) append(&text, random_code_point());
    if (round % 2 == 1 && !text.empty()) {
      text[random() % text.size()] = static_cast<char>(random() % 256);  // Damaged, perhaps.
    }
    const bool valid = ReferenceIsValid(text);
    ASSERT_EQ(IsValidUtf8(text), valid) << round;
    // Where a byte-by-byte feed first fails, if it does.
    size_t fails_at = text.size();
    Utf8Validator bytewise;
    for (size_t k = 0; k < text.size(); ++k) {
      if (!bytewise.Feed(text.data() + k, 1)) {
        fails_at = k;
        break;
      }
    }
    Utf8Validator pieces;
    size_t offset = 0;
    bool ok = true;
    while (offset < text.size()) {
      size_t piece = std::min(text.size() - offset, static_cast<size_t>(random() % 20));
      ok = pieces.Feed(text.data() + offset, piece);
      if (!ok) {
        // Refused within the piece that holds the first bad byte, not later.
        EXPECT_LE(offset, fails_at) << round;
        EXPECT_GT(offset + piece, fails_at) << round;
        break;
      }
      offset += piece;
    }
    EXPECT_EQ(ok && pieces.AtBoundary(), valid) << round;
  }
}

TEST(Utf8Test, ACutSequenceIsNotABoundaryAndAFailureSticksUntilReset) {
  Utf8Validator validator;
  EXPECT_TRUE(validator.Feed("abc\xE2\x82"));  // The start of U+20AC.
  EXPECT_FALSE(validator.AtBoundary());
  EXPECT_TRUE(validator.Feed("\xAC"));
  EXPECT_TRUE(validator.AtBoundary());
  EXPECT_FALSE(validator.Feed("\xFF"));
  EXPECT_TRUE(validator.Failed());
  EXPECT_FALSE(validator.Feed("a"));
  validator.Reset();
  EXPECT_TRUE(validator.Feed("a"));
  // Autobahn 6.4.1's shape: the surrogate's second byte fails at once, before the text ends.
  Utf8Validator fast;
  EXPECT_TRUE(fast.Feed("\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xED"));
  EXPECT_FALSE(fast.Feed("\xA0"));
}

}  // namespace
}  // namespace gev::websocket

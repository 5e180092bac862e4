#include "examples/dns/dns.h"

#include <random>
#include <string>

#include "gtest/gtest.h"

namespace gev::examples::dns {
namespace {

constexpr char kZone[] =
    "$ORIGIN example.com.\n"
    "$TTL 300\n"
    "@ IN SOA ns1 hostmaster 1 2 3 4 5\n"
    "@ IN NS ns1\n"
    "www IN A 192.0.2.1\n"
    "    IN AAAA 2001:db8::1\n"
    "a.b IN A 192.0.2.2\n";

// A query for `name` (text, absolute) of `type`, id 0x1234, RD set; with an OPT record of
// `edns_size` when nonzero.
std::string Query(const std::string& name, uint16_t type, uint16_t edns_size = 0) {
  std::string query("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00", 11);
  query.push_back(edns_size != 0 ? 1 : 0);
  std::string wire = NameToWire(name, "");
  // The question keeps the case it was asked in.
  for (size_t at = 0; at < wire.size() && wire[at] != 0; at += 1 + static_cast<uint8_t>(wire[at])) {
    for (size_t i = 1; i <= static_cast<uint8_t>(wire[at]); ++i) wire[at + i] = name[at + i - 1];
  }
  query += wire;
  query.push_back(static_cast<char>(type >> 8));
  query.push_back(static_cast<char>(type & 0xff));
  query += std::string("\x00\x01", 2);
  if (edns_size != 0) {
    query += std::string("\x00\x00\x29", 3);
    query.push_back(static_cast<char>(edns_size >> 8));
    query.push_back(static_cast<char>(edns_size & 0xff));
    query += std::string(6, '\0');
  }
  return query;
}

uint8_t Rcode(const std::string& response) { return response[3] & 0x0f; }
uint16_t Count(const std::string& response, size_t at) {
  return static_cast<uint16_t>((static_cast<uint8_t>(response[at]) << 8) |
                               static_cast<uint8_t>(response[at + 1]));
}

TEST(DnsTest, AnswersFromTheZone) {
  absl::StatusOr<Zone> zone = Zone::Parse(kZone);
  ASSERT_TRUE(zone.ok()) << zone.status();
  std::string response;
  ASSERT_TRUE(Answer(*zone, Query("WwW.Example.COM.", kA), &response));
  EXPECT_EQ(response.substr(0, 2), "\x12\x34");
  EXPECT_EQ(static_cast<uint8_t>(response[2]), 0x85);  // QR, AA, RD.
  EXPECT_EQ(Rcode(response), kNoError);
  EXPECT_EQ(Count(response, 6), 1);
  // The question as it was asked, then the answer pointing at it.
  const std::string question = Query("WwW.Example.COM.", kA).substr(12);
  EXPECT_EQ(response.substr(12, question.size()), question);
  EXPECT_EQ(response.substr(response.size() - 4), std::string("\xc0\x00\x02\x01", 4));
  ASSERT_TRUE(Answer(*zone, Query("www.example.com.", kAny), &response));
  EXPECT_EQ(Count(response, 6), 2);  // A and AAAA.
  // The AAAA's line continues www's with no TTL of its own: $TTL's 300 (0x12c).
  EXPECT_NE(response.find(std::string("\x00\x1c\x00\x01\x00\x00\x01\x2c", 8)), std::string::npos);
}

TEST(DnsTest, NxdomainNodataEmptyNonTerminalsAndRefused) {
  absl::StatusOr<Zone> zone = Zone::Parse(kZone);
  ASSERT_TRUE(zone.ok()) << zone.status();
  std::string response;
  ASSERT_TRUE(Answer(*zone, Query("nope.example.com.", kA), &response));
  EXPECT_EQ(Rcode(response), kNxDomain);
  EXPECT_EQ(Count(response, 8), 1);  // The SOA.
  ASSERT_TRUE(Answer(*zone, Query("a.b.example.com.", kAaaa), &response));
  EXPECT_EQ(Rcode(response), kNoError);
  EXPECT_EQ(Count(response, 6), 0);
  EXPECT_EQ(Count(response, 8), 1);
  ASSERT_TRUE(Answer(*zone, Query("b.example.com.", kA), &response));
  EXPECT_EQ(Rcode(response), kNoError);  // Empty, but there.
  ASSERT_TRUE(Answer(*zone, Query("example.org.", kA), &response));
  EXPECT_EQ(Rcode(response), kRefused);
  EXPECT_EQ(response[2] & 0x04, 0);  // Not authoritative there.
  ASSERT_TRUE(Answer(*zone, Query("notexample.com.", kA), &response));
  EXPECT_EQ(Rcode(response), kRefused);  // A suffix, not a label boundary.
}

TEST(DnsTest, MalformedQueriesGetFormerrOrNothing) {
  absl::StatusOr<Zone> zone = Zone::Parse(kZone);
  ASSERT_TRUE(zone.ok()) << zone.status();
  std::string response;
  EXPECT_FALSE(Answer(*zone, "short", &response));
  std::string as_response = Query("www.example.com.", kA);
  as_response[2] = static_cast<char>(as_response[2] | 0x80);
  EXPECT_FALSE(Answer(*zone, as_response, &response));
  std::string two_questions = Query("www.example.com.", kA);
  two_questions[5] = 2;
  ASSERT_TRUE(Answer(*zone, two_questions, &response));
  EXPECT_EQ(Rcode(response), kFormErr);
  std::string pointer = Query("www.example.com.", kA);
  pointer[12] = static_cast<char>(0xc0);
  ASSERT_TRUE(Answer(*zone, pointer, &response));
  EXPECT_EQ(Rcode(response), kFormErr);
  std::string cut = Query("www.example.com.", kA);
  cut.resize(cut.size() - 3);  // The type and class cut short.
  ASSERT_TRUE(Answer(*zone, cut, &response));
  EXPECT_EQ(Rcode(response), kFormErr);
  std::string notify = Query("www.example.com.", kA);
  notify[2] = static_cast<char>(4 << 3);  // Opcode NOTIFY.
  ASSERT_TRUE(Answer(*zone, notify, &response));
  EXPECT_EQ(Rcode(response), kNotImp);
}

TEST(DnsTest, LargeAnswersAreTruncatedWithoutEdnsAndWholeWithIt) {
  std::string text = kZone;
  for (int i = 0; i < 40; ++i) text += "big IN A 198.51.100." + std::to_string(i + 1) + "\n";
  absl::StatusOr<Zone> zone = Zone::Parse(text);
  ASSERT_TRUE(zone.ok()) << zone.status();
  std::string response;
  ASSERT_TRUE(Answer(*zone, Query("big.example.com.", kA), &response));
  EXPECT_NE(response[2] & 0x02, 0);  // TC.
  EXPECT_EQ(Count(response, 6), 0);
  EXPECT_LE(response.size(), 512u);
  ASSERT_TRUE(Answer(*zone, Query("big.example.com.", kA, 4096), &response));
  EXPECT_EQ(response[2] & 0x02, 0);
  EXPECT_EQ(Count(response, 6), 40);
  EXPECT_EQ(Count(response, 10), 1);  // Our OPT.
  ASSERT_TRUE(Answer(*zone, Query("big.example.com.", kA, 600), &response));
  EXPECT_NE(response[2] & 0x02, 0);  // 40 x 16 bytes do not fit in 600 either.
  EXPECT_LE(response.size(), 600u);
  EXPECT_EQ(Count(response, 10), 1);  // Still with OPT.
}

// Every prefix of a query, and ten thousand with random bytes changed, get an answer or none,
// never a read past the datagram (AddressSanitizer's to see) and never less than a header.
TEST(DnsTest, CutAndCorruptedQueriesAreAnsweredSafely) {
  absl::StatusOr<Zone> zone = Zone::Parse(kZone);
  ASSERT_TRUE(zone.ok()) << zone.status();
  const std::string query = Query("www.example.com.", kA, 1232);
  std::string response;
  for (size_t n = 0; n <= query.size(); ++n) {
    std::string prefix = query.substr(0, n);  // Its own allocation: a read past it is caught.
    if (Answer(*zone, prefix, &response)) {
      EXPECT_GE(response.size(), 12u) << n;
    }
  }
  std::mt19937 random(7);
  for (int i = 0; i < 10000; ++i) {
    std::string changed = query;
    for (int flips = 0; flips < 3; ++flips) {
      changed[random() % changed.size()] = static_cast<char>(random());
    }
    if (Answer(*zone, changed, &response)) {
      EXPECT_GE(response.size(), 12u);
    }
  }
}

TEST(DnsTest, AnUnknownEdnsVersionGetsBadvers) {
  absl::StatusOr<Zone> zone = Zone::Parse(kZone);
  ASSERT_TRUE(zone.ok()) << zone.status();
  std::string query = Query("www.example.com.", kA, 1232);
  query[query.size() - 5] = 1;  // The OPT's version byte.
  std::string response;
  ASSERT_TRUE(Answer(*zone, query, &response));
  EXPECT_EQ(Rcode(response), 0);  // BADVERS is 16: its low bits are 0...
  EXPECT_EQ(Count(response, 6), 0);
  ASSERT_EQ(Count(response, 10), 1);
  EXPECT_EQ(static_cast<uint8_t>(response[response.size() - 6]), 1);  // ...its high ones 1.
}

TEST(DnsTest, NegativeAnswersCarryTheSoaForItsMinimum) {
  absl::StatusOr<Zone> zone = Zone::Parse(kZone);  // TTL 300, MINIMUM 5.
  ASSERT_TRUE(zone.ok()) << zone.status();
  std::string response;
  ASSERT_TRUE(Answer(*zone, Query("nope.example.com.", kA), &response));
  EXPECT_NE(response.find(std::string("\x00\x06\x00\x01\x00\x00\x00\x05", 8)),
            std::string::npos);
}

TEST(DnsTest, ALaterOriginChangesRelativeNamesNotTheApex) {
  absl::StatusOr<Zone> zone = Zone::Parse(std::string(kZone) +
                                          "$ORIGIN sub.example.com.\n"
                                          "host IN A 192.0.2.9\n");
  ASSERT_TRUE(zone.ok()) << zone.status();
  std::string response;
  ASSERT_TRUE(Answer(*zone, Query("host.sub.example.com.", kA), &response));
  EXPECT_EQ(Count(response, 6), 1);
  ASSERT_TRUE(Answer(*zone, Query("example.com.", kSoa), &response));
  EXPECT_EQ(Count(response, 6), 1);  // The apex is still example.com.
  EXPECT_FALSE(Zone::Parse(std::string(kZone) + "$ORIGIN other.org.\nx IN A 192.0.2.1\n").ok());
}

TEST(DnsTest, BadZonesAreRefusedWithTheLine) {
  // A delegation and a wildcard: answered authoritatively they would be wrong.
  EXPECT_FALSE(Zone::Parse(std::string(kZone) + "sub IN NS ns.elsewhere.org.\n").ok());
  EXPECT_FALSE(Zone::Parse(std::string(kZone) + "* IN A 192.0.2.3\n").ok());
  EXPECT_FALSE(Zone::Parse("www IN A 192.0.2.1\n").ok());  // No $ORIGIN.
  EXPECT_FALSE(Zone::Parse("$ORIGIN example.com.\nwww IN A 192.0.2.1\n").ok());  // No SOA.
  absl::Status bad = Zone::Parse("$ORIGIN example.com.\n@ SOA a b 1 2 3 4 5\nwww A 300.1.1.1\n")
                         .status();
  EXPECT_NE(bad.message().find("line 3"), std::string::npos) << bad;
  EXPECT_FALSE(Zone::Parse("$ORIGIN example.com.\n@ SOA a b 1 2 3 4 5\nx.org. A 192.0.2.1\n").ok());
  EXPECT_FALSE(Zone::Parse("$ORIGIN example.com.\n@ SOA a b 1 2 3 4 5\nwww MX 10 mail\n").ok());
}

}  // namespace
}  // namespace gev::examples::dns

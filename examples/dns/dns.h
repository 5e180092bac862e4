// -----------------------------------------------------------------------------
// File: examples/dns/dns.h
// -----------------------------------------------------------------------------
//
// An authoritative DNS responder for one small zone, for examples/dns: `Zone::Parse` reads a
// zone in RFC 1035's master-file form (a subset: $ORIGIN, $TTL, and A, AAAA, NS at the apex and
// SOA records, one to a line; no delegations, no wildcards), and `Answer` turns a query datagram
// into the response datagram. The first $ORIGIN is the zone's apex.
//
//   absl::StatusOr<gev::examples::dns::Zone> zone = Zone::Parse(text);
//   std::string response;
//   if (Answer(*zone, query, &response)) send response;   // false: no answer at all
//
// Answers: the records of the asked type with AA set; NOERROR with the SOA in authority when
// the name has none of that type; NXDOMAIN (and the SOA) for a name not in the zone; REFUSED
// for a name outside it; NOTIMP for an opcode other than QUERY; FORMERR for a malformed
// query (no question, two, a name past its bounds, compression in the question). A response
// longer than 512 bytes, or than the client's EDNS0 buffer size (up to 4096), is cut to its
// header and question with TC set, so the client retries over TCP. A datagram too short to
// hold a header, or one that is itself a response, gets no answer. An EDNS0 version other
// than 0 gets BADVERS (RFC 6891); the SOA in a negative answer has the TTL of its MINIMUM, if
// lower (RFC 2308).
//
// Thread safety: a Zone is immutable after Parse; Answer may run on any number of threads.

#ifndef GEV_EXAMPLES_DNS_DNS_H_
#define GEV_EXAMPLES_DNS_DNS_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace gev::examples::dns {

enum RecordType : uint16_t { kA = 1, kNs = 2, kSoa = 6, kAaaa = 28, kOpt = 41, kAny = 255 };
enum ResponseCode : uint8_t { kNoError = 0, kFormErr = 1, kServFail = 2, kNxDomain = 3,
                              kNotImp = 4, kRefused = 5 };

class Zone {
 public:
  // Zone::Parse() — the zone in `text`; InvalidArgument with the line for what it cannot read,
  // or for a zone without exactly one SOA at its origin.
  static absl::StatusOr<Zone> Parse(std::string_view text);

  // A name's records of one type, each already in wire form with its owner written as a
  // pointer to the question's name (offset 12): type, class, TTL, rdata length, rdata.
  struct RecordSet {
    std::vector<std::string> records;
  };
  // By lower-cased name in wire form ("\x03www\x07example\x03com\x00"), then by type.
  using Names = std::map<std::string, std::map<uint16_t, RecordSet>>;

  const std::string& origin() const { return origin_; }  // Lower-cased, wire form.
  const Names& names() const { return names_; }
  // The SOA record, with its owner in full (for the authority section).
  const std::string& soa_authority() const { return soa_authority_; }

 private:
  std::string origin_;
  Names names_;
  std::string soa_authority_;
};

// Answer() — the response to `query` in `response` (replaced); false when the query deserves
// no answer (shorter than a header, or a response itself).
bool Answer(const Zone& zone, std::string_view query, std::string* response);

// A name in text ("www.example.com." or relative to `origin`, "@" for the origin) in wire
// form, lower-cased; empty when it is not a name (a label over 63 bytes, the whole over 255).
std::string NameToWire(std::string_view name, const std::string& origin_wire);

}  // namespace gev::examples::dns

#endif  // GEV_EXAMPLES_DNS_DNS_H_

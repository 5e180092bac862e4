#include "examples/dns/dns.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace gev::examples::dns {

namespace {

// Debian's abseil has its own string_view, not std::string_view.
absl::string_view A(std::string_view view) { return absl::string_view(view.data(), view.size()); }

constexpr size_t kHeaderSize = 12;
constexpr size_t kPlainUdpLimit = 512;   // RFC 1035, without EDNS0.
constexpr size_t kMaxUdpPayload = 4096;  // What we offer and accept with EDNS0.
constexpr uint16_t kClassIn = 1;
constexpr uint16_t kClassAny = 255;

void Put16(std::string* out, uint16_t value) {
  out->push_back(static_cast<char>(value >> 8));
  out->push_back(static_cast<char>(value & 0xff));
}
void Put32(std::string* out, uint32_t value) {
  Put16(out, static_cast<uint16_t>(value >> 16));
  Put16(out, static_cast<uint16_t>(value & 0xffff));
}
uint16_t Get16(std::string_view bytes, size_t at) {
  return static_cast<uint16_t>((static_cast<uint8_t>(bytes[at]) << 8) |
                               static_cast<uint8_t>(bytes[at + 1]));
}

// The labels of a wire-form name start at these offsets (the root's zero byte excluded).
std::vector<size_t> LabelStarts(const std::string& wire) {
  std::vector<size_t> starts;
  size_t at = 0;
  while (at < wire.size() && wire[at] != 0) {
    starts.push_back(at);
    at += 1 + static_cast<uint8_t>(wire[at]);
  }
  return starts;
}

// Whether wire-form `name` is `apex` or under it (whole labels: not "notexample.com").
bool InZone(const std::string& name, const std::string& apex) {
  if (name == apex) return true;
  const std::vector<size_t> starts = LabelStarts(name);
  return std::any_of(starts.begin(), starts.end(), [&](size_t start) {
    return name.compare(start, std::string::npos, apex) == 0;
  });
}

// Type, class IN, TTL, rdata length and rdata: a record's wire form after its owner.
std::string RecordBody(uint16_t type, uint32_t ttl, const std::string& rdata) {
  std::string body;
  Put16(&body, type);
  Put16(&body, kClassIn);
  Put32(&body, ttl);
  Put16(&body, static_cast<uint16_t>(rdata.size()));
  body += rdata;
  return body;
}

absl::Status LineError(size_t line_number, std::string_view line, std::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("zone line ", line_number, ": ", A(why), ": ", A(line)));
}

}  // namespace

std::string NameToWire(std::string_view name, const std::string& origin_wire) {
  if (name == "@") return origin_wire;
  const bool absolute = !name.empty() && name.back() == '.';
  if (absolute) name.remove_suffix(1);
  std::string wire;
  if (!name.empty()) {
    for (absl::string_view label : absl::StrSplit(A(name), '.')) {
      if (label.empty() || label.size() > 63) return "";
      wire.push_back(static_cast<char>(label.size()));
      wire += absl::AsciiStrToLower(label);
    }
  }
  if (absolute) {
    wire.push_back('\0');
  } else {
    wire += origin_wire;
  }
  if (wire.size() > 255 || wire.empty() || wire.back() != '\0') return "";
  return wire;
}

absl::StatusOr<Zone> Zone::Parse(std::string_view text) {
  Zone zone;
  uint32_t default_ttl = 3600;
  std::string origin;  // What relative names are relative to; zone.origin_ is the apex.
  std::string previous_owner;
  size_t soa_count = 0;
  size_t line_number = 0;
  for (absl::string_view raw_line : absl::StrSplit(A(text), '\n')) {
    ++line_number;
    std::string_view line(raw_line.data(), raw_line.size());
    if (size_t comment = line.find(';'); comment != std::string_view::npos) {
      line = line.substr(0, comment);
    }
    const bool continues_owner = !line.empty() && (line[0] == ' ' || line[0] == '\t');
    std::vector<absl::string_view> tokens =
        absl::StrSplit(A(line), absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    if (tokens.empty()) continue;
    if (tokens[0] == "$ORIGIN") {
      if (tokens.size() != 2 || tokens[1].back() != '.') {
        return LineError(line_number, line, "$ORIGIN needs one absolute name");
      }
      origin = NameToWire(std::string_view(tokens[1].data(), tokens[1].size()), "");
      if (origin.empty()) return LineError(line_number, line, "not a name");
      // The first $ORIGIN is the zone's apex; later ones only change what relative names
      // are relative to.
      if (zone.origin_.empty()) zone.origin_ = origin;
      if (!InZone(origin, zone.origin_)) {
        return LineError(line_number, line, "an $ORIGIN outside the zone");
      }
      continue;
    }
    if (tokens[0] == "$TTL") {
      if (tokens.size() != 2 || !absl::SimpleAtoi(tokens[1], &default_ttl)) {
        return LineError(line_number, line, "$TTL needs a number");
      }
      continue;
    }
    if (origin.empty()) return LineError(line_number, line, "a record before $ORIGIN");
    size_t at = 0;
    std::string owner;
    if (continues_owner) {
      if (previous_owner.empty()) return LineError(line_number, line, "no owner to continue");
      owner = previous_owner;
    } else {
      owner = NameToWire(std::string_view(tokens[at].data(), tokens[at].size()), origin);
      ++at;
      if (owner.empty()) return LineError(line_number, line, "not a name");
    }
    previous_owner = owner;
    uint32_t ttl = default_ttl;
    uint32_t stated_ttl = 0;  // SimpleAtoi writes even when it fails.
    if (at < tokens.size() && absl::SimpleAtoi(tokens[at], &stated_ttl)) {
      ttl = stated_ttl;
      ++at;
    }
    if (at < tokens.size() && absl::AsciiStrToUpper(tokens[at]) == "IN") ++at;
    if (at >= tokens.size()) return LineError(line_number, line, "no type");
    const std::string type = absl::AsciiStrToUpper(tokens[at++]);
    std::vector<std::string_view> rdata;
    for (size_t i = at; i < tokens.size(); ++i) {
      rdata.emplace_back(tokens[i].data(), tokens[i].size());
    }
    if (!InZone(owner, zone.origin_)) {
      return LineError(line_number, line, "a name outside the zone");
    }
    if (owner.find("\x01*") != std::string::npos) {
      return LineError(line_number, line, "a wildcard, which this responder does not serve");
    }

    uint16_t code = 0;
    std::string wire;
    if (type == "A" || type == "AAAA") {
      const bool v6 = type == "AAAA";
      unsigned char address[16];
      if (rdata.size() != 1 ||
          inet_pton(v6 ? AF_INET6 : AF_INET, std::string(rdata[0]).c_str(), address) != 1) {
        return LineError(line_number, line, v6 ? "not an IPv6 address" : "not an IPv4 address");
      }
      wire.assign(reinterpret_cast<const char*>(address), v6 ? 16 : 4);
      code = v6 ? kAaaa : kA;
    } else if (type == "NS") {
      if (rdata.size() != 1 || (wire = NameToWire(rdata[0], origin)).empty()) {
        return LineError(line_number, line, "NS needs one name");
      }
      if (owner != zone.origin_) {  // A delegation would need referrals, not answers.
        return LineError(line_number, line, "an NS below the apex");
      }
      code = kNs;
    } else if (type == "SOA") {
      uint32_t numbers[5];
      std::string mname, rname;
      if (rdata.size() != 7 || (mname = NameToWire(rdata[0], origin)).empty() ||
          (rname = NameToWire(rdata[1], origin)).empty()) {
        return LineError(line_number, line, "SOA needs two names and five numbers on one line");
      }
      for (size_t i = 0; i < 5; ++i) {
        if (!absl::SimpleAtoi(A(rdata[2 + i]), &numbers[i])) {
          return LineError(line_number, line, "an SOA number that is not one");
        }
      }
      if (owner != zone.origin_) return LineError(line_number, line, "an SOA not at the apex");
      wire = mname + rname;
      for (uint32_t number : numbers) Put32(&wire, number);
      code = kSoa;
      ++soa_count;
      // In negative answers the SOA lives no longer than its MINIMUM (RFC 2308, section 3).
      zone.soa_authority_ = owner + RecordBody(kSoa, std::min(ttl, numbers[4]), wire);
    } else {
      return LineError(line_number, line, "a type this responder does not serve");
    }
    std::string record("\xc0\x0c", 2);  // The owner: the question's name.
    record += RecordBody(code, ttl, wire);
    zone.names_[owner][code].records.push_back(std::move(record));
  }
  if (zone.origin_.empty()) return absl::InvalidArgumentError("a zone without $ORIGIN");
  if (soa_count != 1) {
    return absl::InvalidArgumentError(absl::StrCat("a zone needs one SOA, not ", soa_count));
  }
  // Empty non-terminals (b.example.com. when only a.b.example.com. has records) exist: they
  // answer NOERROR with no records, not NXDOMAIN.
  std::vector<std::string> ancestors;
  for (const auto& [name, sets] : zone.names_) {
    for (size_t start : LabelStarts(name)) {
      std::string ancestor = name.substr(start);
      if (ancestor.size() > zone.origin_.size()) ancestors.push_back(ancestor);
    }
  }
  for (std::string& ancestor : ancestors) zone.names_.try_emplace(std::move(ancestor));
  return zone;
}

bool Answer(const Zone& zone, std::string_view query, std::string* response) {
  response->clear();
  if (query.size() < kHeaderSize) return false;   // No id to answer with.
  if ((query[2] & 0x80) != 0) return false;       // A response: answering it could loop.
  const uint8_t opcode = (static_cast<uint8_t>(query[2]) >> 3) & 0x0f;
  const uint8_t recursion_desired = query[2] & 0x01;

  // Header: the query's id, QR, its opcode and RD; AA, TC and the code filled in below.
  auto header = [&](uint8_t rcode, bool authoritative, uint16_t qdcount) {
    response->assign(query.substr(0, 2));
    response->push_back(static_cast<char>(0x80 | (opcode << 3) | (authoritative ? 0x04 : 0) |
                                          recursion_desired));
    response->push_back(static_cast<char>(rcode));
    Put16(response, qdcount);
    Put16(response, 0);
    Put16(response, 0);
    Put16(response, 0);
  };
  if (opcode != 0) {
    header(kNotImp, false, 0);
    return true;
  }
  if (Get16(query, 4) != 1) {
    header(kFormErr, false, 0);
    return true;
  }
  // The question's name, lower-cased for the lookup; its bytes as they came for the echo.
  std::string qname;
  size_t at = kHeaderSize;
  while (true) {
    if (at >= query.size()) {
      header(kFormErr, false, 0);
      return true;
    }
    const uint8_t length = static_cast<uint8_t>(query[at]);
    if ((length & 0xc0) != 0 || at + 1 + length > query.size() ||
        qname.size() + 1 + length > 255) {
      header(kFormErr, false, 0);  // A pointer or an extended label in a question.
      return true;
    }
    qname.push_back(static_cast<char>(length));
    for (size_t i = 0; i < length; ++i) {
      qname.push_back(static_cast<char>(
          std::tolower(static_cast<unsigned char>(query[at + 1 + i]))));
    }
    at += 1 + length;
    if (length == 0) break;
  }
  if (at + 4 > query.size()) {
    header(kFormErr, false, 0);
    return true;
  }
  const uint16_t qtype = Get16(query, at);
  const uint16_t qclass = Get16(query, at + 2);
  const std::string_view question = query.substr(kHeaderSize, at + 4 - kHeaderSize);
  at += 4;

  // EDNS0: an OPT record, the only additional record a query carries, raises the size limit.
  size_t limit = kPlainUdpLimit;
  bool edns = false;
  uint8_t edns_version = 0;
  if (Get16(query, 10) >= 1 && Get16(query, 6) == 0 && Get16(query, 8) == 0 &&
      at + 11 <= query.size() && query[at] == 0 && Get16(query, at + 1) == kOpt) {
    if (at + 11 + Get16(query, at + 9) > query.size()) {  // Options past the datagram.
      header(kFormErr, false, 0);
      return true;
    }
    edns = true;
    edns_version = static_cast<uint8_t>(query[at + 6]);
    limit = std::clamp<size_t>(Get16(query, at + 3), kPlainUdpLimit, kMaxUdpPayload);
  }
  // An OPT record answers one: the size we take, no extended code, no options.
  constexpr size_t kOptSize = 11;
  auto finish = [&](uint16_t answers, uint16_t authority, uint8_t extended_rcode = 0) {
    if (response->size() + (edns ? kOptSize : 0) > limit) {
      // Cut to the header and the question, TC set: the client asks again over TCP.
      response->resize(kHeaderSize + question.size());
      (*response)[2] = static_cast<char>((*response)[2] | 0x02);
      answers = authority = 0;
    }
    uint16_t additional = 0;
    if (edns) {
      response->push_back('\0');  // The root.
      Put16(response, kOpt);
      Put16(response, static_cast<uint16_t>(kMaxUdpPayload));
      Put32(response, static_cast<uint32_t>(extended_rcode) << 24);  // Version 0, no flags.
      Put16(response, 0);
      additional = 1;
    }
    (*response)[6] = static_cast<char>(answers >> 8);
    (*response)[7] = static_cast<char>(answers & 0xff);
    (*response)[8] = static_cast<char>(authority >> 8);
    (*response)[9] = static_cast<char>(authority & 0xff);
    (*response)[10] = static_cast<char>(additional >> 8);
    (*response)[11] = static_cast<char>(additional & 0xff);
  };

  if (edns_version != 0) {  // RFC 6891, 6.1.3: BADVERS (16), its high bits in the OPT.
    header(kNoError, false, 1);
    response->append(question);
    finish(0, 0, /*extended_rcode=*/1);
    return true;
  }
  if (!InZone(qname, zone.origin()) || (qclass != kClassIn && qclass != kClassAny)) {
    header(kRefused, false, 1);
    response->append(question);
    finish(0, 0);
    return true;
  }
  auto found = zone.names().find(qname);
  header(found == zone.names().end() ? kNxDomain : kNoError, true, 1);
  response->append(question);
  uint16_t answers = 0;
  if (found != zone.names().end()) {
    for (const auto& [type, set] : found->second) {
      if (qtype != kAny && type != qtype) continue;
      for (const std::string& record : set.records) {
        response->append(record);
        ++answers;
      }
    }
  }
  uint16_t authority = 0;
  if (answers == 0) {  // NXDOMAIN or no data: the SOA says for how long to believe it.
    response->append(zone.soa_authority());
    authority = 1;
  }
  finish(answers, authority);
  return true;
}

}  // namespace gev::examples::dns

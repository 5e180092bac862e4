#include "websocket/deflate.h"

#include <zlib.h>

#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "ringbuffer/ring_buffer.h"
#include "websocket/frame.h"
#include "websocket/message_reader.h"

namespace gev::websocket {
namespace {

std::string Bytes(std::initializer_list<int> bytes) {
  std::string s;
  for (int b : bytes) s.push_back(static_cast<char>(b));
  return s;
}

std::optional<DeflateAgreement> Negotiate(std::vector<std::string_view> values,
                                          DeflateOptions options, std::string* response) {
  options.enabled = true;
  return NegotiateDeflate(values, options, response);
}

TEST(DeflateTest, ParsesExtensionListsWithParamsAndQuotes) {
  std::vector<ExtensionOffer> offers;
  ASSERT_TRUE(ParseExtensions({"permessage-deflate; client_max_window_bits, foo;a=\"1\" ;b",
                               "bar"},
                              &offers));
  ASSERT_EQ(offers.size(), 3u);
  EXPECT_EQ(offers[0].name, "permessage-deflate");
  ASSERT_EQ(offers[0].params.size(), 1u);
  EXPECT_FALSE(offers[0].params[0].value.has_value());
  EXPECT_EQ(offers[1].params[0].value, "1");
  EXPECT_EQ(offers[1].params[1].name, "b");
  EXPECT_EQ(offers[2].name, "bar");
  for (std::string_view bad : {"a;", "a; =1", "a;b=", "a;b=\"1", "a b", "a;b=1 2", ";a"}) {
    std::vector<ExtensionOffer> out;
    EXPECT_FALSE(ParseExtensions({bad}, &out)) << bad;
  }
}

TEST(DeflateTest, TheServerTakesTheFirstOfferItCanAndAnswersWithinIt) {
  std::string response;
  // A browser's offer; the defaults ask for no context takeover both ways.
  std::optional<DeflateAgreement> agreed =
      Negotiate({"permessage-deflate; client_max_window_bits"}, {}, &response);
  ASSERT_TRUE(agreed.has_value());
  EXPECT_EQ(response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
  EXPECT_TRUE(agreed->server_no_context_takeover);
  EXPECT_TRUE(agreed->client_no_context_takeover);

  DeflateOptions takeover;
  takeover.server_no_context_takeover = false;
  takeover.client_no_context_takeover = false;
  takeover.client_max_window_bits = 12;
  agreed = Negotiate({"permessage-deflate; client_max_window_bits; server_max_window_bits=10"},
                     takeover, &response);
  ASSERT_TRUE(agreed.has_value());
  EXPECT_EQ(response,
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=12");
  EXPECT_EQ(agreed->server_max_window_bits, 10);
  EXPECT_EQ(agreed->client_max_window_bits, 12);
  EXPECT_FALSE(agreed->server_no_context_takeover);

  // Declined offers fall through to the next one.
  for (std::string_view declined :
       {"permessage-deflate; server_max_window_bits=8",   // zlib's raw deflate has no 8
        "permessage-deflate; server_max_window_bits",     // needs a value
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=09",  // no leading zero
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; unknown_param",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover"}) {
    EXPECT_FALSE(Negotiate({declined}, {}, &response).has_value()) << declined;
    std::string combined = std::string(declined) + ", permessage-deflate";
    agreed = Negotiate({combined}, takeover, &response);
    ASSERT_TRUE(agreed.has_value()) << combined;
    EXPECT_EQ(response, "permessage-deflate") << combined;
  }
  EXPECT_FALSE(Negotiate({"x-webkit-deflate-frame"}, {}, &response).has_value());
  EXPECT_FALSE(NegotiateDeflate({"permessage-deflate"}, DeflateOptions{}, &response).has_value())
      << "disabled";
}

TEST(DeflateTest, TheClientOffersAndChecksTheAnswerAgainstItsOffer) {
  DeflateOptions options;
  options.enabled = true;
  EXPECT_EQ(DeflateOffer(options),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "client_max_window_bits");
  std::optional<DeflateAgreement> agreed;
  EXPECT_TRUE(AcceptDeflateResponse({}, options, &agreed));
  EXPECT_FALSE(agreed.has_value());  // The server chose no extension: plain messages.
  ASSERT_TRUE(AcceptDeflateResponse(
      {"permessage-deflate; server_no_context_takeover; client_max_window_bits=10"}, options,
      &agreed));
  ASSERT_TRUE(agreed.has_value());
  EXPECT_EQ(agreed->client_max_window_bits, 10);
  EXPECT_TRUE(agreed->client_no_context_takeover);
  for (std::string_view bad : {"permessage-deflate",  // server_no_context_takeover not granted
                               "x-other",
                               "permessage-deflate; server_no_context_takeover, permessage-deflate",
                               "permessage-deflate; server_no_context_takeover; bogus",
                               "permessage-deflate; server_no_context_takeover; "
                               "server_max_window_bits=16"}) {
    EXPECT_FALSE(AcceptDeflateResponse({bad}, options, &agreed)) << bad;
  }
}

// RFC 7692, section 7.2.3: its examples, byte for byte, through the message reader.
TEST(DeflateTest, InflatesTheRfcExamplesThroughTheReader) {
  struct Example {
    std::string frames;
    std::vector<std::string> messages;
    bool context_takeover;
  };
  const Example examples[] = {
      {Bytes({0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}), {"Hello"}, false},
      {Bytes({0x41, 0x03, 0xf2, 0x48, 0xcd, 0x80, 0x04, 0xc9, 0xc9, 0x07, 0x00}),
       {"Hello"},
       false},
      {Bytes({0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0xc1, 0x05, 0xf2, 0x00, 0x11,
              0x00, 0x00}),
       {"Hello", "Hello"},
       true},  // 7.2.3.2: the second uses the first's window.
      {Bytes({0xc1, 0x0b, 0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00}),
       {"Hello"},
       false},  // 7.2.3.3: a stored block.
      {Bytes({0xc1, 0x08, 0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00}), {"Hello"},
       false},  // 7.2.3.4: BFINAL set.
  };
  for (const Example& example : examples) {
    DeflateAgreement agreement;
    agreement.server_no_context_takeover = !example.context_takeover;
    Inflater inflater(agreement, Role::kClient);  // Server frames are unmasked.
    MessageReader reader(Role::kClient, {1 << 20});
    reader.set_inflater(&inflater);
    struct Collect : MessageReader::Sink {
      void OnMessage(MessageType, std::string_view payload) override {
        messages.emplace_back(payload);
      }
      void OnPing(std::string_view) override {}
      void OnPong(std::string_view) override {}
      void OnClose(uint16_t, std::string_view) override {}
      std::vector<std::string> messages;
    } collect;
    RingBuffer input;
    input.Write(example.frames.data(), example.frames.size());
    ReadResult result = reader.Read(input, collect);
    EXPECT_TRUE(result.ok) << result.reason;
    EXPECT_EQ(collect.messages, example.messages);
  }
}

TEST(DeflateTest, RoundTripsWithAndWithoutContextTakeover) {
  std::mt19937 random(7692);
  for (bool takeover : {false, true}) {
    DeflateAgreement agreement;
    agreement.server_no_context_takeover = !takeover;
    agreement.client_no_context_takeover = !takeover;
    Deflater deflater(agreement, Role::kServer, 6);
    Inflater inflater(agreement, Role::kClient);
    std::vector<size_t> sizes;
    for (int i = 0; i < 50; ++i) {
      std::string message = "{\"type\":\"chat\",\"room\":\"lobby\",\"n\":" + std::to_string(i) +
                            ",\"text\":\"" + std::string(random() % 2000, 'x') + "\"}";
      if (i == 7) message.clear();
      if (i == 8) {
        message.resize(300000);
        for (char& c : message) c = static_cast<char>(random());  // Incompressible.
      }
      std::string compressed;
      ASSERT_TRUE(deflater.Compress(message, &compressed));
      sizes.push_back(compressed.size());
      std::string inflated;
      // Fed in two pieces, as two frames of one message would be.
      size_t cut = compressed.size() / 2;
      ASSERT_EQ(inflater.Inflate(std::string_view(compressed).substr(0, cut), false, 1 << 20,
                                 &inflated),
                MessageInflater::kOk)
          << "message " << i << " of " << message.size() << " bytes, " << compressed.size()
          << " compressed";
      ASSERT_EQ(inflater.Inflate(std::string_view(compressed).substr(cut), true, 1 << 20,
                                 &inflated),
                MessageInflater::kOk);
      ASSERT_TRUE(inflated == message) << "message " << i << (takeover ? " with" : " without")
                                       << " context takeover";
    }
    if (!takeover) {
      EXPECT_EQ(inflater.StateBytes(), 0u);  // Nothing kept between messages.
    } else {
      EXPECT_GT(inflater.StateBytes(), 0u);
    }
  }
}

// A peer may end a message's deflate stream with a final block (RFC 7692 7.2.3.4) and, under
// context takeover, still refer back into that message's bytes in the next one: the window
// must outlive the stream's end. Made with zlib directly: message 1 ends with BFINAL
// (Z_FINISH); message 2 is a new raw stream primed with message 1 as its dictionary, so it
// consists of back-references into it.
TEST(DeflateTest, AFinalBlockUnderContextTakeoverKeepsTheWindow) {
  const std::string first = "the quick brown fox jumps over the lazy dog, " + std::string(200, 'q');
  const std::string second = first + first;  // All of it can point back into `first`.
  auto raw_deflate = [](const std::string& input, const std::string* dictionary, int flush) {
    z_stream stream{};
    EXPECT_EQ(deflateInit2(&stream, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    if (dictionary != nullptr) {
      EXPECT_EQ(deflateSetDictionary(&stream, reinterpret_cast<const Bytef*>(dictionary->data()),
                                     static_cast<uInt>(dictionary->size())),
                Z_OK);
    }
    std::string out(deflateBound(&stream, input.size()) + 16, '\0');
    stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(input.data()));
    stream.avail_in = static_cast<uInt>(input.size());
    stream.next_out = reinterpret_cast<Bytef*>(out.data());
    stream.avail_out = static_cast<uInt>(out.size());
    EXPECT_NE(deflate(&stream, flush), Z_STREAM_ERROR);
    out.resize(out.size() - stream.avail_out);
    deflateEnd(&stream);
    return out;
  };
  std::string message1 = raw_deflate(first, nullptr, Z_FINISH);  // Ends with BFINAL.
  std::string message2 = raw_deflate(second, &first, Z_SYNC_FLUSH);
  ASSERT_EQ(message2.substr(message2.size() - 4), Bytes({0x00, 0x00, 0xFF, 0xFF}));
  message2.resize(message2.size() - 4);  // The sender strips the sync flush's tail.

  DeflateAgreement agreement;  // Context takeover both ways, the default.
  Inflater inflater(agreement, Role::kServer);
  std::string out;
  ASSERT_EQ(inflater.Inflate(message1, true, 1 << 20, &out), MessageInflater::kOk);
  EXPECT_EQ(out, first);
  out.clear();
  ASSERT_EQ(inflater.Inflate(message2, true, 1 << 20, &out), MessageInflater::kOk);
  EXPECT_EQ(out, second);

  // The stream ending exactly at a frame's end, then an empty last frame: no tail either.
  out.clear();
  std::string message3 = raw_deflate(first, &first, Z_FINISH);
  ASSERT_EQ(inflater.Inflate(message3, false, 1 << 20, &out), MessageInflater::kOk);
  ASSERT_EQ(inflater.Inflate("", true, 1 << 20, &out), MessageInflater::kOk);
  EXPECT_EQ(out, first);

  // A message of nothing but empty final blocks (03 00, two bytes each, each a stream's end):
  // refused once past a handful, not inflated end after end.
  std::string empty_ends;
  for (int i = 0; i < 1000; ++i) empty_ends += Bytes({0x03, 0x00});
  out.clear();
  EXPECT_EQ(inflater.Inflate(empty_ends, true, 1 << 20, &out), MessageInflater::kCorrupt);
}

TEST(DeflateTest, AZipBombStopsAtTheLimitAndGarbageIsCorrupt) {
  // 64 MiB of zeros deflate to about 64 KiB.
  std::string zeros(64 << 20, '\0');
  DeflateAgreement agreement;
  Deflater deflater(agreement, Role::kClient, 9);
  std::string bomb;
  ASSERT_TRUE(deflater.Compress(zeros, &bomb));
  EXPECT_LT(bomb.size(), 128u * 1024);
  Inflater inflater(agreement, Role::kServer);
  std::string out;
  EXPECT_EQ(inflater.Inflate(bomb, true, 1 << 20, &out), MessageInflater::kTooBig);
  EXPECT_LE(out.size(), (1u << 20) + 16 * 1024);
  Inflater fresh(agreement, Role::kServer);
  out.clear();
  EXPECT_EQ(fresh.Inflate(Bytes({0xFF, 0xFF, 0xFF, 0xFF, 0x00}), true, 1 << 20, &out),
            MessageInflater::kCorrupt);
}

}  // namespace
}  // namespace gev::websocket

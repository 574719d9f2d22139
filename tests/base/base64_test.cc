#include "base/base64.h"

#include <catch2/catch.hpp>

namespace kiln {
namespace {

TEST_CASE("base64 round-trips every padding length", "[base][base64]") {
  for (std::string s : {"", "f", "fo", "foo", "foob", "fooba", "foobar"}) {
    auto decoded = Base64Decode(Base64Encode(s));
    REQUIRE(decoded.ok());
    CHECK(*decoded == s);
  }
  CHECK(Base64Encode("foobar") == "Zm9vYmFy");
  CHECK(Base64Encode("fo") == "Zm8=");
  std::string binary("\x00\xff\x10\x80", 4);
  CHECK(*Base64Decode(Base64Encode(binary)) == binary);
}

TEST_CASE("base64 decoding ignores line breaks and rejects garbage", "[base][base64]") {
  CHECK(*Base64Decode("Zm9v\nYmFy\n") == "foobar");
  CHECK(Base64Decode("Zm9").status().code() == StatusCode::kInvalidArgument);
  CHECK(Base64Decode("Zm9v!!!!").status().code() == StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kiln

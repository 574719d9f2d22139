#include "worker/storage/s3_signer.h"

#include <array>
#include <cctype>
#include <cstdlib>
#include <ctime>
#include <vector>

#include <openssl/evp.h>
#include <openssl/hmac.h>

namespace kiln::storage {
namespace {

std::string Hex(const unsigned char* data, size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(kHex[data[i] >> 4]);
    out.push_back(kHex[data[i] & 0xf]);
  }
  return out;
}

// HMAC-SHA256 of `data` with `key`, raw bytes. OpenSSL fails here only when
// out of memory; there is nothing sensible to return then.
std::string HmacSha256(std::string_view key, std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> out{};
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(), out.data(),
           &len) == nullptr) {
    std::abort();
  }
  return std::string(reinterpret_cast<const char*>(out.data()), len);
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Header values are signed trimmed, with inner runs of spaces folded to one.
std::string Trim(std::string_view v) {
  std::string out;
  bool space = false;
  for (char c : v) {
    if (c == ' ' || c == '\t') {
      space = !out.empty();
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

// Lower-cased names to trimmed values, sorted by name.
std::map<std::string, std::string> CanonicalHeaders(const std::map<std::string, std::string>& h) {
  std::map<std::string, std::string> out;
  for (const auto& [name, value] : h) out[Lower(name)] = Trim(value);
  return out;
}

std::string SignedHeaders(const std::map<std::string, std::string>& canonical) {
  std::string out;
  for (const auto& [name, value] : canonical) {
    if (!out.empty()) out += ';';
    out += name;
  }
  return out;
}

}  // namespace

std::string Sha256Hex(std::string_view bytes) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int len = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), digest.data(), &len, EVP_sha256(), nullptr) != 1) {
    std::abort();  // Out of memory, as above.
  }
  return Hex(digest.data(), len);
}

std::string AmzDate(std::chrono::system_clock::time_point t) {
  const std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

std::string UriEncode(std::string_view s, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
        (keep_slash && c == '/')) {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    }
  }
  return out;
}

std::string CanonicalQuery(const std::map<std::string, std::string>& query) {
  // Sorted by encoded key; for the keys S3 uses, encoding keeps the order.
  std::map<std::string, std::string> encoded;
  for (const auto& [k, v] : query) encoded[UriEncode(k, false)] = UriEncode(v, false);
  std::string out;
  for (const auto& [k, v] : encoded) {
    if (!out.empty()) out += '&';
    out += k + '=' + v;
  }
  return out;
}

std::string CanonicalRequest(const SigningInput& input) {
  const auto headers = CanonicalHeaders(input.headers);
  std::string out =
      input.method + '\n' + input.encoded_path + '\n' + CanonicalQuery(input.query) + '\n';
  for (const auto& [name, value] : headers) out += name + ':' + value + '\n';
  out += '\n' + SignedHeaders(headers) + '\n' + input.payload_sha256;
  return out;
}

std::string CredentialScope(const std::string& amz_date, const std::string& region,
                            const std::string& service) {
  return amz_date.substr(0, 8) + '/' + region + '/' + service + "/aws4_request";
}

std::string StringToSign(const std::string& amz_date, const std::string& scope,
                         const std::string& canonical_request) {
  return "AWS4-HMAC-SHA256\n" + amz_date + '\n' + scope + '\n' + Sha256Hex(canonical_request);
}

std::string Signature(const std::string& secret, const std::string& amz_date,
                      const std::string& region, const std::string& service,
                      const std::string& string_to_sign) {
  std::string key = HmacSha256("AWS4" + secret, amz_date.substr(0, 8));
  key = HmacSha256(key, region);
  key = HmacSha256(key, service);
  key = HmacSha256(key, "aws4_request");
  const std::string sig = HmacSha256(key, string_to_sign);
  return Hex(reinterpret_cast<const unsigned char*>(sig.data()), sig.size());
}

std::string Authorization(const S3Credentials& credentials, const std::string& region,
                          const std::string& service, const std::string& amz_date,
                          const SigningInput& input) {
  const std::string scope = CredentialScope(amz_date, region, service);
  const std::string to_sign = StringToSign(amz_date, scope, CanonicalRequest(input));
  return "AWS4-HMAC-SHA256 Credential=" + credentials.access_key_id + '/' + scope +
         ", SignedHeaders=" + SignedHeaders(CanonicalHeaders(input.headers)) + ", Signature=" +
         Signature(credentials.secret_access_key, amz_date, region, service, to_sign);
}

}  // namespace kiln::storage

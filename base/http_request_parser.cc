#include "base/http_request_parser.h"

#include <algorithm>
#include <cctype>
#include <string>
#include <string_view>

namespace kiln::http_internal {
namespace {

// ASCII, as field names are.
std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string PercentDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// Splits "/path?a=1&verbose" into the decoded path and query pairs (by hand:
// keys without "=" count, as probes send "?verbose").
void ParseTarget(std::string_view target, HttpRequest& r) {
  const size_t q = target.find('?');
  r.path = PercentDecode(target.substr(0, q));
  if (q == std::string_view::npos) return;
  std::string_view query = target.substr(q + 1);
  for (size_t start = 0; start <= query.size();) {
    size_t end = query.find('&', start);
    if (end == std::string_view::npos) end = query.size();
    std::string_view pair = query.substr(start, end - start);
    if (!pair.empty()) {
      const size_t eq = pair.find('=');
      r.query[PercentDecode(pair.substr(0, eq))] =
          eq == std::string_view::npos ? "" : PercentDecode(pair.substr(eq + 1));
    }
    start = end + 1;
  }
}

}  // namespace

void ConfigureRequestParser(RequestParser& parser, const HttpLimits& limits) {
  parser.header_limit(static_cast<uint32_t>(limits.max_header_bytes));
  parser.body_limit(limits.max_body_bytes);
  parser.eager(true);
}

HttpRequest RequestHead(const RequestParser& parser) {
  HttpRequest r;
  const auto& m = parser.get();
  r.method = std::string(m.method_string());
  r.target = std::string(m.target());
  ParseTarget(r.target, r);
  for (const auto& f : m) {
    const auto name = f.name_string();
    const auto value = f.value();
    auto [it, added] = r.headers.try_emplace(ToLower(std::string_view(name.data(), name.size())));
    if (!added && !it->second.empty()) it->second += ',';
    it->second.append(value.data(), value.size());
  }
  return r;
}

}  // namespace kiln::http_internal

#include "router/request_model.h"

#include <locale.h>
#include <stdlib.h>

#include <cmath>
#include <string_view>

namespace kiln::router {
namespace {

// One pass over a body as nlohmann's parser (what kiln-worker serve runs)
// reads JSON, without building anything: RFC 8259 with a leading UTF-8
// byte-order mark skipped, strings checked for UTF-8 (RFC 3629), control
// characters and escapes, and numbers that overflow a double refused. Of
// the document only the top-level "model" is kept; a repeated key counts
// by its last value, as in the document the worker builds. No allocation
// unless the model needs one (or a key has escapes, or nesting is deep).
class Reader {
 public:
  explicit Reader(std::string_view s) : s_(s) {}

  RequestModel Read() {
    RequestModel r;
    if (s_.substr(0, 3) == "\xEF\xBB\xBF") p_ = 3;
    Space();
    if (At('{')) {
      if (!TopObject(r)) return {RequestModel::Error::kNotJson, "", ""};
    } else {
      if (!Value()) return {RequestModel::Error::kNotJson, "", ""};
      r = {RequestModel::Error::kNotObject, "", ""};
    }
    Space();
    if (p_ != s_.size()) return {RequestModel::Error::kNotJson, "", ""};
    return r;
  }

 private:
  bool At(char c) const { return p_ < s_.size() && s_[p_] == c; }
  void Space() {
    while (p_ < s_.size() &&
           (s_[p_] == ' ' || s_[p_] == '\n' || s_[p_] == '\r' || s_[p_] == '\t')) {
      ++p_;
    }
  }
  bool Expect(char c) {
    Space();
    if (!At(c)) return false;
    ++p_;
    return true;
  }

  // The top-level object, whose "model" member is kept.
  bool TopObject(RequestModel& r) {
    ++p_;
    Space();
    if (At('}')) {
      ++p_;
      return true;
    }
    for (;;) {
      bool is_model = false;
      if (!Key(is_model)) return false;
      Space();
      if (is_model) {
        r = {};
        if (At('"')) {
          if (!String(&r.model)) return false;
        } else {
          r.error = RequestModel::Error::kModelNotString;
          r.model_type = TypeAt();
          if (!Value()) return false;
        }
      } else if (!Value()) {
        return false;
      }
      Space();
      if (At(',')) {
        ++p_;
        continue;
      }
      if (!At('}')) return false;
      ++p_;
      return true;
    }
  }

  // A member's key and its ':'; `is_model`: the key is "model".
  bool Key(bool& is_model) {
    Space();
    if (!At('"')) return false;
    const size_t start = p_;
    bool escaped = false;
    if (!String(nullptr, &escaped)) return false;
    if (!escaped) {
      is_model = s_.substr(start, p_ - start) == "\"model\"";
    } else {
      std::string key;
      p_ = start;
      String(&key);
      is_model = key == "model";
    }
    return Expect(':');
  }

  const char* TypeAt() const {
    switch (p_ < s_.size() ? s_[p_] : '\0') {
      case '{':
        return "object";
      case '[':
        return "array";
      case 't':
      case 'f':
        return "boolean";
      case 'n':
        return "null";
      default:
        return "number";
    }
  }

  // One value of any kind, nested ones iteratively (a stack of the open
  // containers' closing characters), so no input can run the stack out.
  bool Value() {
    std::string open;
    for (;;) {
      Space();
      if (p_ >= s_.size()) return false;
      const char c = s_[p_];
      bool done = true;  // A whole value was read (not a container opened).
      if (c == '{' || c == '[') {
        ++p_;
        Space();
        const char close = c == '{' ? '}' : ']';
        if (At(close)) {
          ++p_;
        } else {
          open += close;
          done = false;
          if (close == '}' && !MemberKey()) return false;
        }
      } else if (c == '"') {
        if (!String(nullptr)) return false;
      } else if (c == 't') {
        if (!Literal("true")) return false;
      } else if (c == 'f') {
        if (!Literal("false")) return false;
      } else if (c == 'n') {
        if (!Literal("null")) return false;
      } else if (!Number()) {
        return false;
      }
      if (!done) continue;
      // After a value: the containers it ends, or the next element.
      for (;;) {
        if (open.empty()) return true;
        Space();
        if (At(',')) {
          ++p_;
          if (open.back() == '}' && !MemberKey()) return false;
          break;
        }
        if (!At(open.back())) return false;
        ++p_;
        open.pop_back();
      }
    }
  }

  bool MemberKey() {
    bool ignored = false;
    return Key(ignored);
  }

  bool Literal(std::string_view word) {
    if (s_.substr(p_, word.size()) != word) return false;
    p_ += word.size();
    return true;
  }

  static bool Digit(char c) { return c >= '0' && c <= '9'; }

  // -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, finite as a double.
  bool Number() {
    const size_t start = p_;
    if (At('-')) ++p_;
    if (At('0')) {
      ++p_;
    } else if (p_ < s_.size() && Digit(s_[p_])) {
      while (p_ < s_.size() && Digit(s_[p_])) ++p_;
    } else {
      return false;
    }
    if (At('.')) {
      ++p_;
      if (p_ >= s_.size() || !Digit(s_[p_])) return false;
      while (p_ < s_.size() && Digit(s_[p_])) ++p_;
    }
    bool exponent = false;
    if (At('e') || At('E')) {
      exponent = true;
      ++p_;
      if (At('+') || At('-')) ++p_;
      if (p_ >= s_.size() || !Digit(s_[p_])) return false;
      while (p_ < s_.size() && Digit(s_[p_])) ++p_;
    }
    // Fifteen characters without an exponent are far below a double's
    // range; anything else is converted, as nlohmann does, and an overflow
    // refused as it refuses it.
    if (!exponent && p_ - start <= 15) return true;
    static const locale_t c_locale = newlocale(LC_ALL_MASK, "C", nullptr);
    const std::string token(s_.substr(start, p_ - start));
    return std::isfinite(strtod_l(token.c_str(), nullptr, c_locale));
  }

  static int Hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  // Four hex digits after "\u" at p_ (moved past them), or -1.
  int Hex4() {
    if (s_.size() - p_ < 4) return -1;
    int v = 0;
    for (int i = 0; i < 4; ++i) {
      const int h = Hex(s_[p_ + static_cast<size_t>(i)]);
      if (h < 0) return -1;
      v = v * 16 + h;
    }
    p_ += 4;
    return v;
  }

  static void AppendUtf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  // The length of the UTF-8 sequence at p_ (RFC 3629: no overlong forms,
  // no surrogates, nothing past U+10FFFF), or 0.
  size_t Utf8() const {
    const auto b = [&](size_t i) -> unsigned {
      return p_ + i < s_.size() ? static_cast<unsigned char>(s_[p_ + i]) : 0u;
    };
    const unsigned c = b(0);
    const auto cont = [&](size_t i, unsigned lo, unsigned hi) { return b(i) >= lo && b(i) <= hi; };
    if (c >= 0xC2 && c <= 0xDF) return cont(1, 0x80, 0xBF) ? 2 : 0;
    if (c == 0xE0) return cont(1, 0xA0, 0xBF) && cont(2, 0x80, 0xBF) ? 3 : 0;
    if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
      return cont(1, 0x80, 0xBF) && cont(2, 0x80, 0xBF) ? 3 : 0;
    }
    if (c == 0xED) return cont(1, 0x80, 0x9F) && cont(2, 0x80, 0xBF) ? 3 : 0;
    if (c == 0xF0) return cont(1, 0x90, 0xBF) && cont(2, 0x80, 0xBF) && cont(3, 0x80, 0xBF) ? 4 : 0;
    if (c >= 0xF1 && c <= 0xF3) {
      return cont(1, 0x80, 0xBF) && cont(2, 0x80, 0xBF) && cont(3, 0x80, 0xBF) ? 4 : 0;
    }
    if (c == 0xF4) return cont(1, 0x80, 0x8F) && cont(2, 0x80, 0xBF) && cont(3, 0x80, 0xBF) ? 4 : 0;
    return 0;
  }

  // A string at p_ ('"'), decoded into `out` unless null; `escaped` (if
  // given) tells whether it had escapes.
  bool String(std::string* out, bool* escaped = nullptr) {
    ++p_;
    while (p_ < s_.size()) {
      const auto c = static_cast<unsigned char>(s_[p_]);
      if (c == '"') {
        ++p_;
        return true;
      }
      if (c < 0x20) return false;
      if (c < 0x80 && c != '\\') {
        const size_t run = p_;
        while (p_ < s_.size()) {
          const auto d = static_cast<unsigned char>(s_[p_]);
          if (d < 0x20 || d >= 0x80 || d == '"' || d == '\\') break;
          ++p_;
        }
        if (out) out->append(s_.data() + run, p_ - run);
        continue;
      }
      if (c >= 0x80) {
        const size_t n = Utf8();
        if (n == 0) return false;
        if (out) out->append(s_.data() + p_, n);
        p_ += n;
        continue;
      }
      if (escaped) *escaped = true;
      if (++p_ >= s_.size()) return false;
      const char e = s_[p_++];
      char plain = 0;
      switch (e) {
        case '"':
        case '\\':
        case '/':
          plain = e;
          break;
        case 'b':
          plain = '\b';
          break;
        case 'f':
          plain = '\f';
          break;
        case 'n':
          plain = '\n';
          break;
        case 'r':
          plain = '\r';
          break;
        case 't':
          plain = '\t';
          break;
        case 'u': {
          int cp = Hex4();
          if (cp < 0 || (cp >= 0xDC00 && cp <= 0xDFFF)) return false;
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (s_.substr(p_, 2) != "\\u") return false;
            p_ += 2;
            const int low = Hex4();
            if (low < 0xDC00 || low > 0xDFFF) return false;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          if (out) AppendUtf8(*out, static_cast<uint32_t>(cp));
          continue;
        }
        default:
          return false;
      }
      if (out) *out += plain;
    }
    return false;
  }

  const std::string_view s_;
  size_t p_ = 0;
};

}  // namespace

RequestModel ReadRequestModel(const std::string& body) { return Reader(body).Read(); }

uint64_t ScanCompletionTokens(const std::string& body) {
  static constexpr char kKey[] = "\"completion_tokens\"";
  size_t at = body.find(kKey);
  if (at == std::string::npos) return 0;
  at += sizeof kKey - 1;
  while (at < body.size() && (body[at] == ' ' || body[at] == ':' || body[at] == '\n')) ++at;
  uint64_t n = 0;
  for (; at < body.size() && body[at] >= '0' && body[at] <= '9'; ++at) {
    n = n * 10 + static_cast<uint64_t>(body[at] - '0');
    if (n > (uint64_t{1} << 40)) return 0;
  }
  return n;
}

}  // namespace kiln::router

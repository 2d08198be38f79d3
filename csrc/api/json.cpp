// Strict JSON reader for checkpoint headers: exactly what the format needs, nothing executable.
#include "json.h"

#include <cstdio>
#include <stdexcept>

#include "genesis/checkpoint.h"

namespace genesis::checkpoint::json {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
    return;
  }
  if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
  }
  out += char(0x80 | (cp & 0x3F));
}

class Parser {
 public:
  Parser(const std::string& s, int max_depth) : s_(s), max_depth_(max_depth) {}

  Node document() {
    // Python decodes the header with the strict UTF-8 codec before parsing: same rule here.
    for (size_t i = 0; i < s_.size();) {
      uint32_t cp;
      const size_t start = i;
      if (!next_code_point(s_, i, cp, false)) {
        pos_ = start;
        fail("invalid UTF-8");
      }
    }
    Node n = value(0);
    skip_space();
    if (pos_ != s_.size()) fail("trailing characters after the header");
    return n;
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw CheckpointError("malformed checkpoint header at byte " + std::to_string(pos_) + ": " + why);
  }
  void skip_space() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\r' || s_[pos_] == '\t')) ++pos_;
  }
  bool take(char c) {
    skip_space();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!take(c)) fail(std::string("expected '") + c + "'");
  }
  bool take_word(const char* w) {
    const std::string word(w);
    if (s_.compare(pos_, word.size(), word) != 0) return false;
    pos_ += word.size();
    return true;
  }

  Node value(int depth) {
    if (depth > max_depth_) fail("nested more than " + std::to_string(max_depth_) + " levels deep");
    skip_space();
    if (pos_ >= s_.size()) fail("unexpected end");
    Node n;
    const char c = s_[pos_];
    if (c == '{') {
      ++pos_;
      n.kind = Node::Kind::Object;
      if (take('}')) return n;
      do {
        skip_space();
        std::string key = string();
        // Python's json would keep the last of two equal keys silently; genesis refuses them.
        if (n.get(key)) fail("duplicate key in an object");
        n.keys.push_back(std::move(key));
        expect(':');
        n.items.push_back(value(depth + 1));
      } while (take(','));
      expect('}');
    } else if (c == '[') {
      ++pos_;
      n.kind = Node::Kind::Array;
      if (take(']')) return n;
      do n.items.push_back(value(depth + 1));
      while (take(','));
      expect(']');
    } else if (c == '"') {
      n.kind = Node::Kind::String;
      n.text = string();
    } else if (take_word("true")) {
      n.kind = Node::Kind::Bool;
      n.boolean = true;
    } else if (take_word("false")) {
      n.kind = Node::Kind::Bool;
    } else if (take_word("null")) {
      n.kind = Node::Kind::Null;
    } else if (c == '-' || is_digit(c)) {
      n.kind = Node::Kind::Number;
      n.text = number();
    } else {
      char code[8];
      std::snprintf(code, sizeof code, "0x%02x", static_cast<unsigned char>(c));
      fail(std::string("unexpected character ") + code);
    }
    return n;
  }

  // RFC 8259: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  std::string number() {
    const size_t start = pos_;
    auto digits = [&] {
      const size_t first = pos_;
      while (pos_ < s_.size() && is_digit(s_[pos_])) ++pos_;
      if (pos_ == first) fail("malformed number");
    };
    if (s_[pos_] == '-') ++pos_;
    if (pos_ < s_.size() && s_[pos_] == '0')
      ++pos_;
    else
      digits();
    if (pos_ < s_.size() && s_[pos_] == '.') {
      ++pos_;
      digits();
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      digits();
    }
    return s_.substr(start, pos_ - start);
  }

  uint32_t hex4() {
    if (pos_ + 4 > s_.size()) fail("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = s_[pos_++];
      v <<= 4;
      if (is_digit(h))
        v |= uint32_t(h - '0');
      else if (h >= 'a' && h <= 'f')
        v |= uint32_t(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F')
        v |= uint32_t(h - 'A' + 10);
      else
        fail("bad \\u escape");
    }
    return v;
  }

  std::string string() {
    if (pos_ >= s_.size() || s_[pos_] != '"') fail("expected a string");
    ++pos_;
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) fail("unterminated string");
      const char c = s_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) fail("unterminated escape");
      const char e = s_[pos_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out += e;
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          uint32_t cp = hex4();
          // A high surrogate directly followed by an escaped low one is a pair; anything else
          // leaves it a lone surrogate (as Python's json does) and the next escape stands alone.
          if (cp >= 0xD800 && cp < 0xDC00 && s_.compare(pos_, 2, "\\u") == 0) {
            const size_t after_high = pos_;
            pos_ += 2;
            const uint32_t low = hex4();
            if (low >= 0xDC00 && low < 0xE000)
              cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            else
              pos_ = after_high;
          }
          append_utf8(out, cp);
          break;
        }
        default:
          fail("bad escape");
      }
    }
  }

  const std::string& s_;
  const int max_depth_;
  size_t pos_ = 0;
};

}  // namespace

bool next_code_point(const std::string& s, size_t& i, uint32_t& cp, bool allow_surrogates) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  int extra;
  uint32_t min;
  if (c < 0x80) {
    cp = c;
    ++i;
    return true;
  }
  if (c >= 0xC2 && c <= 0xDF) {
    extra = 1;
    cp = c & 0x1F;
    min = 0x80;
  } else if (c >= 0xE0 && c <= 0xEF) {
    extra = 2;
    cp = c & 0x0F;
    min = 0x800;
  } else if (c >= 0xF0 && c <= 0xF4) {
    extra = 3;
    cp = c & 0x07;
    min = 0x10000;
  } else
    return false;
  if (i + extra >= s.size()) return false;  // truncated sequence
  for (int k = 1; k <= extra; ++k) {
    const unsigned char b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) return false;
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF) return false;  // overlong forms; beyond Unicode
  if (!allow_surrogates && cp >= 0xD800 && cp < 0xE000) return false;
  i += extra + 1;
  return true;
}

const Node* Node::get(const std::string& key) const {
  for (size_t i = 0; i < keys.size(); ++i)
    if (keys[i] == key) return &items[i];
  return nullptr;
}

bool Node::is_integer() const { return kind == Kind::Number && text.find_first_of(".eE") == std::string::npos; }

Node parse(const std::string& text, int max_depth) { return Parser(text, max_depth).document(); }

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
      ++i;
      continue;
    }
    if (c >= 0x20 && c < 0x7F) {
      out += char(c);
      ++i;
      continue;
    }
    uint32_t cp;
    if (!next_code_point(s, i, cp, true)) throw std::invalid_argument("checkpoint strings must be UTF-8");
    char buf[16];
    if (cp >= 0x10000) {
      cp -= 0x10000;
      std::snprintf(buf, sizeof buf, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
    } else {
      std::snprintf(buf, sizeof buf, "\\u%04x", cp);
    }
    out += buf;
  }
  return out + "\"";
}

}  // namespace genesis::checkpoint::json

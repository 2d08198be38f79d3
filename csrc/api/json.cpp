// Strict JSON reader for checkpoint headers: exactly what the format needs, nothing executable.
#include "json.h"

#include <cstdio>

#include "genesis/checkpoint.h"

namespace genesis::checkpoint::json {

namespace {

class Parser {
 public:
  Parser(const std::string& s, int max_depth) : s_(s), max_depth_(max_depth) {}

  Node document() {
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
    if (pos_ < s_.size() && s_[pos_] == c) { ++pos_; return true; }
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
        n.keys.push_back(string());
        expect(':');
        n.items.push_back(value(depth + 1));
      } while (take(','));
      expect('}');
    } else if (c == '[') {
      ++pos_;
      n.kind = Node::Kind::Array;
      if (take(']')) return n;
      do n.items.push_back(value(depth + 1)); while (take(','));
      expect(']');
    } else if (c == '"') {
      n.kind = Node::Kind::String;
      n.text = string();
    } else if (take_word("true") || take_word("false")) {
      n.kind = Node::Kind::Bool;
      n.boolean = s_[pos_ - 1] == 'e' && s_[pos_ - 2] == 'u';
    } else if (take_word("null")) {
      n.kind = Node::Kind::Null;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      n.kind = Node::Kind::Number;
      const size_t start = pos_;
      while (pos_ < s_.size() && std::string("+-0123456789.eE").find(s_[pos_]) != std::string::npos) ++pos_;
      n.text = s_.substr(start, pos_ - start);
    } else {
      fail(std::string("unexpected character '") + c + "'");
    }
    return n;
  }

  unsigned hex4() {
    if (pos_ + 4 > s_.size()) fail("truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = s_[pos_++];
      v <<= 4;
      if (h >= '0' && h <= '9') v |= h - '0';
      else if (h >= 'a' && h <= 'f') v |= h - 'a' + 10;
      else if (h >= 'A' && h <= 'F') v |= h - 'A' + 10;
      else fail("bad \\u escape");
    }
    return v;
  }

  static void append_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) { out += char(cp); return; }
    if (cp < 0x800) { out += char(0xC0 | (cp >> 6)); }
    else if (cp < 0x10000) { out += char(0xE0 | (cp >> 12)); out += char(0x80 | ((cp >> 6) & 0x3F)); }
    else { out += char(0xF0 | (cp >> 18)); out += char(0x80 | ((cp >> 12) & 0x3F)); out += char(0x80 | ((cp >> 6) & 0x3F)); }
    out += char(0x80 | (cp & 0x3F));
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
      if (c != '\\') { out += c; continue; }
      if (pos_ >= s_.size()) fail("unterminated escape");
      const char e = s_[pos_++];
      switch (e) {
        case '"': case '\\': case '/': out += e; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && s_.compare(pos_, 2, "\\u") == 0) {
            pos_ += 2;
            const unsigned low = hex4();
            if (low < 0xDC00 || low >= 0xE000) fail("bad surrogate pair");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default: fail("bad escape");
      }
    }
  }

  const std::string& s_;
  const int max_depth_;
  size_t pos_ = 0;
};

}  // namespace

const Node* Node::get(const std::string& key) const {
  for (size_t i = 0; i < keys.size(); ++i)
    if (keys[i] == key) return &items[i];
  return nullptr;
}

Node parse(const std::string& text, int max_depth) { return Parser(text, max_depth).document(); }

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') { out += '\\'; out += char(c); }
    else if (c >= 0x20 && c < 0x7F) out += char(c);
    else {
      // Control characters and non-ASCII bytes: escape as \u00XX per byte of a Latin-1 view
      // would corrupt UTF-8, so decode the UTF-8 sequence first.
      unsigned cp = c;
      int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
      if (extra) cp = c & (0x3F >> extra);
      for (int k = 0; k < extra && i + 1 < s.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[++i]) & 0x3F);
      char buf[16];
      if (cp >= 0x10000) {
        cp -= 0x10000;
        std::snprintf(buf, sizeof buf, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
      } else {
        std::snprintf(buf, sizeof buf, "\\u%04x", cp);
      }
      out += buf;
    }
  }
  return out + "\"";
}

int64_t to_count(const Node& n, const std::string& what) {
  if (n.kind != Node::Kind::Number || n.text.empty() || n.text.size() > 18 ||
      n.text.find_first_not_of("0123456789") != std::string::npos)
    throw CheckpointError("checkpoint header: " + what + " must be a non-negative integer");
  return std::stoll(n.text);
}

}  // namespace genesis::checkpoint::json

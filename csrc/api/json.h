// A small strict JSON reader and writer helpers for the checkpoint header (internal).
//
// The rules are those of Python's json module as genesis.load configures it, so that both
// readers accept exactly the same headers: RFC 8259 grammar, strict UTF-8 (no encoded
// surrogates, no overlong forms), no NaN/Infinity, and no duplicate keys in an object.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace genesis::checkpoint::json {

struct Node {
  enum class Kind { Null, Bool, Number, String, Array, Object };
  Kind kind = Kind::Null;
  bool boolean = false;
  // String: the decoded text as UTF-8, where an escaped lone surrogate (which Python's json
  // accepts, "\ud800") is kept as its 3-byte generalized UTF-8 form. Number: the literal text.
  std::string text;
  std::vector<Node> items;        // Array elements; Object values
  std::vector<std::string> keys;  // Object keys, parallel to items

  const Node* get(const std::string& key) const;
  // A Number written as an integer: no fraction, no exponent.
  bool is_integer() const;
};

// Parses one JSON document; throws CheckpointError on malformed text (including invalid
// UTF-8), a duplicate object key, or nesting deeper than max_depth (a hostile header must not
// exhaust the stack).
Node parse(const std::string& text, int max_depth);

// A JSON string literal, ASCII only (everything else escaped as \uXXXX). `s` must be UTF-8,
// lone surrogates allowed (the form Node::text uses); throws std::invalid_argument otherwise.
std::string quote(const std::string& s);

// Decodes the UTF-8 sequence at s[i], advancing i; returns false for invalid UTF-8. Encoded
// surrogates (U+D800..U+DFFF) are accepted only when allow_surrogates is set.
bool next_code_point(const std::string& s, size_t& i, uint32_t& cp, bool allow_surrogates);

}  // namespace genesis::checkpoint::json

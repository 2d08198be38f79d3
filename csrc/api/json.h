// A small strict JSON reader and writer helpers for the checkpoint header (internal).
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
  std::string text;         // String; Number keeps its literal text (integers are re-parsed exactly)
  std::vector<Node> items;  // Array elements; Object values
  std::vector<std::string> keys;  // Object keys, parallel to items

  const Node* get(const std::string& key) const;
};

// Parses one JSON document; throws CheckpointError on malformed text or nesting deeper than
// max_depth (a hostile header must not exhaust the stack).
Node parse(const std::string& text, int max_depth);

// A JSON string literal (ASCII output; non-ASCII UTF-8 escaped as \uXXXX).
std::string quote(const std::string& s);

// A non-negative integer literal; throws CheckpointError naming `what` otherwise.
int64_t to_count(const Node& n, const std::string& what);

}  // namespace genesis::checkpoint::json

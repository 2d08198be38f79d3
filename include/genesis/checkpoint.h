// Reads and writes the genesis checkpoint container (docs/checkpoint-format.md; reads versions 1
// to 3, writes 1) from C++, so optimizer state saved by a C++ trainer loads in Python with
// genesis.load and back.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "genesis/dtype.h"

namespace genesis::checkpoint {

// Every problem with a file's content (the C++ counterpart of genesis.CheckpointError). The
// C++ reader applies exactly the rules of genesis.load: a file one reader accepts, the other
// does too (tests/checkpoint_corpus and a shared fuzz test hold them to it).
struct CheckpointError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A valid checkpoint that holds something this C++ API cannot represent: an array of a dtype
// other than float16/bfloat16/float32/float64, or an int beyond 64 bits. Thrown only after the
// whole file has been checked, so it never hides a corrupted file.
struct UnsupportedContent : CheckpointError {
  using CheckpointError::CheckpointError;
};

// A saved value: the subset of genesis.save's types that optimizer state uses. The reader maps
// an OrderedDict to Dict, a torch.Size to a Tuple of Ints and a parameter to its Array.
struct Value {
  enum class Kind { None, Bool, Int, Float, String, List, Tuple, Dict, Array };
  Kind kind = Kind::None;
  bool boolean = false;
  int64_t integer = 0;
  double number = 0.0;
  std::string text;
  std::vector<Value> items;  // List and Tuple elements; Dict values
  std::vector<Value> keys;   // Dict keys, parallel to items
  int64_t array = -1;        // Array: index into Document::arrays

  static Value none() { return {}; }
  static Value of(bool b) {
    Value v;
    v.kind = Kind::Bool;
    v.boolean = b;
    return v;
  }
  static Value of(int64_t i) {
    Value v;
    v.kind = Kind::Int;
    v.integer = i;
    return v;
  }
  static Value of(double d) {
    Value v;
    v.kind = Kind::Float;
    v.number = d;
    return v;
  }
  static Value of(std::string s) {
    Value v;
    v.kind = Kind::String;
    v.text = std::move(s);
    return v;
  }
  static Value list(Kind kind = Kind::List) {
    Value v;
    v.kind = kind;
    return v;
  }
  static Value dict() {
    Value v;
    v.kind = Kind::Dict;
    return v;
  }
  static Value array_ref(int64_t index) {
    Value v;
    v.kind = Kind::Array;
    v.array = index;
    return v;
  }

  // Dict access; find returns nullptr for a missing key.
  void set(Value key, Value value) {
    keys.push_back(std::move(key));
    items.push_back(std::move(value));
  }
  const Value* find(const std::string& key) const;
  const Value* find(int64_t key) const;
  // A number (Int or Float) as a double; throws CheckpointError naming `what` otherwise.
  double as_number(const std::string& what) const;
};

// A saved array (NumPy array or torch tensor): float16, bfloat16, float32 or float64,
// little-endian, C order. The writer saves bfloat16 arrays as CPU torch tensors (NumPy has no
// bfloat16) and the others as NumPy arrays.
struct Array {
  DType dtype = DType::Float32;
  std::vector<int64_t> shape;
  std::vector<unsigned char> bytes;
  int64_t numel() const;
};

struct Document {
  Value root;
  std::vector<Array> arrays;
};

// Throws std::invalid_argument for a document that cannot be saved (an array whose size does
// not match its shape, invalid UTF-8 in a string, a non-scalar or repeated dict key, containers
// nested more than 100 levels deep).
std::vector<unsigned char> encode(const Document& doc);
// Validates everything (magic, version, checksums, every size against the data) before use.
Document decode(const unsigned char* data, std::size_t size);

// Replaces `path` atomically: writes a temporary file in the same folder, fsyncs it and renames
// it over `path`, so a failed save leaves the previous file and a concurrent reader sees either
// the old or the new file. I/O failures throw std::system_error.
void save_file(const Document& doc, const std::string& path);
// Reads the file in bulk, chunk by chunk into each array (no whole-file buffer); a path that
// names a pipe is read to its end first. Open and read failures throw std::system_error.
Document load_file(const std::string& path);

}  // namespace genesis::checkpoint

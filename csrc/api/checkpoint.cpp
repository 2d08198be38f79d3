// The checkpoint container (docs/checkpoint-format.md, versions 1 to 3) for the C++ API: the
// writer, and a reader that applies exactly the rules of genesis.load (genesis/serialization.py).
#include "genesis/checkpoint.h"

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <unordered_set>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "checkpoint_stream.h"
#include "crc32.h"
#include "json.h"

namespace genesis::checkpoint {

namespace {

constexpr unsigned char kMagic[8] = {0x93, 'G', 'E', 'N', 'E', 'S', 'I', 'S'};
constexpr uint32_t kVersion = 1;  // what the C++ writer writes: it uses no newer types
// Version 2 adds ordered_dict, torch.Size and parameters; version 3 the complex dtypes.
constexpr uint32_t kMaxVersion = 3;
constexpr size_t kPreamble = 24;
constexpr uint64_t kAlign = 64;
constexpr int kMaxDepth = 100;  // container nesting, as MAX_DEPTH in serialization.py
constexpr size_t kMaxNdim = 64;
// The deepest JSON a valid header has: an ordered_dict level costs 4 JSON levels
// ({"ordered_dict": [[[k, v]], m]}), more than any other container.
constexpr int kMaxJsonDepth = 4 * kMaxDepth + 8;
constexpr uint64_t kMaxArrayBytes = (uint64_t(1) << 63) - 1;
// Size arithmetic that cannot overflow (a hostile shape can multiply to any size).
using U128 = unsigned __int128;

uint64_t align_up(uint64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

uint32_t crc32_of(const unsigned char* p, size_t n, uint32_t crc = 0) { return crc32(crc, p, n); }

void put_le(unsigned char* out, uint64_t v, size_t bytes) {
  for (size_t i = 0; i < bytes; ++i) out[i] = static_cast<unsigned char>(v >> (8 * i));
}
uint64_t get_le(const unsigned char* p, size_t bytes) {
  uint64_t v = 0;
  for (size_t i = 0; i < bytes; ++i) v |= uint64_t(p[i]) << (8 * i);
  return v;
}

// Every dtype the format defines; `kept` marks those the C++ API represents (DType), `grad`
// those a torch.nn.Parameter may require gradients in, `since` the format version that
// introduced it.
struct StoredDType {
  const char* name;
  size_t itemsize;
  bool kept;
  DType dtype;
  bool grad = false;
  uint32_t since = 1;
};
constexpr StoredDType kDTypes[] = {
    {"bool", 1, false, DType::Float32},
    {"int8", 1, false, DType::Float32},
    {"uint8", 1, true, DType::UInt8},
    {"int16", 2, false, DType::Float32},
    {"uint16", 2, false, DType::Float32},
    {"int32", 4, false, DType::Float32},
    {"uint32", 4, false, DType::Float32},
    {"int64", 8, false, DType::Float32},
    {"uint64", 8, false, DType::Float32},
    {"float16", 2, true, DType::Float16, true},
    {"float32", 4, true, DType::Float32, true},
    {"float64", 8, true, DType::Float64, true},
    {"bfloat16", 2, true, DType::BFloat16, true},
    {"complex64", 8, false, DType::Float32, true, 3},
    {"complex128", 16, false, DType::Float32, true, 3},
};

const StoredDType* find_dtype(const std::string& name) {
  for (const StoredDType& d : kDTypes)
    if (name == d.name) return &d;
  return nullptr;
}

std::string hex_int(int64_t v) {
  char buf[32];
  const uint64_t mag = v < 0 ? 0 - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
  std::snprintf(buf, sizeof buf, "%s0x%" PRIx64, v < 0 ? "-" : "", mag);
  return buf;
}

std::string hex_bits(double d) {
  uint64_t bits;
  std::memcpy(&bits, &d, 8);
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, bits);
  return buf;
}

// --- dict keys -----------------------------------------------------------------------------

// Python compares dict keys by value across types: 1 == 1.0 == True and 0 == -0.0 == False,
// and NaN equals nothing. A key's canonical text is equal for exactly the keys Python finds
// equal ("" for NaN, which never collides); integers are written as sign + hex digits.
std::string canonical_integer(bool negative, std::string hex_digits) {
  const size_t first = hex_digits.find_first_not_of('0');
  if (first == std::string::npos) return "i0";
  return std::string(negative ? "i-" : "i") + hex_digits.substr(first);
}

std::string canonical_float(double d) {
  if (std::isnan(d)) return "";
  if (std::isinf(d) || d != std::floor(d)) return "f" + hex_bits(d);
  // An integral double is m * 2^e with a 53-bit m: its exact value in hex.
  int exp;
  const double fraction = std::frexp(std::fabs(d), &exp);
  uint64_t m = static_cast<uint64_t>(std::ldexp(fraction, 53));
  int e = exp - 53;
  std::string zeros;
  if (e < 0) {
    m >>= -e;
  } else {
    m <<= e % 4;
    zeros.assign(static_cast<size_t>(e / 4), '0');
  }
  char buf[24];
  std::snprintf(buf, sizeof buf, "%" PRIx64, m);
  return canonical_integer(d < 0, buf + zeros);
}

std::string canonical_key(const Value& key) {
  switch (key.kind) {
    case Value::Kind::None:
      return "n";
    case Value::Kind::Bool:
      return key.boolean ? "i1" : "i0";
    case Value::Kind::String:
      return "s" + key.text;
    case Value::Kind::Int: {
      const std::string text = hex_int(key.integer);
      return canonical_integer(text[0] == '-', text.substr(text.find('x') + 1));
    }
    case Value::Kind::Float:
      return canonical_float(key.number);
    default:
      return "";
  }
}

// --- writing -------------------------------------------------------------------------------

// Writes a value; arrays are numbered in the order met, which is the file order the format
// requires, and `order` collects them.
void write_value(const Value& v, const Document& doc, std::string& out, std::vector<const Array*>& order, int depth) {
  using K = Value::Kind;
  switch (v.kind) {
    case K::None:
      out += "null";
      return;
    case K::Bool:
      out += v.boolean ? "true" : "false";
      return;
    case K::Int:
      out += "{\"int\": \"" + hex_int(v.integer) + "\"}";
      return;
    case K::Float:
      out += "{\"float\": \"" + hex_bits(v.number) + "\"}";
      return;
    case K::String:
      out += json::quote(v.text);
      return;
    case K::Array:
      if (v.array < 0 || static_cast<size_t>(v.array) >= doc.arrays.size())
        throw std::invalid_argument("checkpoint value refers to array " + std::to_string(v.array) +
                                    ", the document has " + std::to_string(doc.arrays.size()));
      out += "{\"array\": " + std::to_string(order.size()) + "}";
      order.push_back(&doc.arrays[static_cast<size_t>(v.array)]);
      return;
    case K::List:
    case K::Tuple:
    case K::Dict:
      break;
  }
  if (depth >= kMaxDepth) throw std::invalid_argument("checkpoint containers are nested more than 100 levels deep");
  if (v.kind != K::Dict) {
    out += v.kind == K::List ? "{\"list\": [" : "{\"tuple\": [";
    for (size_t i = 0; i < v.items.size(); ++i) {
      if (i) out += ", ";
      write_value(v.items[i], doc, out, order, depth + 1);
    }
    out += "]}";
    return;
  }
  if (v.keys.size() != v.items.size())
    throw std::invalid_argument("checkpoint dict has keys and values of different counts");
  std::unordered_set<std::string> seen;
  out += "{\"dict\": [";
  for (size_t i = 0; i < v.items.size(); ++i) {
    const Value& key = v.keys[i];
    if (key.kind == K::List || key.kind == K::Tuple || key.kind == K::Dict || key.kind == K::Array)
      throw std::invalid_argument("checkpoint dict keys must be None, bool, int, float or string");
    const std::string canonical = canonical_key(key);
    if (!canonical.empty() && !seen.insert(canonical).second)
      throw std::invalid_argument("checkpoint dict has a repeated key");
    if (i) out += ", ";
    out += "[";
    write_value(key, doc, out, order, depth + 1);
    out += ", ";
    write_value(v.items[i], doc, out, order, depth + 1);
    out += "]";
  }
  out += "]}";
}

const unsigned char kZeros[kAlign] = {};

class VectorSink : public Sink {
 public:
  explicit VectorSink(std::vector<unsigned char>& out) : out_(out) {}
  void write(const unsigned char* data, size_t n) override { out_.insert(out_.end(), data, data + n); }

 private:
  std::vector<unsigned char>& out_;
};

// --- reading -------------------------------------------------------------------------------

class MemorySource : public Source {
 public:
  MemorySource(const unsigned char* data, size_t size) : data_(data), left_(size) {}
  void read(unsigned char* dst, size_t n) override {
    if (n > left_) throw CheckpointError("checkpoint file ended early");
    if (n) std::memcpy(dst, data_, n);
    data_ += n;
    left_ -= n;
  }

 private:
  const unsigned char* data_;
  size_t left_;
};

// A JSON integer as a count: non-negative, without sign ("-0" is not a count: Python's
// reader reads it as -0.0). Values of 2^63 and above come back as UINT64_MAX (too large for
// any field, which then fails its own check).
bool parse_count(const json::Node& n, uint64_t& out) {
  if (!n.is_integer() || n.text[0] == '-') return false;
  out = 0;
  for (const char c : n.text) {
    const uint64_t digit = uint64_t(c - '0');
    if (out > (kMaxArrayBytes - digit) / 10) {
      out = UINT64_MAX;
      return true;
    }
    out = out * 10 + digit;
  }
  return true;
}

struct BufferEntry {
  const StoredDType* dtype;
  std::string kind;
  std::vector<int64_t> shape;
  uint64_t offset = 0;
  uint64_t nbytes = 0;
};

// Device strings: a lowercase type, optionally ':' and an index without leading zeros.
bool valid_device(const std::string& s) {
  size_t i = 0;
  if (s.empty() || !(s[0] >= 'a' && s[0] <= 'z')) return false;
  while (i < s.size() && ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_')) ++i;
  if (i == s.size()) return true;
  if (s[i] != ':' || i + 1 == s.size()) return false;
  const std::string index = s.substr(i + 1);
  return index.find_first_not_of("0123456789") == std::string::npos && (index == "0" || index[0] != '0');
}

BufferEntry parse_entry(const json::Node& e, size_t index, uint64_t offset, uint64_t version) {
  using NK = json::Node::Kind;
  const std::string where = "checkpoint buffer " + std::to_string(index);
  const json::Node* type = e.kind == NK::Object ? e.get("type") : nullptr;
  if (!type || type->kind != NK::String ||
      (type->text != "numpy.ndarray" && type->text != "numpy.generic" && type->text != "torch.Tensor"))
    throw CheckpointError(where + ": missing or unknown type");
  BufferEntry b;
  b.kind = type->text;
  const bool torch = b.kind == "torch.Tensor";
  const json::Node *dtype = e.get("dtype"), *shape = e.get("shape"), *off = e.get("offset"), *nbytes = e.get("nbytes"),
                   *device = e.get("device");
  if (!dtype || !shape || !off || !nbytes || bool(device) != torch || e.keys.size() != (torch ? 6u : 5u))
    throw CheckpointError(where + ": fields must be type, dtype, shape, offset, nbytes (and device for torch.Tensor)");
  b.dtype = dtype->kind == NK::String ? find_dtype(dtype->text) : nullptr;
  if (!b.dtype || (b.dtype->dtype == DType::BFloat16 && b.dtype->kept && !torch))
    throw CheckpointError(where + ": unsupported dtype for " + b.kind);
  if (version < b.dtype->since)
    throw CheckpointError(where + ": dtype " + b.dtype->name + " needs format version " +
                          std::to_string(b.dtype->since) + ", the file is " + std::to_string(version));
  if (shape->kind != NK::Array || shape->items.size() > kMaxNdim)
    throw CheckpointError(where + ": shape must be a list of at most 64 non-negative integers");
  // Python's rule: the product of the non-zero dimensions times the itemsize fits in int64.
  U128 nonzero = b.dtype->itemsize;
  bool empty = false;
  for (const json::Node& d : shape->items) {
    uint64_t n;
    if (!parse_count(d, n)) throw CheckpointError(where + ": shape must be a list of at most 64 non-negative integers");
    if (n == 0)
      empty = true;
    else
      nonzero = nonzero * n > kMaxArrayBytes ? static_cast<U128>(UINT64_MAX) : nonzero * n;
    b.shape.push_back(n == UINT64_MAX ? -1 : static_cast<int64_t>(n));
  }
  if (nonzero > kMaxArrayBytes) throw CheckpointError(where + ": shape is too large");
  if (b.kind == "numpy.generic" && !b.shape.empty())
    throw CheckpointError(where + ": a NumPy scalar must have shape []");
  b.nbytes = empty ? 0 : static_cast<uint64_t>(nonzero);
  uint64_t declared;
  if (!parse_count(*nbytes, declared) || declared != b.nbytes)
    throw CheckpointError(where + ": nbytes must be " + std::to_string(b.nbytes) + " for its shape");
  if (!parse_count(*off, declared) || declared != offset)
    throw CheckpointError(where + ": offset must be " + std::to_string(offset) + " by the layout rule");
  if (torch && (device->kind != NK::String || !valid_device(device->text)))
    throw CheckpointError(where + ": device must be a string such as \"cpu\" or \"cuda:0\"");
  b.offset = offset;
  return b;
}

// Turns the header's root into a Value, with the checks of _Reader._decode in Python. The
// version-2 types map onto the nearest C++ kinds: an OrderedDict is a Dict (C++ dicts keep
// their order), a torch.Size a Tuple of Ints, a parameter its Array; an OrderedDict's
// _metadata has no C++ counterpart and makes the file UnsupportedContent.
class ValueReader {
 public:
  ValueReader(const std::vector<BufferEntry>& buffers, uint64_t version) : buffers_(buffers), version_(version) {}

  Value read(const json::Node& n, int depth) {
    using NK = json::Node::Kind;
    if (is_scalar(n)) return read_scalar(n);
    if (n.kind != NK::Object || n.keys.size() != 1) throw CheckpointError("checkpoint header: malformed value");
    const std::string& tag = n.keys[0];
    const json::Node& body = n.items[0];
    const bool v1_tag = tag == "array" || tag == "list" || tag == "tuple" || tag == "dict";
    const bool v2_tag =
        tag == "ordered_dict" || tag == "torch.Size" || tag == "torch.nn.Parameter" || tag == "genesis.nn.Parameter";
    if (!v1_tag && !(v2_tag && version_ >= 2))
      throw CheckpointError("checkpoint header: unknown value tag " + json::quote(tag));
    if (tag == "array") return array(body, nullptr);
    if (tag == "genesis.nn.Parameter") {
      if (body.kind != NK::Object || body.keys.size() != 1 || body.keys[0] != "array")
        throw CheckpointError("checkpoint header: genesis.nn.Parameter payload must be an array reference");
      return array(body.items[0], "numpy.ndarray");
    }
    if (depth >= kMaxDepth) throw CheckpointError("checkpoint header: containers are nested more than 100 levels deep");
    if (body.kind != NK::Array) throw CheckpointError("checkpoint header: a " + tag + " payload must be a JSON list");
    if (tag == "list" || tag == "tuple") {
      Value v = Value::list(tag == "list" ? Value::Kind::List : Value::Kind::Tuple);
      for (const json::Node& item : body.items) v.items.push_back(read(item, depth + 1));
      return v;
    }
    if (tag == "dict") return pairs(body, depth);
    if (tag == "torch.Size") {
      Value v = Value::list(Value::Kind::Tuple);
      for (const json::Node& item : body.items) {
        if (item.kind != NK::Object || item.keys.size() != 1 || item.keys[0] != "int")
          throw CheckpointError("checkpoint header: torch.Size payload must be a list of ints");
        v.items.push_back(read_scalar(item));
        if (!key_text_.empty()) throw CheckpointError("checkpoint header: torch.Size dimensions must fit in 64 bits");
      }
      return v;
    }
    if (body.items.size() != 2)
      throw CheckpointError("checkpoint header: a " + tag + " payload must be a JSON list of two items");
    const json::Node& first = body.items[0];
    const json::Node& second = body.items[1];
    if (tag == "torch.nn.Parameter") {
      if (first.kind != NK::Object || first.keys.size() != 1 || first.keys[0] != "array" || second.kind != NK::Bool)
        throw CheckpointError("checkpoint header: torch.nn.Parameter payload must be [array, requires_grad]");
      uint64_t i;
      if (second.boolean && parse_count(first.items[0], i) && i < buffers_.size() && !buffers_[i].dtype->grad)
        throw CheckpointError("checkpoint header: only floating-point and complex parameters can require gradients");
      return array(first.items[0], "torch.Tensor");
    }
    // ordered_dict: [pairs, metadata or null]
    if (first.kind != NK::Array) throw CheckpointError("checkpoint header: ordered_dict items must be a JSON list");
    Value v = pairs(first, depth);
    if (second.kind != NK::Null) {
      read(second, depth + 1);
      if (unsupported_.empty()) unsupported_ = "an OrderedDict's _metadata";
    }
    return v;
  }

  void check_all_used() const {
    if (next_array_ != buffers_.size())
      throw CheckpointError("checkpoint header lists " + std::to_string(buffers_.size()) +
                            " buffers but the structure uses " + std::to_string(next_array_));
  }
  // Why the document cannot be represented in C++ (empty when it can).
  const std::string& unsupported() const { return unsupported_; }

 private:
  // An array reference; `kind` is the buffer type the context requires (nullptr: any).
  Value array(const json::Node& index, const char* kind) {
    uint64_t i;
    if (!parse_count(index, i) || i != next_array_)
      throw CheckpointError("checkpoint header: array references must number the buffers in order, each once");
    if (i >= buffers_.size()) throw CheckpointError("checkpoint header: refers to a buffer the header does not list");
    if (kind && buffers_[i].kind != kind)
      throw CheckpointError("checkpoint header: buffer " + std::to_string(i) + " must be a " + kind);
    return Value::array_ref(static_cast<int64_t>(next_array_++));
  }

  Value pairs(const json::Node& body, int depth) {
    using NK = json::Node::Kind;
    Value v = Value::dict();
    std::unordered_set<std::string> seen;
    for (const json::Node& pair : body.items) {
      if (pair.kind != NK::Array || pair.items.size() != 2 || !is_scalar(pair.items[0]))
        throw CheckpointError(
            "checkpoint header: dict entries must be [key, value] with a str/int/float/bool/None key");
      Value key = read_scalar(pair.items[0]);
      const std::string canonical = key_text_.empty() ? canonical_key(key) : key_text_;
      if (!canonical.empty() && !seen.insert(canonical).second)
        throw CheckpointError("checkpoint header: duplicate dict key");
      v.set(std::move(key), read(pair.items[1], depth + 1));
    }
    return v;
  }

  static bool is_scalar(const json::Node& n) {
    using NK = json::Node::Kind;
    return n.kind == NK::Null || n.kind == NK::Bool || n.kind == NK::String ||
           (n.kind == NK::Object && n.keys.size() == 1 && (n.keys[0] == "int" || n.keys[0] == "float"));
  }

  // Also leaves in key_text_ the canonical text of an int too large for int64 ("" otherwise).
  Value read_scalar(const json::Node& n) {
    using NK = json::Node::Kind;
    key_text_.clear();
    if (n.kind == NK::Null) return Value::none();
    if (n.kind == NK::Bool) return Value::of(n.boolean);
    if (n.kind == NK::String) return Value::of(n.text);
    const json::Node& body = n.items[0];
    if (n.keys[0] == "float") {
      if (body.kind != NK::String || body.text.size() != 16 ||
          body.text.find_first_not_of("0123456789abcdef") != std::string::npos)
        throw CheckpointError("checkpoint header: malformed float");
      const uint64_t bits = std::stoull(body.text, nullptr, 16);
      double d;
      std::memcpy(&d, &bits, 8);
      return Value::of(d);
    }
    // Python's hex(): -?0x[0-9a-f]+ of any length (leading zeros allowed).
    const std::string& t = body.text;
    const bool negative = body.kind == NK::String && !t.empty() && t[0] == '-';
    const size_t digits = negative ? 3 : 2;
    if (body.kind != NK::String || t.compare(negative ? 1 : 0, 2, "0x") != 0 || t.size() == digits ||
        t.find_first_not_of("0123456789abcdef", digits) != std::string::npos)
      throw CheckpointError("checkpoint header: malformed int");
    const std::string canonical = canonical_integer(negative, t.substr(digits));
    const size_t significant = canonical.size() - (negative && canonical != "i0" ? 2 : 1);
    const uint64_t magnitude =
        significant <= 16 ? std::stoull(canonical.substr(canonical.size() - significant), nullptr, 16) : 0;
    if (significant > 16 || magnitude > (negative ? uint64_t(1) << 63 : (uint64_t(1) << 63) - 1)) {
      if (unsupported_.empty()) unsupported_ = "an int beyond 64 bits (" + t + ")";
      key_text_ = canonical;
      return Value::none();
    }
    return Value::of(negative ? static_cast<int64_t>(0 - magnitude) : static_cast<int64_t>(magnitude));
  }

  const std::vector<BufferEntry>& buffers_;
  const uint64_t version_;
  uint64_t next_array_ = 0;
  std::string unsupported_;
  std::string key_text_;
};

// Arrays are copied in chunks that stay in the cache: each chunk's CRC is computed on the hot
// copy, so the data crosses main memory once instead of twice.
constexpr size_t kChunk = size_t(1) << 20;

// Writes `bytes` and returns their CRC32.
uint32_t write_checked(Sink& sink, const std::vector<unsigned char>& bytes) {
  uint32_t crc = 0;
  for (size_t at = 0; at < bytes.size(); at += kChunk) {
    const size_t n = std::min(kChunk, bytes.size() - at);
    crc = crc32_of(bytes.data() + at, n, crc);
    sink.write(bytes.data() + at, n);
  }
  return crc;
}

// Asks Linux to back [p, p + n) with transparent huge pages where it is set to "madvise" (the
// usual default): loading 1 GB into fresh memory then takes 512 page faults of 2 MiB instead
// of 262144 of 4 KiB, which on VMs cost more than the copy itself (docs/checkpoint-format.md,
// "Memory and speed"). Only whole 2 MiB pages inside the range are
// advised; the memory stays the vector's own, and the advice is only a hint.
void advise_huge_pages(unsigned char* p, size_t n) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(1) << 21;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + n) & ~(kHuge - 1);
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)p;
  (void)n;
#endif
}

// Reads `n` bytes into `out` and returns their CRC32. The bytes are read straight into the
// vector, a chunk at a time: growing it by one chunk zero-fills memory that stays in the cache
// until the read overwrites it, and the CRC then runs on the still-cached chunk, so the data
// crosses main memory once.
uint32_t read_checked(Source& source, std::vector<unsigned char>& out, uint64_t n) {
  out.reserve(static_cast<size_t>(n));
  advise_huge_pages(out.data(), static_cast<size_t>(n));
  uint32_t crc = 0;
  for (size_t at = 0; at < n; at += kChunk) {
    const size_t k = static_cast<size_t>(std::min<uint64_t>(kChunk, n - at));
    out.resize(at + k);
    source.read(out.data() + at, k);
    crc = crc32_of(out.data() + at, k, crc);
  }
  return crc;
}

// Reads `n` padding bytes, which must be zero.
void read_padding(Source& source, uint64_t n) {
  unsigned char pad[kAlign];
  source.read(pad, static_cast<size_t>(n));
  for (uint64_t i = 0; i < n; ++i)
    if (pad[i]) throw CheckpointError("checkpoint has non-zero padding: the file is corrupted");
}

}  // namespace

// --- Value and Array ---------------------------------------------------------------------------

const Value* Value::find(const std::string& key) const {
  for (size_t i = 0; i < keys.size(); ++i)
    if (keys[i].kind == Kind::String && keys[i].text == key) return &items[i];
  return nullptr;
}

const Value* Value::find(int64_t key) const {
  for (size_t i = 0; i < keys.size(); ++i)
    if (keys[i].kind == Kind::Int && keys[i].integer == key) return &items[i];
  return nullptr;
}

double Value::as_number(const std::string& what) const {
  if (kind == Kind::Float) return number;
  if (kind == Kind::Int) return static_cast<double>(integer);
  if (kind == Kind::Bool) return boolean ? 1.0 : 0.0;
  throw CheckpointError(what + " must be a number");
}

int64_t Array::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// --- the format, over streams ------------------------------------------------------------------

Plan plan(const Document& doc) {
  Plan p;
  std::string root;
  write_value(doc.root, doc, root, p.arrays, 0);
  p.header = "{\"buffers\": [";
  uint64_t offset = 0;
  for (size_t i = 0; i < p.arrays.size(); ++i) {
    const Array& a = *p.arrays[i];
    if (a.shape.size() > kMaxNdim) throw std::invalid_argument("checkpoint arrays have at most 64 dimensions");
    for (int64_t d : a.shape)
      if (d < 0) throw std::invalid_argument("checkpoint array has a negative dimension");
    if (a.bytes.size() != static_cast<size_t>(a.numel()) * dtype_size(a.dtype))
      throw std::invalid_argument("checkpoint array size does not match its shape");
    std::string shape;
    for (size_t d = 0; d < a.shape.size(); ++d) shape += (d ? ", " : "") + std::to_string(a.shape[d]);
    // NumPy has no bfloat16: such arrays travel as CPU torch tensors.
    const bool torch = a.dtype == DType::BFloat16;
    if (i) p.header += ", ";
    p.header += std::string("{\"type\": \"") + (torch ? "torch.Tensor" : "numpy.ndarray") + "\", \"dtype\": \"" +
                dtype_name(a.dtype) + "\", \"shape\": [" + shape + "], " + (torch ? "\"device\": \"cpu\", " : "") +
                "\"offset\": " + std::to_string(offset) + ", \"nbytes\": " + std::to_string(a.bytes.size()) + "}";
    offset = align_up(offset + a.bytes.size());
  }
  p.header += "], \"root\": " + root + "}";
  return p;
}

void write(const Plan& p, Sink& sink) {
  unsigned char preamble[kPreamble];
  std::memcpy(preamble, kMagic, 8);
  put_le(preamble + 8, kVersion, 4);
  put_le(preamble + 12, crc32_of(reinterpret_cast<const unsigned char*>(p.header.data()), p.header.size()), 4);
  put_le(preamble + 16, p.header.size(), 8);
  sink.write(preamble, kPreamble);
  sink.write(reinterpret_cast<const unsigned char*>(p.header.data()), p.header.size());
  uint64_t position = kPreamble + p.header.size();
  std::vector<unsigned char> checksums(4 * p.arrays.size());
  for (size_t i = 0; i < p.arrays.size(); ++i) {
    const std::vector<unsigned char>& bytes = p.arrays[i]->bytes;
    sink.write(kZeros, static_cast<size_t>(align_up(position) - position));
    put_le(checksums.data() + 4 * i, write_checked(sink, bytes), 4);
    position = align_up(position) + bytes.size();
  }
  if (p.arrays.empty()) sink.write(kZeros, static_cast<size_t>(align_up(position) - position));
  sink.write(checksums.data(), checksums.size());
}

Document read(Source& source, uint64_t size) {
  if (size < kPreamble) throw CheckpointError("file is too short to be a genesis checkpoint");
  unsigned char preamble[kPreamble];
  source.read(preamble, kPreamble);
  if (std::memcmp(preamble, kMagic, 8) != 0) throw CheckpointError("not a genesis checkpoint (bad magic)");
  const uint64_t version = get_le(preamble + 8, 4);
  if (version < 1 || version > kMaxVersion)
    throw CheckpointError("unsupported checkpoint format version " + std::to_string(version) +
                          (version > kMaxVersion ? " (written by a newer genesis)" : "") +
                          "; this reader reads versions 1, 2, 3");
  const uint64_t header_len = get_le(preamble + 16, 8);
  if (header_len > size - kPreamble) throw CheckpointError("checkpoint is truncated (header runs past the end)");
  std::string header(static_cast<size_t>(header_len), '\0');
  source.read(reinterpret_cast<unsigned char*>(&header[0]), header.size());
  if (crc32_of(reinterpret_cast<const unsigned char*>(header.data()), header.size()) != get_le(preamble + 12, 4))
    throw CheckpointError("checkpoint header checksum mismatch: the file is corrupted");
  const json::Node top = json::parse(header, kMaxJsonDepth);
  const json::Node* buffers = top.get("buffers");
  const json::Node* root = top.get("root");
  if (top.kind != json::Node::Kind::Object || top.keys.size() != 2 || !buffers || !root ||
      buffers->kind != json::Node::Kind::Array)
    throw CheckpointError(
        "checkpoint header must be a JSON object with exactly the keys \"buffers\" (a list) and \"root\"");

  // The whole buffer table against the real size, before anything is allocated.
  std::vector<BufferEntry> entries;
  uint64_t data_end = 0;
  for (size_t i = 0; i < buffers->items.size(); ++i) {
    entries.push_back(parse_entry(buffers->items[i], i, align_up(data_end), version));
    data_end = entries.back().offset + entries.back().nbytes;
  }
  const uint64_t data_start = align_up(kPreamble + header_len);
  const U128 expected = U128(data_start) + data_end + 4 * U128(entries.size());
  if (expected != size)
    throw CheckpointError(expected > size ? "checkpoint is truncated" : "checkpoint is followed by unexpected bytes");

  ValueReader values(entries, version);
  Document doc;
  doc.root = values.read(*root, 0);
  values.check_all_used();
  std::string unsupported = values.unsupported();

  uint64_t position = kPreamble + header_len;
  std::vector<uint32_t> crcs;
  for (size_t i = 0; i < entries.size(); ++i) {
    const BufferEntry& b = entries[i];
    read_padding(source, data_start + b.offset - position);
    Array a;
    if (b.dtype->kept)
      a.dtype = b.dtype->dtype;
    else if (unsupported.empty())
      unsupported = std::string("an array of dtype ") + b.dtype->name;
    a.shape = b.shape;
    crcs.push_back(read_checked(source, a.bytes, b.nbytes));
    // Bytes other than 0/1 in a bool array are undefined behaviour for NumPy and torch.
    if (std::string(b.dtype->name) == "bool")
      for (unsigned char byte : a.bytes)
        if (byte > 1)
          throw CheckpointError("checkpoint bool buffer " + std::to_string(i) + " holds bytes other than 0 and 1");
    if (!b.dtype->kept) a.bytes = {};  // only validated, never returned
    doc.arrays.push_back(std::move(a));
    position = data_start + b.offset + b.nbytes;
  }
  if (entries.empty()) read_padding(source, data_start - position);
  std::vector<unsigned char> table(4 * entries.size());
  source.read(table.data(), table.size());
  for (size_t i = 0; i < entries.size(); ++i)
    if (get_le(table.data() + 4 * i, 4) != crcs[i])
      throw CheckpointError("checksum mismatch in buffer " + std::to_string(i) + ": the file is corrupted");
  if (!unsupported.empty())
    throw UnsupportedContent("valid checkpoint, but it holds " + unsupported +
                             ", which the C++ API does not represent");
  return doc;
}

std::vector<unsigned char> encode(const Document& doc) {
  const Plan p = plan(doc);
  std::vector<unsigned char> out;
  VectorSink sink(out);
  write(p, sink);
  return out;
}

Document decode(const unsigned char* data, size_t size) {
  MemorySource source(data, size);
  return read(source, size);
}

}  // namespace genesis::checkpoint

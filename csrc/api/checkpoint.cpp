// The checkpoint container (docs/checkpoint-format.md, version 1) for the C++ API.
#include "genesis/checkpoint.h"

#include <array>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include "json.h"

namespace genesis::checkpoint {

namespace {

constexpr char kMagic[8] = {'\x93', 'G', 'E', 'N', 'E', 'S', 'I', 'S'};
constexpr uint32_t kVersion = 1;
constexpr size_t kPreamble = 24;
constexpr size_t kAlign = 64;
constexpr int kMaxDepth = 100;

size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// zlib's CRC-32 (the checksum Python's zlib.crc32 computes).
uint32_t crc32(const unsigned char* p, size_t n) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

template <typename T> void put(std::vector<unsigned char>& out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<unsigned char>(uint64_t(v) >> (8 * i)));
}
template <typename T> T get(const unsigned char* p) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= uint64_t(p[i]) << (8 * i);
  return static_cast<T>(v);
}

std::string hex_int(int64_t v) {
  char buf[32];
  const uint64_t mag = v < 0 ? 0 - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
  std::snprintf(buf, sizeof buf, "%s0x%" PRIx64, v < 0 ? "-" : "", mag);
  return buf;
}

std::string hex_float(double d) {
  uint64_t bits;
  std::memcpy(&bits, &d, 8);
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, bits);
  return buf;
}

// Writes a value; arrays are numbered in the order met, which is the file order the format
// requires, and `order` records which Document array each number stands for.
void write_value(const Value& v, std::string& out, std::vector<int64_t>& order) {
  using K = Value::Kind;
  switch (v.kind) {
    case K::None: out += "null"; return;
    case K::Bool: out += v.boolean ? "true" : "false"; return;
    case K::Int: out += "{\"int\": \"" + hex_int(v.integer) + "\"}"; return;
    case K::Float: out += "{\"float\": \"" + hex_float(v.number) + "\"}"; return;
    case K::String: out += json::quote(v.text); return;
    case K::Array:
      out += "{\"array\": " + std::to_string(order.size()) + "}";
      order.push_back(v.array);
      return;
    case K::List:
    case K::Tuple:
      out += v.kind == K::List ? "{\"list\": [" : "{\"tuple\": [";
      for (size_t i = 0; i < v.items.size(); ++i) {
        if (i) out += ", ";
        write_value(v.items[i], out, order);
      }
      out += "]}";
      return;
    case K::Dict:
      out += "{\"dict\": [";
      for (size_t i = 0; i < v.items.size(); ++i) {
        if (i) out += ", ";
        out += "[";
        write_value(v.keys[i], out, order);
        out += ", ";
        write_value(v.items[i], out, order);
        out += "]";
      }
      out += "]}";
      return;
  }
}

// --- decoding ------------------------------------------------------------------------------

uint64_t parse_hex(const std::string& s, bool& negative) {
  size_t i = 0;
  negative = !s.empty() && s[0] == '-';
  if (negative) ++i;
  if (s.compare(i, 2, "0x") != 0 || s.size() == i + 2 || s.size() > i + 2 + 16)
    throw CheckpointError("checkpoint header: bad int literal '" + s + "' (or too large for C++)");
  uint64_t v = 0;
  for (i += 2; i < s.size(); ++i) {
    const char c = s[i];
    const int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    if (d < 0) throw CheckpointError("checkpoint header: bad int literal '" + s + "'");
    v = v << 4 | uint64_t(d);
  }
  return v;
}

class ValueReader {
 public:
  explicit ValueReader(size_t buffers) : buffers_(buffers) {}

  Value read(const json::Node& n) const {
    using NK = json::Node::Kind;
    switch (n.kind) {
      case NK::Null: return Value::none();
      case NK::Bool: return Value::of(n.boolean);
      case NK::String: return Value::of(n.text);
      case NK::Object: break;
      default: throw CheckpointError("checkpoint header: bare JSON numbers and lists are not values");
    }
    if (n.keys.size() != 1) throw CheckpointError("checkpoint header: a tagged value has exactly one key");
    const std::string& tag = n.keys[0];
    const json::Node& body = n.items[0];
    if (tag == "int" || tag == "float") {
      if (body.kind != NK::String) throw CheckpointError("checkpoint header: " + tag + " literal must be a string");
      if (tag == "float") {
        if (body.text.size() != 16) throw CheckpointError("checkpoint header: float literal must be 16 hex digits");
        bool neg;
        const uint64_t bits = parse_hex("0x" + body.text, neg);
        double d;
        std::memcpy(&d, &bits, 8);
        return Value::of(d);
      }
      bool neg;
      const uint64_t mag = parse_hex(body.text, neg);
      if (mag > (neg ? uint64_t(1) << 63 : (uint64_t(1) << 63) - 1))
        throw CheckpointError("checkpoint header: int " + body.text + " does not fit in 64 bits");
      return Value::of(neg ? static_cast<int64_t>(0 - mag) : static_cast<int64_t>(mag));
    }
    if (tag == "list" || tag == "tuple") {
      if (body.kind != NK::Array) throw CheckpointError("checkpoint header: " + tag + " needs a JSON array");
      Value v = Value::list(tag == "list" ? Value::Kind::List : Value::Kind::Tuple);
      for (const auto& item : body.items) v.items.push_back(read(item));
      return v;
    }
    if (tag == "dict") {
      if (body.kind != NK::Array) throw CheckpointError("checkpoint header: dict needs a JSON array");
      Value v = Value::dict();
      for (const auto& pair : body.items) {
        if (pair.kind != NK::Array || pair.items.size() != 2)
          throw CheckpointError("checkpoint header: dict entries are [key, value] pairs");
        v.set(read(pair.items[0]), read(pair.items[1]));
      }
      return v;
    }
    if (tag == "array") {
      const int64_t i = json::to_count(body, "an array reference");
      if (i != next_array_ || static_cast<size_t>(i) >= buffers_)
        throw CheckpointError("checkpoint header: array references must number the buffers in order");
      ++next_array_;
      return Value::array_ref(i);
    }
    throw CheckpointError("checkpoint header: unknown value tag '" + tag + "'");
  }

  void check_all_used() const {
    if (static_cast<size_t>(next_array_) != buffers_)
      throw CheckpointError("checkpoint header: a buffer is not referenced by any value");
  }

 private:
  size_t buffers_;
  mutable int64_t next_array_ = 0;
};

bool dtype_from_name(const std::string& name, DType& out) {
  if (name == "float32") { out = DType::Float32; return true; }
  if (name == "float64") { out = DType::Float64; return true; }
  return false;
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

// --- encode / decode ---------------------------------------------------------------------------

std::vector<unsigned char> encode(const Document& doc) {
  std::string root;
  std::vector<int64_t> order;
  write_value(doc.root, root, order);
  std::string header = "{\"buffers\": [";
  size_t offset = 0;
  std::vector<size_t> offsets;
  for (size_t i = 0; i < order.size(); ++i) {
    const Array& a = doc.arrays.at(order[i]);
    if (a.bytes.size() != static_cast<size_t>(a.numel()) * dtype_size(a.dtype))
      throw std::invalid_argument("checkpoint array size does not match its shape");
    std::string shape;
    for (size_t d = 0; d < a.shape.size(); ++d) shape += (d ? ", " : "") + std::to_string(a.shape[d]);
    if (i) header += ", ";
    header += "{\"type\": \"numpy.ndarray\", \"dtype\": \"" + std::string(dtype_name(a.dtype)) +
              "\", \"shape\": [" + shape + "], \"offset\": " + std::to_string(offset) +
              ", \"nbytes\": " + std::to_string(a.bytes.size()) + "}";
    offsets.push_back(offset);
    offset = align_up(offset + a.bytes.size());
  }
  header += "], \"root\": " + root + "}";

  std::vector<unsigned char> out(kMagic, kMagic + 8);
  put<uint32_t>(out, kVersion);
  put<uint32_t>(out, crc32(reinterpret_cast<const unsigned char*>(header.data()), header.size()));
  put<uint64_t>(out, header.size());
  out.insert(out.end(), header.begin(), header.end());
  const size_t data_start = align_up(out.size());
  std::vector<uint32_t> checksums;
  for (size_t i = 0; i < order.size(); ++i) {
    const Array& a = doc.arrays[order[i]];
    out.resize(data_start + offsets[i], 0);
    out.insert(out.end(), a.bytes.begin(), a.bytes.end());
    checksums.push_back(crc32(a.bytes.data(), a.bytes.size()));
  }
  if (order.empty()) out.resize(data_start, 0);
  for (uint32_t c : checksums) put<uint32_t>(out, c);
  return out;
}

Document decode(const unsigned char* data, size_t size) {
  if (size < kPreamble || std::memcmp(data, kMagic, 8) != 0)
    throw CheckpointError("not a genesis checkpoint (bad magic or shorter than its preamble)");
  const uint32_t version = get<uint32_t>(data + 8);
  if (version != kVersion)
    throw CheckpointError("checkpoint format version " + std::to_string(version) +
                          " is not supported (this reader reads version 1)");
  const uint32_t header_crc = get<uint32_t>(data + 12);
  const uint64_t header_len = get<uint64_t>(data + 16);
  if (header_len > size - kPreamble) throw CheckpointError("checkpoint is truncated (header runs past the end)");
  const std::string header(reinterpret_cast<const char*>(data + kPreamble), header_len);
  if (crc32(data + kPreamble, header_len) != header_crc) throw CheckpointError("checkpoint header checksum mismatch");
  const json::Node top = json::parse(header, kMaxDepth + 4);
  const json::Node* buffers = top.get("buffers");
  const json::Node* root = top.get("root");
  if (top.kind != json::Node::Kind::Object || top.keys.size() != 2 || !buffers || !root ||
      buffers->kind != json::Node::Kind::Array)
    throw CheckpointError("checkpoint header must be {\"buffers\": [...], \"root\": ...}");

  // Check the whole buffer table against the real size before allocating anything.
  const size_t data_start = align_up(kPreamble + header_len);
  if (data_start > size) throw CheckpointError("checkpoint is truncated (before its data section)");
  Document doc;
  size_t expected_offset = 0, end = 0;
  for (size_t i = 0; i < buffers->items.size(); ++i) {
    const json::Node& e = buffers->items[i];
    const std::string where = "buffer " + std::to_string(i);
    const json::Node* type = e.get("type");
    const json::Node* dtype = e.get("dtype");
    const json::Node* shape = e.get("shape");
    const json::Node* offset = e.get("offset");
    const json::Node* nbytes_field = e.get("nbytes");
    if (e.kind != json::Node::Kind::Object || !type || !dtype || !shape || !offset || !nbytes_field ||
        shape->kind != json::Node::Kind::Array)
      throw CheckpointError("checkpoint header: " + where + " is malformed");
    Array a;
    if (!dtype_from_name(dtype->text, a.dtype))
      throw CheckpointError("checkpoint " + where + " has dtype " + dtype->text +
                            "; the C++ reader handles float32 and float64 arrays");
    uint64_t numel = 1;
    for (const auto& d : shape->items) {
      const int64_t n = json::to_count(d, where + " shape");
      if (n != 0 && numel > (uint64_t(1) << 60) / uint64_t(n)) throw CheckpointError("checkpoint " + where + " is absurdly large");
      numel *= uint64_t(n);
      a.shape.push_back(n);
    }
    const uint64_t nbytes = numel * dtype_size(a.dtype);
    if (json::to_count(*offset, where + " offset") != static_cast<int64_t>(expected_offset) ||
        json::to_count(*nbytes_field, where + " nbytes") != static_cast<int64_t>(nbytes))
      throw CheckpointError("checkpoint " + where + " offset/nbytes disagree with the layout");
    if (nbytes > size || data_start + expected_offset + nbytes > size)
      throw CheckpointError("checkpoint is truncated (" + where + " runs past the end)");
    end = expected_offset + nbytes;
    expected_offset = align_up(end);
    doc.arrays.push_back(std::move(a));
  }
  const size_t n = doc.arrays.size();
  if (data_start + end + 4 * n != size) throw CheckpointError("checkpoint size does not match its buffer table");
  size_t offset = 0;
  for (size_t i = 0; i < n; ++i) {
    Array& a = doc.arrays[i];
    const size_t nbytes = static_cast<size_t>(a.numel()) * dtype_size(a.dtype);
    const unsigned char* src = data + data_start + offset;
    if (crc32(src, nbytes) != get<uint32_t>(data + data_start + end + 4 * i))
      throw CheckpointError("checkpoint buffer " + std::to_string(i) + " checksum mismatch");
    a.bytes.assign(src, src + nbytes);
    offset = align_up(offset + nbytes);
  }
  ValueReader reader(n);
  doc.root = reader.read(*root);
  reader.check_all_used();
  return doc;
}

void save_file(const Document& doc, const std::string& path) {
  const std::vector<unsigned char> bytes = encode(doc);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw std::runtime_error("cannot write checkpoint " + path);
}

Document load_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open checkpoint " + path);
  const std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  try {
    return decode(bytes.data(), bytes.size());
  } catch (const CheckpointError& e) {
    throw CheckpointError(path + ": " + e.what());
  }
}

}  // namespace genesis::checkpoint

// C++ checkpoint throughput: save_file and load_file of an optimizer-like state (float32
// arrays) of a given size, best of a few runs. Built by ctest's tree as `checkpoint_bench`:
//   build/cpp/tests/cpp/checkpoint_bench [megabytes=1024] [folder=/tmp] [runs=3]
// Save includes the fsync that makes the atomic replace durable. Load is timed twice: through
// the page cache (the file was just written: it measures the reader, not the disk) and cold,
// after posix_fadvise(DONTNEED) has dropped the file's cached pages (on a real disk this reads
// the disk; tmpfs has nothing to drop, so there both are the same).
//
// The same run measures, with the same sizes, what the codec is made of and what bounds it:
// the file system's own bandwidth (plain write() + fsync of the raw bytes, plain read() of
// them into memory already faulted in, warm and cold), the CRC-32 alone (the codec's and
// zlib's crc32_z), and copying the state into freshly allocated vectors (the page faults of
// 1 GB of new memory dominate that on VMs). Ratios are printed against the file system.
#include <fcntl.h>
#include <unistd.h>

#include <genesis/checkpoint.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "crc32.h"  // the codec's internal CRC-32 (csrc/api)

using namespace genesis::checkpoint;

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// `megabytes` of float32 state in 16 arrays, as a state dict {"state": {i: {"exp_avg": a}}}.
Document make_state(size_t megabytes) {
  const size_t arrays = 16, bytes_each = megabytes * (size_t(1) << 20) / arrays / 4 * 4;
  Document doc;
  Value state = Value::dict();
  for (size_t i = 0; i < arrays; ++i) {
    std::vector<unsigned char> bytes(bytes_each);
    for (size_t b = 0; b < bytes_each; b += 4096) bytes[b] = static_cast<unsigned char>(b * 31 + i);
    doc.arrays.push_back({genesis::DType::Float32, {int64_t(bytes_each / 4)}, std::move(bytes)});
    Value entry = Value::dict();
    entry.set(Value::of(std::string("exp_avg")), Value::array_ref(int64_t(i)));
    state.set(Value::of(int64_t(i)), std::move(entry));
  }
  doc.root = Value::dict();
  doc.root.set(Value::of(std::string("state")), std::move(state));
  return doc;
}

// Plain write() of every array's bytes over the file at `path` (O_TRUNC), then fsync: the file
// system's write bandwidth, as a non-atomic save that overwrites its previous file sees it.
void write_raw(const Document& doc, const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  for (const Array& a : doc.arrays)
    for (size_t at = 0; at < a.bytes.size();) {
      const ssize_t n = ::write(fd, a.bytes.data() + at, a.bytes.size() - at);
      if (n <= 0) std::abort();
      at += size_t(n);
    }
  ::fsync(fd);
  ::close(fd);
}

// Drops the file's pages from the page cache (clean pages only: call after fsync).
void drop_cache(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

// Plain read() of the whole file into `into` (faulted in beforehand): the read bandwidth.
void read_raw(const std::string& path, std::vector<unsigned char>& into) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  for (size_t at = 0;;) {
    const ssize_t n = ::read(fd, into.data() + at, std::min<size_t>(into.size() - at, size_t(1) << 30));
    if (n < 0) std::abort();
    if (n == 0) break;
    at += size_t(n);
  }
  ::close(fd);
}

// Copies every array into new vectors: what any load into new std::vector arrays must pay.
size_t copy_fresh(const Document& doc) {
  size_t sum = 0;
  for (const Array& a : doc.arrays) {
    std::vector<unsigned char> copy(a.bytes.begin(), a.bytes.end());
    sum += copy[copy.size() / 2];
  }
  return sum;
}

// Best time of `runs` calls of f; `before` runs first each time, outside the timing.
template <class F, class B>
double best_of(int runs, F&& f, B&& before) {
  double best = 1e30;
  for (int r = 0; r < runs; ++r) {
    before();
    const auto start = std::chrono::steady_clock::now();
    f();
    best = std::min(best, seconds_since(start));
  }
  return best;
}
template <class F>
double best_of(int runs, F&& f) {
  return best_of(runs, f, [] {});
}

}  // namespace

int main(int argc, char** argv) {
  const size_t megabytes = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 1024;
  const std::string path = std::string(argc > 2 ? argv[2] : "/tmp") + "/genesis_checkpoint_bench.genesis";
  const int runs = argc > 3 ? std::atoi(argv[3]) : 3;
  const Document doc = make_state(megabytes);
  bool ok = true;
  const double save = best_of(runs, [&] { save_file(doc, path); });
  const double load = best_of(runs, [&] {
    const Document back = load_file(path);
    ok = ok && back.arrays.size() == doc.arrays.size() && back.arrays.back().bytes == doc.arrays.back().bytes;
  });
  const double load_cold = best_of(runs, [&] { (void)load_file(path); }, [&] { drop_cache(path); });
  if (!ok) {
    std::fprintf(stderr, "round trip mismatch\n");
    return 1;
  }
  std::remove(path.c_str());
  size_t total = 0;
  for (const Array& a : doc.arrays) total += a.bytes.size();
  std::vector<unsigned char> buffer(total, 1);  // faulted in once, outside the timings
  uint32_t crc = 0;
  // Over an existing file of the same size, as save_file replaced one above: truncating (or
  // renaming over) a 1 GB file frees its blocks, which costs ext4 ~0.3 s.
  write_raw(doc, path);
  const double write = best_of(runs, [&] { write_raw(doc, path); });
  const double read = best_of(runs, [&] { read_raw(path, buffer); });
  const double read_cold = best_of(runs, [&] { read_raw(path, buffer); }, [&] { drop_cache(path); });
  const double crc_codec = best_of(runs, [&] {
    for (const Array& a : doc.arrays) crc ^= genesis::checkpoint::crc32(0, a.bytes.data(), a.bytes.size());
  });
  const double crc_zlib = best_of(runs, [&] {
    for (const Array& a : doc.arrays) crc ^= static_cast<uint32_t>(::crc32_z(0, a.bytes.data(), a.bytes.size()));
  });
  size_t sink = crc;
  const double copy = best_of(runs, [&] { sink += copy_fresh(doc); });
  std::remove(path.c_str());
  const double mb = double(megabytes);
  auto row = [&](const char* name, double s) { std::printf("| %s | %.3f | %.0f |\n", name, s, mb / s); };
  std::printf("C++ checkpoint, %zu MB of float32 state in 16 arrays, %s, best of %d (%zu)\n", megabytes, path.c_str(),
              runs, sink % 2);
  std::printf("| operation | seconds | MB/s |\n| --- | --- | --- |\n");
  row("save_file (atomic, fsync)", save);
  row("load_file (page cache)", load);
  row("load_file (cold: cache dropped)", load_cold);
  row("file system: write() + fsync of the raw bytes", write);
  row("file system: read() (page cache)", read);
  row("file system: read() (cold)", read_cold);
  row("CRC-32, the codec's", crc_codec);
  row("CRC-32, zlib crc32_z", crc_zlib);
  row("copy into new vectors", copy);
  std::printf("\nsave_file / raw write: %.2f; load_file / raw read: %.2f (page cache), %.2f (cold)\n", write / save,
              read / load, read_cold / load_cold);
  return 0;
}

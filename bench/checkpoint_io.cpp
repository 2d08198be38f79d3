// C++ checkpoint throughput: save_file and load_file of an optimizer-like state (float32
// arrays) of a given size, best of a few runs. Built by ctest's tree as `checkpoint_bench`:
//   build/cpp/tests/cpp/checkpoint_bench [megabytes=1024] [folder=/tmp] [runs=3]
// Save includes the fsync that makes the atomic replace durable; load reads through the page
// cache (the file was just written), i.e. it measures the reader, not the disk. A folder on
// tmpfs (/dev/shm) takes the disk out of the save as well.
//
// Two floors are measured in the same run, with the same sizes: writing the raw bytes to a
// file in that folder with plain write() + fsync (what any save must pay), and copying the
// state into freshly allocated vectors (what any load into new std::vector arrays must pay:
// the page faults of 1 GB of new memory dominate it on VMs).
#include <fcntl.h>
#include <unistd.h>

#include <genesis/checkpoint.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

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

// Plain write() of every array's bytes, then fsync: the save floor.
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

// Copies every array into new vectors: the load floor.
size_t copy_fresh(const Document& doc) {
  size_t sum = 0;
  for (const Array& a : doc.arrays) {
    std::vector<unsigned char> copy(a.bytes.begin(), a.bytes.end());
    sum += copy[copy.size() / 2];
  }
  return sum;
}

}  // namespace

int main(int argc, char** argv) {
  const size_t megabytes = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 1024;
  const std::string path = std::string(argc > 2 ? argv[2] : "/tmp") + "/genesis_checkpoint_bench.genesis";
  const int runs = argc > 3 ? std::atoi(argv[3]) : 3;
  const Document doc = make_state(megabytes);
  double save_best = 1e30, load_best = 1e30;
  for (int r = 0; r < runs; ++r) {
    auto start = std::chrono::steady_clock::now();
    save_file(doc, path);
    save_best = std::min(save_best, seconds_since(start));
    start = std::chrono::steady_clock::now();
    const Document back = load_file(path);
    load_best = std::min(load_best, seconds_since(start));
    if (back.arrays.size() != doc.arrays.size() || back.arrays.back().bytes != doc.arrays.back().bytes) {
      std::fprintf(stderr, "round trip mismatch\n");
      return 1;
    }
  }
  std::remove(path.c_str());
  double write_best = 1e30, copy_best = 1e30;
  size_t sink = 0;
  for (int r = 0; r < runs; ++r) {
    auto start = std::chrono::steady_clock::now();
    write_raw(doc, path);
    write_best = std::min(write_best, seconds_since(start));
    start = std::chrono::steady_clock::now();
    sink += copy_fresh(doc);
    copy_best = std::min(copy_best, seconds_since(start));
  }
  std::remove(path.c_str());
  const double mb = double(megabytes);
  std::printf("C++ checkpoint, %zu MB of float32 state in 16 arrays, best of %d (%zu)\n", megabytes, runs, sink % 2);
  std::printf("| operation | seconds | MB/s |\n| --- | --- | --- |\n");
  std::printf("| save_file (atomic, fsync) | %.3f | %.0f |\n", save_best, mb / save_best);
  std::printf("| load_file | %.3f | %.0f |\n", load_best, mb / load_best);
  std::printf("| floor: write() + fsync of the raw bytes | %.3f | %.0f |\n", write_best, mb / write_best);
  std::printf("| floor: copy into new vectors | %.3f | %.0f |\n", copy_best, mb / copy_best);
  return 0;
}

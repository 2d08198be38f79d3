// C++ checkpoint throughput: save_file and load_file of an optimizer-like state (float32
// arrays) of a given size, best of a few runs. Built by ctest's tree as `checkpoint_bench`:
//   build/cpp/tests/cpp/checkpoint_bench [megabytes=1024] [folder=/tmp] [runs=3]
// Save includes the fsync that makes the atomic replace durable; load reads through the page
// cache (the file was just written), i.e. it measures the reader, not the disk.
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
  const double mb = double(megabytes);
  std::printf("C++ checkpoint, %zu MB of float32 state in 16 arrays, best of %d\n", megabytes, runs);
  std::printf("save_file: %.3f s  %.0f MB/s\nload_file: %.3f s  %.0f MB/s\n", save_best, mb / save_best,
              load_best, mb / load_best);
  return 0;
}

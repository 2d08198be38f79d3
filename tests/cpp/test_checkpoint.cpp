// The C++ checkpoint codec: round trip, and every truncation or flipped byte is rejected.
#include <genesis/checkpoint.h>
#include <genesis/optim.h>

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "adamw_fixture.h"
#include "check.h"

using namespace genesis::checkpoint;

namespace {

Document sample() {
  Document doc;
  doc.arrays.push_back({genesis::DType::Float32, {2, 2}, std::vector<unsigned char>(16, 7)});
  doc.arrays.push_back({genesis::DType::Float64, {3}, std::vector<unsigned char>(24, 9)});
  Value root = Value::dict();
  root.set(Value::of(int64_t(-5)), Value::array_ref(0));
  Value t = Value::list(Value::Kind::Tuple);
  t.items = {Value::of(0.9), Value::of(-0.0), Value::of(true), Value::none(), Value::of(std::string("h\xc3\xa9\"llo"))};
  root.set(Value::of(std::string("tuple")), std::move(t));
  root.set(Value::of(std::string("second")), Value::array_ref(1));
  doc.root = std::move(root);
  return doc;
}

}  // namespace

TEST(checkpoint_round_trip) {
  const std::vector<unsigned char> bytes = encode(sample());
  const Document back = decode(bytes.data(), bytes.size());
  CHECK(back.arrays.size() == 2);
  CHECK(back.arrays[0].shape == std::vector<int64_t>({2, 2}) &&
        back.arrays[0].bytes == std::vector<unsigned char>(16, 7));
  CHECK(back.root.find(int64_t(-5))->array == 0);
  const Value* t = back.root.find(std::string("tuple"));
  CHECK(t->kind == Value::Kind::Tuple && t->items[0].number == 0.9 && std::signbit(t->items[1].number));
  CHECK(t->items[4].text == "h\xc3\xa9\"llo");
  CHECK(encode(back) == bytes);
}

TEST(checkpoint_rejects_truncation_and_corruption) {
  const std::vector<unsigned char> bytes = encode(sample());
  for (size_t n = 0; n < bytes.size(); ++n) CHECK_THROWS(CheckpointError, decode(bytes.data(), n));
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::vector<unsigned char> bad = bytes;
    bad[i] ^= 0x5A;
    // A flip inside zero padding is the only change a reader may accept unnoticed; anything it
    // does accept must still decode to the original content.
    try {
      const Document d = decode(bad.data(), bad.size());
      CHECK(encode(d) == bytes);
    } catch (const CheckpointError&) {
    }
  }
  std::vector<unsigned char> newer = bytes;
  newer[8] = 4;  // versions 1 to 3 are read
  CHECK_THROWS(CheckpointError, decode(newer.data(), newer.size()));
}

// The same optimizer state, written by Python (tests/cpp/data/python_adamw.genesis: genesis.save
// of a genesis.optim.AdamW state_dict over torch parameters after 3 steps, made by
// tests/cpp/data/make_python_adamw.py) and computed here: the C++ reader must load it to the
// very same bits and options.
TEST(reads_a_checkpoint_written_by_python) {
  using namespace genesis;
  const AdamwFixture computed;
  std::vector<float> q0(4), q1(6);
  AdamW loaded(std::vector<AdamW::Group>{{{{q0.data(), nullptr, 4, DType::Float32}}, adamw_defaults()},
                                         {{{q1.data(), nullptr, 6, DType::Float32}}, adamw_defaults()}});
  loaded.load(GENESIS_TEST_DATA "/python_adamw.genesis");
  const AdamOptions& o0 = loaded.param_groups()[0].options;
  const AdamOptions& o1 = loaded.param_groups()[1].options;
  CHECK(o0.lr == 0.01 && o0.beta1 == 0.8 && o0.beta2 == 0.95 && o0.amsgrad && o0.weight_decay == 0.01);
  CHECK(o1.lr == 0.002 && o1.weight_decay == 0.0);
  const Document want = computed.opt.state_dict(), got = loaded.state_dict();
  CHECK(encode(got) == encode(want));  // same steps, same moments, same options, bit for bit
}

namespace {

namespace fs = std::filesystem;

std::vector<unsigned char> file_bytes(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<unsigned char>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// A fresh empty folder under the system's temporary directory.
fs::path scratch_folder(const char* name) {
  const fs::path folder = fs::temp_directory_path() / (std::string("genesis_") + name + "_" + std::to_string(getpid()));
  fs::remove_all(folder);
  fs::create_directories(folder);
  return folder;
}

}  // namespace

TEST(save_file_replaces_atomically_and_a_failed_save_keeps_the_old_file) {
  const fs::path folder = scratch_folder("atomic");
  const std::string path = (folder / "state.genesis").string();
  save_file(sample(), path);
  CHECK(file_bytes(path) == encode(sample()));
  chmod(path.c_str(), 0640);
  Document bad = sample();
  bad.arrays[1].bytes.pop_back();  // its size no longer matches its shape
  CHECK_THROWS(std::invalid_argument, save_file(bad, path));
  CHECK(file_bytes(path) == encode(sample()));
  Document other = sample();
  other.root.set(Value::of(std::string("extra")), Value::of(int64_t(1)));
  save_file(other, path);
  CHECK(file_bytes(path) == encode(other));
  struct stat st;
  CHECK(stat(path.c_str(), &st) == 0 && (st.st_mode & 0777) == 0640);  // the old file's mode
  // Through a symlink: the target is replaced, the link stays.
  const fs::path link = folder / "link.genesis";
  fs::create_symlink(path, link);
  save_file(sample(), link.string());
  CHECK(fs::is_symlink(link) && file_bytes(path) == encode(sample()));
  // The file and the link, and no temporary file left behind.
  CHECK(std::distance(fs::directory_iterator(folder), fs::directory_iterator()) == 2);
  CHECK_THROWS(std::system_error, save_file(sample(), (folder / "missing" / "x.genesis").string()));
  const std::string long_name = (folder / std::string(250, 'n')).string();  // temporary name fits 255 bytes
  save_file(sample(), long_name);
  CHECK(file_bytes(long_name) == encode(sample()));
  fs::remove_all(folder);
}

TEST(replacing_a_large_file_releases_the_old_one_and_keeps_the_new_one) {
  // Files of 64 MB and more are released on a background thread after the rename
  // (checkpoint_file.cpp): the new file must be complete, the folder must hold only it, and a
  // failed save over it must still keep it.
  const fs::path folder = scratch_folder("large");
  const std::string path = (folder / "big.genesis").string();
  auto big = [](unsigned char fill) {
    Document doc;
    doc.arrays.push_back(
        {genesis::DType::Float32, {int64_t(17) << 20}, std::vector<unsigned char>(size_t(68) << 20, fill)});
    doc.root = Value::array_ref(0);
    return doc;
  };
  for (unsigned char fill : {1, 2, 3}) {
    save_file(big(fill), path);
    const Document back = load_file(path);
    CHECK(back.arrays.size() == 1 && back.arrays[0].bytes == big(fill).arrays[0].bytes);
  }
  Document bad = big(4);
  bad.arrays[0].bytes.pop_back();
  CHECK_THROWS(std::invalid_argument, save_file(bad, path));
  CHECK(load_file(path).arrays[0].bytes[12345] == 3);
  CHECK(std::distance(fs::directory_iterator(folder), fs::directory_iterator()) == 1);
  fs::remove_all(folder);
}

TEST(concurrent_readers_see_the_old_or_the_new_file_only) {
  const fs::path folder = scratch_folder("concurrent");
  const std::string path = (folder / "shared.genesis").string();
  std::vector<Document> versions(2);
  for (size_t v = 0; v < 2; ++v) {  // 4 MiB each, so that each save takes a while
    versions[v].arrays.push_back(
        {genesis::DType::Float32, {1 << 20}, std::vector<unsigned char>(4 << 20, (unsigned char)(v + 1))});
    versions[v].root = Value::array_ref(0);
  }
  save_file(versions[0], path);
  std::atomic<bool> done{false};
  std::atomic<int> loads{0}, wrong{0};
  std::thread reader([&] {
    while (!done) {
      try {
        const Document d = load_file(path);
        const unsigned char first = d.arrays.at(0).bytes.at(0);
        if ((first != 1 && first != 2) || d.arrays[0].bytes != versions[first - 1].arrays[0].bytes) ++wrong;
      } catch (const std::exception&) {
        ++wrong;  // a torn or missing file
      }
      ++loads;
    }
  });
  for (int i = 1; i <= 40; ++i) save_file(versions[i % 2], path);
  while (loads < 2) std::this_thread::yield();
  done = true;
  reader.join();
  CHECK(wrong == 0);
  fs::remove_all(folder);
}

TEST(load_file_reads_from_a_pipe) {
  const fs::path folder = scratch_folder("pipe");
  const std::string fifo = (folder / "fifo").string();
  CHECK(mkfifo(fifo.c_str(), 0600) == 0);
  const std::vector<unsigned char> bytes = encode(sample());
  std::thread writer([&] {
    std::ofstream out(fifo, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  });
  const Document loaded = load_file(fifo);
  writer.join();
  CHECK(encode(loaded) == bytes);
  // save_file into a named pipe writes through it (there is nothing to replace atomically).
  std::thread saver([&] { save_file(sample(), fifo); });
  const Document again = load_file(fifo);
  saver.join();
  CHECK(encode(again) == bytes);
  CHECK(fs::is_fifo(fifo));
  fs::remove_all(folder);
}

// The corpus shared with the Python reader's tests (tests/data/checkpoint_corpus, made by
// tests/data/make_checkpoint_corpus.py): the same verdict on every file.
TEST(judges_the_shared_corpus_as_the_python_reader_does) {
  size_t invalid = 0, valid = 0;
  for (const auto& entry : fs::directory_iterator(fs::path(GENESIS_CHECKPOINT_CORPUS) / "invalid")) {
    ++invalid;
    bool rejected = false;
    try {
      load_file(entry.path().string());
    } catch (const UnsupportedContent&) {
    } catch (const CheckpointError&) {
      rejected = true;
    }
    if (!rejected) check::fail(__FILE__, __LINE__, "accepted " + entry.path().string());
  }
  for (const auto& entry : fs::directory_iterator(fs::path(GENESIS_CHECKPOINT_CORPUS) / "valid")) {
    ++valid;
    try {
      load_file(entry.path().string());
    } catch (const UnsupportedContent&) {
    } catch (const CheckpointError& e) {
      check::fail(__FILE__, __LINE__, std::string("rejected a valid file: ") + e.what());
    }
  }
  CHECK(invalid >= 50 && valid >= 5);
}

// The writer refuses documents that no reader would accept, before writing anything.
TEST(encode_refuses_documents_the_readers_would_reject) {
  Document doc;
  doc.root = Value::of(std::string("bad \xff byte"));
  CHECK_THROWS(std::invalid_argument, encode(doc));
  doc.root = Value::of(std::string("h\xc3\xa9 \xed\xa0\x80"));  // UTF-8 with a lone surrogate: kept
  CHECK(decode(encode(doc).data(), encode(doc).size()).root.text == doc.root.text);
  Value dict = Value::dict();
  dict.set(Value::of(int64_t(1)), Value::none());
  dict.set(Value::of(1.0), Value::none());  // Python: 1 == 1.0, one key
  doc.root = dict;
  CHECK_THROWS(std::invalid_argument, encode(doc));
  dict = Value::dict();
  dict.set(Value::list(), Value::none());
  doc.root = dict;
  CHECK_THROWS(std::invalid_argument, encode(doc));
  Value deep = Value::list();
  for (int i = 0; i < 100; ++i) {
    Value outer = Value::list();
    outer.items.push_back(std::move(deep));
    deep = std::move(outer);
  }
  doc.root = deep;  // 101 nested lists
  CHECK_THROWS(std::invalid_argument, encode(doc));
  doc.root = deep.items[0];  // 100: the limit
  CHECK(decode(encode(doc).data(), encode(doc).size()).root.kind == Value::Kind::List);
  doc.root = Value::array_ref(0);  // no such array
  CHECK_THROWS(std::invalid_argument, encode(doc));
}

// The CUDA backend's launch geometry, on the host (no GPU, no nvcc): over thousands of random
// tensor lists, the tables cover every element of every tensor exactly once (through the same
// per-block ranges and thread strides the kernels use), take the 16-byte path only where all of
// a tensor's arrays are aligned, stay within the table limits, and list each tensor's step
// counter for exactly one increment per step, empty tensors included.
#include <cuda/table_builder.h>

#include <map>
#include <random>
#include <set>
#include <vector>

#include "check.h"

namespace {

using genesis::TensorSlots;
using namespace genesis::cuda;

// Fake device addresses: never dereferenced, only packed and checked for alignment.
void* address(std::mt19937_64& rng, int elem_bytes, bool aligned) {
  const uint64_t base = (uint64_t(1) << 40) + (rng() % (uint64_t(1) << 30)) * 256;
  const uint64_t misalign = aligned ? 0 : uint64_t(elem_bytes) * (1 + rng() % (kVec - 1));
  return reinterpret_cast<void*>(base + misalign);
}

struct RandomList {
  std::vector<TensorSlots> slots;
  std::vector<float> steps;  // addresses only
  int param_bytes, state_bytes;
  std::vector<bool> aligned;
};

// sizes 0..3 chunks (a few far larger, split across tables), more than a table's worth of
// tensors at times, some arrays unaligned.
RandomList random_list(std::mt19937_64& rng, bool huge_allowed) {
  RandomList l;
  const int bytes[] = {2, 4, 8};
  l.param_bytes = bytes[rng() % 3];
  l.state_bytes = l.param_bytes == 8 ? 8 : (rng() % 2 ? 4 : 2);
  const int count = rng() % 4 == 0 ? 200 + int(rng() % 400) : 1 + int(rng() % 40);
  l.slots.resize(count);
  l.steps.resize(count);
  for (int t = 0; t < count; ++t) {
    TensorSlots& s = l.slots[t];
    const int kind = int(rng() % 10);
    if (kind == 0)
      s.numel = 0;
    else if (kind < 4)
      s.numel = 1 + int64_t(rng() % 16);
    else if (huge_allowed && kind == 9 && rng() % 8 == 0)
      s.numel = kChunk * (kTableBlocks + int64_t(rng() % 3000)) + int64_t(rng() % 7);
    else
      s.numel = int64_t(rng() % (3 * kChunk + 1));
    const bool all_aligned = rng() % 3 != 0;
    auto maybe = [&](int b) { return address(rng, b, all_aligned || rng() % 4 != 0); };
    s.param = maybe(l.param_bytes);
    s.grad = maybe(l.param_bytes);
    const int states = int(rng() % 4);
    for (int k = 0; k < states; ++k) s.state[k] = maybe(l.state_bytes);
    if (l.param_bytes == 2 && rng() % 2) s.master = static_cast<float*>(maybe(4));
    s.step = rng() % 5 == 0 ? nullptr : &l.steps[t];
    s.id = uint64_t(t);
    s.fresh = rng() % 2;
  }
  return l;
}

bool all_aligned(const TensorSlots& s, int param_bytes, int state_bytes) {
  auto ok = [](const void* p, int b) { return reinterpret_cast<uintptr_t>(p) % (uintptr_t(b) * kVec) == 0; };
  bool r = ok(s.param, param_bytes) && ok(s.grad, param_bytes) && ok(s.master, 4);
  for (const void* p : s.state) r = r && ok(p, state_bytes);
  return r;
}

// Checks one list; with `elements`, also simulates every thread of every block.
void check_list(const RandomList& l, bool elements) {
  const int64_t count = int64_t(l.slots.size());
  std::vector<TableTensor> views;
  for (const TensorSlots& s : l.slots) views.push_back({&s, l.param_bytes, l.state_bytes});
  const std::vector<BuiltTable> tables = build_tables(views.data(), count);
  // chunk coverage per tensor (by id), and element coverage when simulated
  std::vector<std::vector<int>> chunk_hits(count);
  std::vector<std::vector<uint8_t>> element_hits(count);
  for (int64_t t = 0; t < count; ++t) {
    chunk_hits[t].assign(size_t((l.slots[t].numel + kChunk - 1) / kChunk), 0);
    if (elements) element_hits[t].assign(size_t(l.slots[t].numel), 0);
  }
  int64_t complete_before = 0;
  for (const BuiltTable& b : tables) {
    CHECK(b.blocks >= 1 && b.blocks <= kTableBlocks);
    CHECK(b.complete >= complete_before && b.complete <= count);
    complete_before = b.complete;
    std::set<int> slots_used;
    for (int blk = 0; blk < b.blocks; ++blk) {
      const int slot = b.table.block_tensor[blk];
      CHECK(slot < kTableTensors);
      slots_used.insert(slot);
      const int64_t t = int64_t(b.table.id[slot]);
      CHECK(t >= 0 && t < count);
      const TensorSlots& s = l.slots[size_t(t)];
      // the slot holds this tensor's arrays, and the vector path only when all are aligned
      CHECK(b.table.ptr[0][slot] == s.param && b.table.ptr[1][slot] == s.grad && b.table.ptr[2][slot] == s.master);
      CHECK(b.table.ptr[3][slot] == s.state[0] && b.table.ptr[4][slot] == s.state[1] &&
            b.table.ptr[5][slot] == s.state[2]);
      CHECK(b.table.numel[slot] == s.numel && b.table.step[slot] == s.step);
      CHECK(((b.table.flags[slot] & kVectorPath) != 0) == all_aligned(s, l.param_bytes, l.state_bytes));
      CHECK(((b.table.flags[slot] & kFresh) != 0) == s.fresh);
      const int64_t c = b.table.block_chunk[blk];
      CHECK(c >= 0 && c < int64_t(chunk_hits[size_t(t)].size()));
      if (c < 0 || c >= int64_t(chunk_hits[size_t(t)].size())) continue;
      ++chunk_hits[size_t(t)][size_t(c)];
      const BlockRange r = block_range(b.table, blk);
      CHECK(r.tensor == slot && r.begin == c * kChunk && r.end <= s.numel && r.begin < r.end);
      CHECK(r.packs_end >= r.begin && r.packs_end <= r.end && (r.packs_end - r.begin) % kVec == 0);
      CHECK(r.end - r.packs_end < kVec || (b.table.flags[slot] & kVectorPath) == 0);
      if (!elements) continue;
      std::vector<uint8_t>& hits = element_hits[size_t(t)];
      for (int x = 0; x < kThreads; ++x) {
        for (int64_t i = r.begin + int64_t(x) * kVec; i < r.packs_end; i += int64_t(kThreads) * kVec)
          for (int k = 0; k < kVec; ++k) ++hits.at(size_t(i + k));  // at(): a range past the end fails, not corrupts
        for (int64_t j = r.packs_end + x; j < r.end; j += kThreads) ++hits.at(size_t(j));
      }
    }
    CHECK(int(slots_used.size()) <= kTableTensors);
  }
  CHECK(count == 0 || (tables.empty() ? true : tables.back().complete == count));
  for (int64_t t = 0; t < count; ++t) {
    for (int h : chunk_hits[size_t(t)]) CHECK(h == 1);
    for (uint8_t h : element_hits[size_t(t)]) CHECK(h == 1);
  }
  // Step counters: each non-null one listed exactly once, empty tensors included.
  std::map<const float*, int> listed;
  for (const StepList& list : build_step_lists(l.slots.data(), count)) {
    CHECK(list.count >= 1 && list.count <= kStepListSize);
    for (int i = 0; i < list.count; ++i) ++listed[list.step[i]];
  }
  size_t expected = 0;
  for (const TensorSlots& s : l.slots) {
    if (!s.step) continue;
    ++expected;
    CHECK(listed[s.step] == 1);
  }
  CHECK(listed.size() == expected);
}

}  // namespace

TEST(launch_geometry_covers_every_element_once) {
  std::mt19937_64 rng(2024);
  for (int i = 0; i < 60; ++i) check_list(random_list(rng, /*huge_allowed=*/false), /*elements=*/true);
}

TEST(launch_geometry_over_thousands_of_lists) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 3000; ++i) check_list(random_list(rng, /*huge_allowed=*/true), /*elements=*/false);
}

TEST(launch_geometry_splits_a_tensor_across_tables) {
  // One tensor of more chunks than a table holds, between two small ones: it continues in
  // slot 0 of the next table with the same arrays, and the step list still has it once.
  std::vector<float> steps(3);
  std::vector<TensorSlots> slots(3);
  for (int t = 0; t < 3; ++t) {
    slots[t].param = reinterpret_cast<void*>(uintptr_t(1) << (40 + t));
    slots[t].grad = reinterpret_cast<void*>((uintptr_t(1) << (40 + t)) + 4096);
    slots[t].step = &steps[t];
    slots[t].id = uint64_t(t);
  }
  slots[0].numel = 5;
  slots[1].numel = kChunk * (2 * kTableBlocks + 10) + 3;
  slots[2].numel = 0;
  RandomList l{slots, steps, 4, 4, {}};
  for (TensorSlots& s : l.slots) s.step = &l.steps[size_t(s.id)];
  check_list(l, false);
  std::vector<TableTensor> views;
  for (const TensorSlots& s : l.slots) views.push_back({&s, 4, 4});
  const std::vector<BuiltTable> tables = build_tables(views.data(), 3);
  CHECK(tables.size() == 3);
  CHECK(tables[0].blocks == kTableBlocks && tables[1].blocks == kTableBlocks && tables[2].blocks == 12);
  CHECK(tables[1].table.block_tensor[0] == 0 && tables[1].table.ptr[0][0] == l.slots[1].param);
  CHECK(tables[0].complete == 1 && tables[1].complete == 1 && tables[2].complete == 3);
}

TEST(launch_geometry_fills_a_table_with_tensors) {
  // kTableTensors + 1 one-element tensors: two tables, the first full of tensors.
  std::vector<TensorSlots> slots(kTableTensors + 1);
  for (size_t t = 0; t < slots.size(); ++t) {
    slots[t].numel = 1;
    slots[t].param = reinterpret_cast<void*>((uintptr_t(1) << 40) + 16 * t);
    slots[t].grad = slots[t].param;
    slots[t].id = t;
  }
  std::vector<TableTensor> views;
  for (const TensorSlots& s : slots) views.push_back({&s, 4, 4});
  const std::vector<BuiltTable> tables = build_tables(views.data(), int64_t(slots.size()));
  CHECK(tables.size() == 2);
  CHECK(tables[0].blocks == kTableTensors && tables[1].blocks == 1);
  CHECK(tables[1].table.id[0] == uint64_t(kTableTensors));
}

TEST(launch_device_comes_from_the_first_nonempty_tensor) {
  // The device a call launches on (when its stream does not name one) is that of its first
  // non-empty tensor; a call of empty tensors asks a step counter; a call of nothing, nothing.
  float step_a = 0, step_b = 0;
  std::vector<TensorSlots> slots(3);
  slots[0].numel = 0;
  slots[0].param = reinterpret_cast<void*>(uintptr_t(0x1000));  // an empty tensor's stale pointer
  slots[0].step = &step_a;
  slots[1].numel = 0;
  slots[1].step = &step_b;
  slots[2].numel = 7;
  slots[2].param = reinterpret_cast<void*>(uintptr_t(0x2000));
  CHECK(device_pointer(slots.data(), 3) == slots[2].param);
  CHECK(device_pointer(slots.data(), 2) == &step_a);
  slots[0].step = nullptr;
  CHECK(device_pointer(slots.data(), 2) == &step_b);
  CHECK(device_pointer(slots.data(), 0) == nullptr);
  std::vector<genesis::Buffer> buffers = {{reinterpret_cast<void*>(uintptr_t(0x3000)), 0},
                                          {reinterpret_cast<void*>(uintptr_t(0x4000)), 5}};
  CHECK(device_pointer(buffers.data(), 2) == buffers[1].data);
  CHECK(device_pointer(buffers.data(), 1) == nullptr);
}

TEST(launch_geometry_of_8bit_state) {
  // The 8-bit tables carry each state's block scales after the other slots, hold half the
  // tensors, and take the packed path only when the codes are 4-byte aligned too.
  std::vector<TensorSlots> slots(QuantTable::kMaxTensors + 1);
  std::vector<float> scales(3 * slots.size());
  for (size_t t = 0; t < slots.size(); ++t) {
    TensorSlots& s = slots[t];
    s.numel = 4096;
    s.param = reinterpret_cast<void*>((uintptr_t(1) << 40) + (uintptr_t(1) << 20) * t);
    s.grad = reinterpret_cast<char*>(s.param) + 65536;
    for (int k = 0; k < 2; ++k) {
      s.state[k] = reinterpret_cast<char*>(s.param) + 131072 + 8192 * k + (t == 3 && k == 1 ? 1 : 0);
      s.absmax[k] = &scales[3 * t + k];
    }
    s.id = t;
  }
  std::vector<TableTensor> views;
  for (const TensorSlots& s : slots) views.push_back({&s, 4, 1});
  const auto tables = build_tables<QuantTable>(views.data(), int64_t(slots.size()));
  CHECK(tables.size() == 2 && tables[0].blocks == QuantTable::kMaxTensors && tables[1].blocks == 1);
  for (int i = 0; i < QuantTable::kMaxTensors; ++i) {
    const QuantTable& q = tables[0].table;
    CHECK(q.ptr[3][i] == slots[size_t(i)].state[0] && q.ptr[4][i] == slots[size_t(i)].state[1]);
    CHECK(q.ptr[kSlots][i] == slots[size_t(i)].absmax[0] && q.ptr[kSlots + 1][i] == slots[size_t(i)].absmax[1]);
    CHECK(q.ptr[kSlots + 2][i] == nullptr);
    CHECK(((q.flags[i] & kVectorPath) != 0) == (i != 3));
  }
  CHECK(tables[1].table.ptr[kSlots][0] == slots.back().absmax[0]);
}

TEST(lanes_of_an_8bit_block_cover_it_once) {
  // Both lane layouts of quantized_kernel.cuh give every element of a block to one lane, and
  // a packed lane's kVec elements are adjacent and start on a multiple of kVec.
  for (const bool packed : {true, false}) {
    std::vector<int> hits(genesis::kQuantBlock, 0);
    for (int lane = 0; lane < 32; ++lane)
      for (int j = 0; j < kQuantPerLane; ++j) {
        const int i = packed ? lane_element<true>(lane, j) : lane_element<false>(lane, j);
        CHECK(i >= 0 && i < genesis::kQuantBlock);
        if (i >= 0 && i < genesis::kQuantBlock) ++hits[size_t(i)];
        if (packed && j % kVec == 0) CHECK(i % kVec == 0 && lane_element<true>(lane, j + kVec - 1) == i + kVec - 1);
      }
    for (int h : hits) CHECK(h == 1);
  }
}

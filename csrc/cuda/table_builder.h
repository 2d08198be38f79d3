// Launch geometry of the CUDA backend, in plain C++ (no CUDA headers): how a list of tensors is
// packed into kernel-argument tables, which tensors take the 16-byte vector path, and which step
// counters a step advances. tests/cpp/test_launch_geometry.cpp checks it on the host.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "genesis/quantized.h"
#include "genesis/tensor_slots.h"

namespace genesis::cuda {

// NOTE: [tensor tables]
// A table is passed by value as the kernel's argument (no upload, no allocation). It lists up
// to kTableTensors tensors (half that with 8-bit state's block scales) with all their array
// pointers, and up to kTableBlocks blocks, each naming a tensor and a chunk of kChunk elements
// of it; a tensor may span several tables.
// Since CUDA 12.1 a kernel on sm_70 or newer takes up to 32764 bytes of arguments, so a table
// holds 8 times what the classic 4 KB limit allowed: a step of a few hundred tensors is one
// launch. The kernels read the table as a __grid_constant__ (never copied per thread).
constexpr int kTableTensors = 256;
constexpr int kTableBlocks = 2048;
constexpr int64_t kChunk = 1 << 16;
constexpr int kThreads = 512;
constexpr int kVec = 4;    // elements per thread per access: 16 bytes of float32
constexpr int kSlots = 6;  // param, grad, master, state 0..2
constexpr size_t kKernelArgBytes = 32764;

// Per-tensor flags of a table.
constexpr uint8_t kVectorPath = 1;  // every array is aligned to kVec elements: packed accesses
constexpr uint8_t kFresh = 2;       // TensorSlots::fresh (decided on the host)

template <int kArrays, int kTensors>
struct Table {
  static constexpr int kArrayCount = kArrays;
  static constexpr int kMaxTensors = kTensors;
  void* ptr[kArrays][kTensors];
  int64_t numel[kTensors];
  // The tensor's device counter (TensorSlots::step): its step for rules that count steps; for
  // the others (SGD) the number of steps applied since its state was created, from which the
  // device decides the first step. Null: none.
  float* step[kTensors];
  uint64_t id[kTensors];
  uint8_t flags[kTensors];
  uint8_t block_tensor[kTableBlocks];  // kTensors <= 256
  int32_t block_chunk[kTableBlocks];   // int32 chunks of 2^16: tensors up to 2^47 elements
  static_assert(kTensors <= 256, "block_tensor is a uint8_t");
};
using TensorTable = Table<kSlots, kTableTensors>;
// 8-bit state (quantized_kernel.cuh): the same slots, then each state's block scales
// (TensorSlots::absmax); half the tensors, so that it still fits the argument limit.
constexpr int kQuantSlots = kSlots + kMaxStates;
using QuantTable = Table<kQuantSlots, kTableTensors / 2>;
// Room is left for the rule's options and the StepConfig launched beside the table.
static_assert(sizeof(TensorTable) + 1024 <= kKernelArgBytes, "a table must fit the kernel argument limit");
static_assert(sizeof(QuantTable) + 1024 <= kKernelArgBytes, "a table must fit the kernel argument limit");

// Every step counter of one update call, advanced by one launch after all update launches.
constexpr int kStepListSize = 992;
struct StepList {
  float* step[kStepListSize];
  void* state[kMaxStates][kStepListSize];  // each tensor's state slots: its scalars follow its arrays
  int count;
};
static_assert(sizeof(StepList) + 512 <= kKernelArgBytes,
              "a step list (and the rule's options) must fit the kernel argument limit");

inline bool aligned_to(const void* p, size_t bytes) {
  return p == nullptr || reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// The elements block `b` of a table covers: [begin, end) of its tensor, of which
// [begin, packs_end) go in packs of kVec (16-byte accesses, vector-path tensors only; chunks
// start at multiples of kVec) and the rest one element per thread. Thread x of kThreads takes
// the packs at begin + x * kVec + k * kThreads * kVec and the elements at
// packs_end + x + k * kThreads: consecutive threads on consecutive addresses (coalesced).
struct BlockRange {
  int tensor;
  int64_t begin, packs_end, end;
};
template <typename TableT>
GENESIS_HD BlockRange block_range(const TableT& table, int b) {
  const int t = table.block_tensor[b];
  const int64_t begin = int64_t(table.block_chunk[b]) * kChunk;
  const int64_t end = begin + kChunk < table.numel[t] ? begin + kChunk : table.numel[t];
  const int64_t packs_end = (table.flags[t] & kVectorPath) ? begin + (end - begin) / kVec * kVec : begin;
  return {t, begin, packs_end, end};
}

// 8-bit state (quantized_kernel.cuh): a warp takes one block of kQuantBlock elements at a
// time, kQuantPerLane elements per lane. lane_element is the block offset of a lane's element
// j. Packed (a tensor on the vector path, a whole block): pack h = j / kVec is kVec adjacent
// elements at h * 32 * kVec + lane * kVec, so that the warp's access of pack h is one
// contiguous run. Else lane + 32 j (one element per lane per access, still contiguous).
constexpr int kQuantPerLane = kQuantBlock / 32;
constexpr int kQuantPacks = kQuantPerLane / kVec;
static_assert(kQuantPerLane % kVec == 0 && kChunk % kQuantBlock == 0, "blocks of state tile lanes and chunks");
template <bool kPacked>
GENESIS_HD int lane_element(int lane, int j) {
  return kPacked ? (j / kVec) * (32 * kVec) + lane * kVec + j % kVec : lane + 32 * j;
}

// One tensor of an update as the table builder sees it: its TensorSlots and the element sizes
// of its parameter and state arrays (master copies are float32).
struct TableTensor {
  const TensorSlots* slots;
  int param_bytes;
  int state_bytes;
  int64_t numel() const { return slots->numel; }
  bool vector_path() const {
    const TensorSlots& s = *slots;
    bool ok = aligned_to(s.param, size_t(param_bytes) * kVec) && aligned_to(s.grad, size_t(param_bytes) * kVec) &&
              aligned_to(s.master, sizeof(float) * kVec);
    for (int k = 0; k < kMaxStates; ++k) ok = ok && aligned_to(s.state[k], size_t(state_bytes) * kVec);
    return ok;
  }
  template <typename TableT>
  void fill(TableT& table, int i) const {
    const TensorSlots& s = *slots;
    table.ptr[0][i] = s.param;
    table.ptr[1][i] = const_cast<void*>(s.grad);
    table.ptr[2][i] = s.master;
    for (int k = 0; k < kMaxStates; ++k) table.ptr[3 + k][i] = s.state[k];
    if constexpr (TableT::kArrayCount == kQuantSlots)
      for (int k = 0; k < kMaxStates; ++k) table.ptr[kSlots + k][i] = s.absmax[k];
    table.numel[i] = s.numel;
    table.step[i] = s.step;
    table.id[i] = s.id;
    table.flags[i] = uint8_t((vector_path() ? kVectorPath : 0) | (s.fresh ? kFresh : 0));
  }
};

// A gradient buffer of the clip reductions: one array in slot 0.
struct BufferTensor {
  const Buffer* buffer;
  int elem_bytes;
  int64_t numel() const { return buffer->numel; }
  bool vector_path() const { return aligned_to(buffer->data, size_t(elem_bytes) * kVec); }
  void fill(TensorTable& table, int i) const {
    for (int k = 0; k < kSlots; ++k) table.ptr[k][i] = nullptr;
    table.ptr[0][i] = buffer->data;
    table.numel[i] = buffer->numel;
    table.step[i] = nullptr;
    table.id[i] = 0;
    table.flags[i] = vector_path() ? kVectorPath : 0;
  }
};

// One launch: a table, its number of blocks, and how far through the input list it reaches
// (tensors [0, complete) have all their chunks in this table or an earlier one).
template <typename TableT>
struct BuiltTableOf {
  TableT table;
  int blocks;
  int64_t complete;
};
using BuiltTable = BuiltTableOf<TensorTable>;

// Packs `count` tensors (empty ones take no block) into tables, in input order. Built in full
// before anything is launched, so that a failure to build changes nothing.
template <typename TableT = TensorTable, typename Tensor>
std::vector<BuiltTableOf<TableT>> build_tables(const Tensor* tensors, int64_t count) {
  std::vector<BuiltTableOf<TableT>> out;
  bool open = false;  // out.back() takes more blocks
  int n_tensors = 0;
  for (int64_t t = 0; t < count; ++t) {
    const Tensor& x = tensors[t];
    if (x.numel() == 0) continue;
    const int64_t chunks = (x.numel() + kChunk - 1) / kChunk;
    for (int64_t c = 0; c < chunks; ++c) {
      if (!open) {
        out.emplace_back();
        out.back().blocks = 0;
        n_tensors = 0;
        open = true;
      }
      BuiltTableOf<TableT>& b = out.back();
      // A tensor cut between tables continues in a slot of the next one.
      if (c == 0 || b.blocks == 0) x.fill(b.table, n_tensors++);
      b.table.block_tensor[b.blocks] = static_cast<uint8_t>(n_tensors - 1);
      b.table.block_chunk[b.blocks] = static_cast<int32_t>(c);
      ++b.blocks;
      const bool tensor_done = c + 1 == chunks;
      b.complete = tensor_done ? t + 1 : t;
      if (b.blocks == kTableBlocks || (tensor_done && n_tensors == TableT::kMaxTensors)) open = false;
    }
  }
  // Trailing empty tensors are complete once the last table is.
  if (!out.empty())
    while (out.back().complete < count && tensors[out.back().complete].numel() == 0) ++out.back().complete;
  return out;
}

// The array a call learns its device from (when its stream does not say): the first non-empty
// tensor's parameter, else a step counter (a list of empty tensors still counts steps), else
// none (nothing to launch).
inline const void* device_pointer(const TensorSlots* tensors, int64_t count) {
  for (int64_t t = 0; t < count; ++t)
    if (tensors[t].numel > 0 && tensors[t].param) return tensors[t].param;
  for (int64_t t = 0; t < count; ++t)
    if (tensors[t].step) return tensors[t].step;
  return nullptr;
}
inline const void* device_pointer(const Buffer* buffers, int64_t count) {
  for (int64_t t = 0; t < count; ++t)
    if (buffers[t].numel > 0 && buffers[t].data) return buffers[t].data;
  return nullptr;
}

// The step counters of `count` tensors (every tensor, empty ones included, as on the CPU and in
// torch), in lists of at most kStepListSize.
inline std::vector<StepList> build_step_lists(const TensorSlots* tensors, int64_t count) {
  std::vector<StepList> lists;
  for (int64_t t = 0; t < count; ++t) {
    if (!tensors[t].step) continue;
    if (lists.empty() || lists.back().count == kStepListSize) {
      lists.emplace_back();
      lists.back().count = 0;
    }
    StepList& l = lists.back();
    for (int k = 0; k < kMaxStates; ++k) l.state[k][l.count] = tensors[t].state[k];
    l.step[l.count++] = tensors[t].step;
  }
  return lists;
}

}  // namespace genesis::cuda

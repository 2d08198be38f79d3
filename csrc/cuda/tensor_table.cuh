// Multi-tensor apply: packs many tensors into kernel-argument tables and launches one kernel per
// table, so a step costs a few launches, not one per tensor.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace genesis::cuda {

// NOTE: [tensor tables]
// A table is passed by value as the kernel's argument (no upload, no allocation). It lists up
// to kTableTensors tensors with all their array pointers, and up to kTableBlocks blocks, each
// naming a tensor and a chunk of kChunk elements of it; a tensor may span several tables.
// The sizes keep the table under the classic 4 KB argument limit.
constexpr int kTableTensors = 32;
constexpr int kTableBlocks = 256;
constexpr int64_t kChunk = 1 << 16;
constexpr int kThreads = 512;
constexpr int kSlots = 6;  // param, grad, master, state 0..2

struct TensorTable {
  void* ptr[kSlots][kTableTensors];
  int64_t numel[kTableTensors];
  float* step[kTableTensors];
  uint64_t id[kTableTensors];
  uint8_t fresh[kTableTensors];
  uint8_t block_tensor[kTableBlocks];
  int32_t block_chunk[kTableBlocks];  // int32 chunks of 2^16: tensors up to 2^47 elements
};

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("genesis CUDA ") + what + ": " + cudaGetErrorString(e));
}

// Fills tables from `count` tensors and calls launch(table, blocks) for each full or final
// table. `slots(t, ptrs)` writes tensor t's kSlots pointers.
template <typename Tensor, typename Launch>
void for_each_table(const Tensor* tensors, int64_t count, Launch&& launch) {
  TensorTable table{};
  int n_tensors = 0, n_blocks = 0;
  for (int64_t t = 0; t < count; ++t) {
    const Tensor& x = tensors[t];
    if (x.numel == 0) continue;
    x.fill(table, n_tensors);
    const int64_t chunks = (x.numel + kChunk - 1) / kChunk;
    for (int64_t c = 0; c < chunks; ++c) {
      table.block_tensor[n_blocks] = static_cast<uint8_t>(n_tensors);
      table.block_chunk[n_blocks] = static_cast<int32_t>(c);
      ++n_blocks;
      const bool tensor_done = c + 1 == chunks;
      if (n_blocks == kTableBlocks || (tensor_done && n_tensors + 1 == kTableTensors)) {
        launch(table, n_blocks);
        n_blocks = 0;
        // A tensor cut between tables continues at slot 0 of the next one.
        if (!tensor_done) {
          x.fill(table, 0);
          n_tensors = 0;
        } else {
          n_tensors = -1;
        }
      }
    }
    ++n_tensors;
  }
  if (n_blocks > 0) launch(table, n_blocks);
}

}  // namespace genesis::cuda

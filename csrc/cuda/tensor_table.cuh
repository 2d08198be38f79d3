// Multi-tensor apply on the device: the tables of table_builder.h, the device guard every entry
// point takes, and the launch loop that says how far a failed step got.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "table_builder.h"

namespace genesis::cuda {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("genesis CUDA ") + what + ": " + cudaGetErrorString(e));
}

// Makes the tensors' device current for the scope, then restores the caller's. Kernels launch
// on the current device, which is not necessarily the tensors' (a param group on cuda:1 while
// cuda:0 is current): without this a non-default stream fails to launch and the default stream
// runs on the wrong device. The device is the stream's when the stream is not a default one,
// else that of `ptr`, a device array of the call (none: nothing to launch on, nothing changes).
// While the stream is being captured into a CUDA graph nothing is queried or changed: the
// capturing code has made the stream's device current (torch.cuda.graph does), and torch's
// global capture mode refuses cudaStreamGetDevice there, which invalidates the capture (seen on
// an H200, CUDA 13.0: "operation not permitted when stream is capturing").
class DeviceGuard {
 public:
  DeviceGuard(void* stream, const void* ptr) {
    int device = -1;
    if (stream) {
      cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
      check(cudaStreamIsCapturing(static_cast<cudaStream_t>(stream), &capture), "capture status of the stream");
      if (capture != cudaStreamCaptureStatusNone) return;
#if CUDART_VERSION >= 12080
      check(cudaStreamGetDevice(static_cast<cudaStream_t>(stream), &device), "device of the stream");
#endif
    }
    if (device < 0) {
      if (!ptr) return;
      cudaPointerAttributes attr{};
      check(cudaPointerGetAttributes(&attr, ptr), "device of a tensor");
      if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
        throw std::invalid_argument("genesis CUDA: an array passed to the CUDA backend is not device memory");
      device = attr.device;
    }
    check(cudaGetDevice(&previous_), "current device");
    if (previous_ == device) {
      previous_ = -1;
      return;
    }
    check(cudaSetDevice(device), "set device");
  }
  ~DeviceGuard() {
    if (previous_ >= 0) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

// Launches every table through launch(table, blocks), checking each launch. If one fails, the
// error names how many leading tensors of the call the earlier launches updated in full.
template <typename Built, typename Launch>
void launch_tables(const std::vector<Built>& tables, const char* op, Launch&& launch) {
  for (size_t i = 0; i < tables.size(); ++i) {
    launch(tables[i].table, tables[i].blocks);
    const cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) continue;
    const int64_t done = i == 0 ? 0 : tables[i - 1].complete;
    throw std::runtime_error(std::string("genesis CUDA ") + op + ": launch " + std::to_string(i + 1) + " of " +
                             std::to_string(tables.size()) + " failed (" + cudaGetErrorString(e) + "); " +
                             (done == 0 ? std::string("no tensor was updated")
                                        : "tensors 0.." + std::to_string(done - 1) + " of this call were updated") +
                             ", and no step counter was advanced");
  }
}

}  // namespace genesis::cuda

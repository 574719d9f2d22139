// What the CUDA kernel benchmarks (cuda_kernels_bench, decode_kernels_bench)
// share: device memory that lives as long as the benchmark, timing of a
// launcher by CUDA events on one stream (mean of kIters calls after kWarmup),
// and the device line with the peak memory bandwidth the GB/s figures are
// compared with. Not thread-safe.
#ifndef KILN_BENCH_CUDA_BENCH_H_
#define KILN_BENCH_CUDA_BENCH_H_

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "base/status.h"
#include "kernels/cuda_check.h"

namespace kiln::bench {

constexpr int kWarmup = 3;
constexpr int kIters = 20;

// Device memory filled with the byte 0x3c, which reads as about 0.0115 both
// as bf16 and as float. An allocation failure ends the benchmark.
class Arena {
 public:
  Arena() = default;
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  ~Arena() {
    for (void* p : blocks_) cudaFree(p);
  }
  template <class T>
  T* Take(int64_t count) {
    void* p = nullptr;
    const auto bytes = static_cast<std::size_t>(count) * sizeof(T);
    if (cudaMalloc(&p, bytes) != cudaSuccess || cudaMemset(p, 0x3c, bytes) != cudaSuccess) {
      std::fprintf(stderr, "cannot allocate %zu bytes of device memory: %s\n", bytes,
                   cudaGetErrorString(cudaGetLastError()));
      std::exit(1);
    }
    blocks_.push_back(p);
    return static_cast<T*>(p);
  }

 private:
  std::vector<void*> blocks_;
};

class Bench {
 public:
  Bench(cudaStream_t stream, double peak_gbs) : stream_(stream), peak_gbs_(peak_gbs) {}

  // A memory-bound kernel that moves at least `bytes` per call.
  void Bandwidth(const std::string& name, double bytes, const std::function<Status()>& call) {
    const double ms = Time(name, call);
    if (ms <= 0) return;
    const double gbs = bytes / (ms * 1e-3) / 1e9;
    std::printf("%-40s %10.1f us %9.0f GB/s %6.1f%% of peak\n", name.c_str(), ms * 1e3, gbs,
                100.0 * gbs / peak_gbs_);
  }

  // A GEMM-bound kernel doing `flops` floating-point operations per call.
  void Flops(const std::string& name, double flops, const std::function<Status()>& call) {
    const double ms = Time(name, call);
    if (ms <= 0) return;
    std::printf("%-40s %10.1f us %9.1f TFLOP/s\n", name.c_str(), ms * 1e3,
                flops / (ms * 1e-3) / 1e12);
  }

  bool failed() const { return failed_; }

 private:
  // Mean milliseconds per call, or -1 (reported) when a call fails.
  double Time(const std::string& name, const std::function<Status()>& call) {
    cudaEvent_t start = nullptr, stop = nullptr;
    auto check = [](cudaError_t err, const char* what) {
      return gpu::CudaStatus(err, what, __FILE__, __LINE__);
    };
    Status s = check(cudaEventCreate(&start), "cudaEventCreate");
    if (s.ok()) s = check(cudaEventCreate(&stop), "cudaEventCreate");
    for (int i = 0; s.ok() && i < kWarmup; ++i) s = call();
    if (s.ok()) s = check(cudaEventRecord(start, stream_), "cudaEventRecord");
    for (int i = 0; s.ok() && i < kIters; ++i) s = call();
    if (s.ok()) s = check(cudaEventRecord(stop, stream_), "cudaEventRecord");
    if (s.ok()) s = check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    if (s.ok()) s = check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    if (start != nullptr) cudaEventDestroy(start);
    if (stop != nullptr) cudaEventDestroy(stop);
    if (!s.ok()) {
      std::printf("%-40s FAILED: %s\n", name.c_str(), s.ToString().c_str());
      failed_ = true;
      return -1;
    }
    return static_cast<double>(ms) / kIters;
  }

  cudaStream_t stream_;
  double peak_gbs_;
  bool failed_ = false;
};

// Why there is no device to measure, or empty.
inline std::string NoDevice() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    return std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
  }
  if (count == 0) return "cudaGetDeviceCount found 0 devices";
  return "";
}

inline int Attribute(cudaDeviceAttr attr) {
  int v = 0;
  return cudaDeviceGetAttribute(&v, attr, 0) == cudaSuccess ? v : 0;
}

// Makes device 0 current and prints its line and the command; returns its
// peak memory bandwidth in GB/s (two transfers per memory clock over the
// bus), or -1 (said on stdout) when the device cannot be opened.
inline double OpenDevice(const char* program, int argc, char** argv) {
  cudaDeviceProp prop{};
  if (cudaSetDevice(0) != cudaSuccess || cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
    std::printf("%s: cannot open device 0: %s\n", program, cudaGetErrorString(cudaGetLastError()));
    return -1;
  }
  const double mem_clock_khz = Attribute(cudaDevAttrMemoryClockRate);
  const double bus_bits = Attribute(cudaDevAttrGlobalMemoryBusWidth);
  const double peak_gbs = 2.0 * mem_clock_khz * 1e3 * (bus_bits / 8) / 1e9;
  std::printf("device: %s (sm_%d%d, %d SMs), memory clock %.0f MHz x %d-bit bus: peak %.0f GB/s\n",
              prop.name, prop.major, prop.minor, Attribute(cudaDevAttrMultiProcessorCount),
              mem_clock_khz / 1e3, static_cast<int>(bus_bits), peak_gbs);
  std::printf("command:");
  for (int i = 0; i < argc; ++i) std::printf(" %s", argv[i]);
  std::printf("\n");
  return peak_gbs;
}

}  // namespace kiln::bench

#endif  // KILN_BENCH_CUDA_BENCH_H_

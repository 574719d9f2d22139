#include "tests/kernels/cuda/gpu_check.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "kernels/cpu/matmul_bf16.h"
#include "kernels/cuda_check.h"

namespace kiln::kernels::cuda::test {
namespace {

[[noreturn]] void Die(const Status& s) {
  std::printf("FAILED: test harness: %s\n", s.ToString().c_str());
  std::exit(1);
}

void CheckCuda(cudaError_t err, const char* call) {
  Status s = gpu::CudaStatus(err, call, __FILE__, __LINE__);
  if (!s.ok()) Die(s);
}

template <class T>
DeviceArray<T> UploadBytes(const void* host, std::size_t n, bool misalign) {
  DeviceArray<T> d(n, misalign);
  CheckCuda(cudaMemcpy(d.get(), host, n * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
  return d;
}

}  // namespace

float RoundBf16(float x) { return cpu::Bf16ToFloat(cpu::FloatToBf16(x)); }

std::vector<float> RandomBf16(std::size_t n, float lo, float hi, std::mt19937& rng) {
  std::vector<float> v = RandomFloat(n, lo, hi, rng);
  for (float& x : v) x = RoundBf16(x);
  return v;
}

std::vector<float> RandomFloat(std::size_t n, float lo, float hi, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<int32_t> RandomTokens(std::size_t n, int vocab, std::mt19937& rng) {
  std::uniform_int_distribution<int32_t> dist(0, vocab - 1);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = dist(rng);
  return v;
}

template <class T>
DeviceArray<T>::DeviceArray(std::size_t n, bool misalign) : size_(n) {
  void* p = nullptr;
  CheckCuda(cudaMalloc(&p, (n + 1) * sizeof(T)), "cudaMalloc");
  base_ = static_cast<T*>(p);
  data_ = base_ + (misalign ? 1 : 0);
}

template <class T>
DeviceArray<T>::~DeviceArray() {
  if (base_ != nullptr) cudaFree(base_);
}

template class DeviceArray<bf16>;
template class DeviceArray<float>;
template class DeviceArray<int32_t>;
template class DeviceArray<char>;

DeviceArray<bf16> UploadBf16(const std::vector<float>& x, bool misalign) {
  std::vector<uint16_t> bits(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) bits[i] = cpu::FloatToBf16(x[i]);
  return UploadBytes<bf16>(bits.data(), bits.size(), misalign);
}

DeviceArray<float> Upload(const std::vector<float>& x) {
  return UploadBytes<float>(x.data(), x.size(), false);
}

DeviceArray<int32_t> Upload(const std::vector<int32_t>& x) {
  return UploadBytes<int32_t>(x.data(), x.size(), false);
}

std::vector<float> Download(const DeviceArray<bf16>& x) {
  std::vector<uint16_t> bits(x.size());
  CheckCuda(cudaMemcpy(bits.data(), x.get(), x.size() * sizeof(uint16_t), cudaMemcpyDeviceToHost),
            "cudaMemcpy");
  std::vector<float> v(x.size());
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = cpu::Bf16ToFloat(bits[i]);
  return v;
}

std::vector<float> Download(const DeviceArray<float>& x) {
  std::vector<float> v(x.size());
  CheckCuda(cudaMemcpy(v.data(), x.get(), x.size() * sizeof(float), cudaMemcpyDeviceToHost),
            "cudaMemcpy");
  return v;
}

bool Compare(const std::string& what, const std::vector<float>& got, const std::vector<float>& want,
             Tolerance tol) {
  if (got.size() != want.size() || got.empty()) {
    std::printf("  %s: FAILED: %zu values, want %zu\n", what.c_str(), got.size(), want.size());
    return false;
  }
  std::size_t failures = 0, worst = 0;
  double worst_used = -1;  // |err| / allowed of the worst element.
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], w = want[i];
    const double err = std::abs(g - w), allowed = tol.atol + tol.rtol * std::abs(w);
    const double used =
        err == 0 ? 0 : (allowed == 0 ? std::numeric_limits<double>::infinity() : err / allowed);
    if (!(err <= allowed)) ++failures;  // Also catches NaN.
    if (!(used <= worst_used)) {
      worst_used = used;
      worst = i;
    }
  }
  std::printf(
      "  %s: %s (%zu values; worst at %zu: got %.8g, want %.8g, %.3g of tolerance "
      "rtol %.1e atol %.1e)\n",
      what.c_str(), failures == 0 ? "ok" : "FAILED", got.size(), worst,
      static_cast<double>(got[worst]), static_cast<double>(want[worst]), worst_used, tol.rtol,
      tol.atol);
  if (failures > 0) std::printf("  %s: %zu values outside tolerance\n", what.c_str(), failures);
  return failures == 0;
}

bool Ok(const std::string& what, const Status& s) {
  if (s.ok()) return true;
  std::printf("  %s: FAILED: %s\n", what.c_str(), s.ToString().c_str());
  return false;
}

bool Sync(cudaStream_t stream) {
  return Ok("cudaStreamSynchronize", gpu::CudaStatus(cudaStreamSynchronize(stream),
                                                     "cudaStreamSynchronize", __FILE__, __LINE__));
}

}  // namespace kiln::kernels::cuda::test

// kernels/device.h with CUDA: device queries through the runtime API and the
// probe kernel.
#include <cuda_runtime.h>
#include <nccl.h>

#include <string>

#include <cublas_v2.h>

#include "kernels/cuda_check.h"
#include "kernels/device.h"

namespace kiln::gpu {
namespace {

// Writes the probe pattern; the CPU reference is ProbeReference.
__global__ void ProbeKernel(unsigned* out, std::size_t n, unsigned seed) {
  std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (i < n) out[i] = static_cast<unsigned>(i) * 2654435761u + seed;
}

std::string MajorMinor(int v, int major_div, int minor_div, int minor_mod) {
  return std::to_string(v / major_div) + "." + std::to_string((v / minor_div) % minor_mod);
}

}  // namespace

bool BuiltWithCuda() { return true; }

LibraryVersions GetLibraryVersions() {
  LibraryVersions v;
  int runtime = 0;
  if (cudaRuntimeGetVersion(&runtime) == cudaSuccess)
    v.cuda_runtime = MajorMinor(runtime, 1000, 10, 100);
  int driver = 0;
  if (cudaDriverGetVersion(&driver) == cudaSuccess && driver > 0) {
    v.cuda_driver = MajorMinor(driver, 1000, 10, 100);
  }
  int major = 0, minor = 0, patch = 0;
  if (cublasGetProperty(MAJOR_VERSION, &major) == CUBLAS_STATUS_SUCCESS &&
      cublasGetProperty(MINOR_VERSION, &minor) == CUBLAS_STATUS_SUCCESS &&
      cublasGetProperty(PATCH_LEVEL, &patch) == CUBLAS_STATUS_SUCCESS) {
    v.cublas = std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
  }
  int nccl = 0;
  if (ncclGetVersion(&nccl) == ncclSuccess) {
    v.nccl = std::to_string(nccl / 10000) + "." + std::to_string((nccl / 100) % 100) + "." +
             std::to_string(nccl % 100);
  }
  return v;
}

StatusOr<std::vector<DeviceInfo>> ListDevices() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) {
    cudaGetLastError();  // Clear the sticky error so later calls start clean.
    return std::vector<DeviceInfo>{};
  }
  KILN_CUDA_RETURN_IF_ERROR(err);
  std::vector<DeviceInfo> devices;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    KILN_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, i));
    char bus_id[32] = {};
    KILN_CUDA_RETURN_IF_ERROR(cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), i));
    devices.push_back(DeviceInfo{i, prop.name, prop.major, prop.minor, prop.multiProcessorCount,
                                 prop.totalGlobalMem, bus_id});
  }
  return devices;
}

Status ProbeDevice(int device) {
  constexpr std::size_t kN = 1 << 20;
  constexpr unsigned kSeed = 0x9e3779b9u;
  KILN_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  DeviceBuffer<unsigned> buf;
  KILN_RETURN_IF_ERROR(buf.Allocate(kN));
  ProbeKernel<<<(kN + 255) / 256, 256>>>(buf.get(), kN, kSeed);
  KILN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  std::vector<unsigned> got(kN);
  KILN_CUDA_RETURN_IF_ERROR(
      cudaMemcpy(got.data(), buf.get(), kN * sizeof(unsigned), cudaMemcpyDeviceToHost));
  std::vector<unsigned> want = ProbeReference(kN, kSeed);
  for (std::size_t i = 0; i < kN; ++i) {
    if (got[i] != want[i]) {
      return Status::DataLoss("GPU " + std::to_string(device) + " probe mismatch at element " +
                              std::to_string(i) + ": got " + std::to_string(got[i]) + ", want " +
                              std::to_string(want[i]));
    }
  }
  return Status::Ok();
}

}  // namespace kiln::gpu

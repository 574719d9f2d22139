// GPU discovery and a liveness probe for the devices a worker will train on.
// Built from device.cu with CUDA, from device_nocuda.cc without it (where every
// query reports that the build has no GPU support). Thread-safe.
#ifndef KILN_KERNELS_DEVICE_H_
#define KILN_KERNELS_DEVICE_H_

#include <cstddef>
#include <string>
#include <vector>

#include "base/statusor.h"

namespace kiln::gpu {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  int multiprocessors = 0;
  std::size_t total_memory_bytes = 0;
  std::string pci_bus_id;
};

// Versions of the GPU libraries linked in, as "13.0" style strings; empty when
// the build has no CUDA. The driver version is empty when no driver is loaded.
struct LibraryVersions {
  std::string cuda_runtime;
  std::string cuda_driver;
  std::string cublas;
  std::string nccl;
};

// True when this binary was compiled with CUDA support.
bool BuiltWithCuda();

LibraryVersions GetLibraryVersions();

// Lists the visible devices. An empty list (not an error) when the build has
// CUDA but the machine has no GPU or no driver; FailedPrecondition when the
// build has no CUDA at all.
StatusOr<std::vector<DeviceInfo>> ListDevices();

// Runs a small kernel on `device` and checks its output against the CPU
// reference (ProbeReference), proving the device executes this build's code.
// DataLoss when the results differ, Unavailable when the device cannot run it.
Status ProbeDevice(int device);

// The CPU reference of the probe: out[i] = i * 2654435761u + seed (mod 2^32).
std::vector<unsigned> ProbeReference(std::size_t n, unsigned seed);

}  // namespace kiln::gpu

#endif  // KILN_KERNELS_DEVICE_H_

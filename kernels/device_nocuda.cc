// kernels/device.h for builds without CUDA: there is no GPU to find.
#include "kernels/device.h"

namespace kiln::gpu {

bool BuiltWithCuda() { return false; }

LibraryVersions GetLibraryVersions() { return {}; }

StatusOr<std::vector<DeviceInfo>> ListDevices() {
  return Status::FailedPrecondition("this kiln build has no CUDA support");
}

Status ProbeDevice(int) {
  return Status::FailedPrecondition("this kiln build has no CUDA support");
}

}  // namespace kiln::gpu

#include "worker/cmd/device_flags.h"

#include <cstdlib>

#include "kernels/device.h"

namespace kiln::worker {

StatusOr<DeviceChoice> ResolveDevice(const std::string& device, int cuda_device) {
  if (device != "cpu" && device != "cuda" && device != "auto") {
    return Status::InvalidArgument("--device: 'cpu', 'cuda' or 'auto', not '" + device + "'");
  }
  if (device == "auto") {
    if (!gpu::BuiltWithCuda()) {
      return DeviceChoice{.fallback = "this kiln-worker was built without CUDA"};
    }
    // A driver that answers with no device falls back; a broken one (an
    // error) is an infrastructure fault, as with --device cuda.
    KILN_ASSIGN_OR_RETURN(auto visible, gpu::ListDevices());
    if (visible.empty()) return DeviceChoice{.fallback = "this process sees no CUDA device"};
    return ResolveDevice("cuda", cuda_device);
  }
  if (device == "cpu") {
    if (cuda_device >= 0) return Status::InvalidArgument("--cuda-device needs --device cuda");
    return DeviceChoice{};
  }
  if (!gpu::BuiltWithCuda()) {
    return Status::InvalidArgument(
        "--device cuda: this kiln-worker was built without CUDA (use the GPU image)");
  }
  if (cuda_device < 0) {
    cuda_device = 0;
    if (const char* local = std::getenv("LOCAL_RANK"); local != nullptr && *local != '\0') {
      char* end = nullptr;
      const long v = std::strtol(local, &end, 10);
      if (*end != '\0' || v < 0 || v > 1 << 16) {
        return Status::InvalidArgument(std::string("LOCAL_RANK='") + local + "' is not a rank");
      }
      cuda_device = static_cast<int>(v);
    }
  }
  KILN_ASSIGN_OR_RETURN(auto devices, gpu::ListDevices());
  if (devices.empty()) return Status::Unavailable("--device cuda: this machine has no CUDA device");
  if (cuda_device >= static_cast<int>(devices.size())) {
    return Status::Unavailable("--device cuda: device " + std::to_string(cuda_device) +
                               " does not exist; this process sees " +
                               std::to_string(devices.size()));
  }
  return DeviceChoice{.cuda = true, .cuda_device = cuda_device};
}

}  // namespace kiln::worker

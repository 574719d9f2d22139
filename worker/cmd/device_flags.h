// The --device and --cuda-device flags of `kiln-worker train` and `serve`.
#ifndef KILN_WORKER_CMD_DEVICE_FLAGS_H_
#define KILN_WORKER_CMD_DEVICE_FLAGS_H_

#include <string>

#include "base/statusor.h"

namespace kiln::worker {

struct DeviceChoice {
  bool cuda = false;
  int cuda_device = 0;  // With cuda.
  // --device auto without a visible GPU: why the CPU was chosen.
  std::string fallback;
};

// `device` is "cpu", "cuda" or "auto" (cuda when this build has CUDA and the
// process sees a GPU, else the CPU with `fallback` saying why: a pod on a
// node whose GPUs are only advertised, or a CPU image); `cuda_device` < 0
// means the default, the
// LOCAL_RANK environment variable (one rank per GPU on a node) or else 0.
// InvalidArgument for a bad value, --cuda-device without --device cuda, or
// --device cuda in a build without CUDA; Unavailable when the GPU is not
// there (an infrastructure fault: the pod landed on a node without it).
StatusOr<DeviceChoice> ResolveDevice(const std::string& device, int cuda_device);

}  // namespace kiln::worker

#endif  // KILN_WORKER_CMD_DEVICE_FLAGS_H_

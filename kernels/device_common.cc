// Parts of kernels/device.h shared by the CUDA and CPU-only builds.
#include "kernels/device.h"

namespace kiln::gpu {

std::vector<unsigned> ProbeReference(std::size_t n, unsigned seed) {
  std::vector<unsigned> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<unsigned>(i) * 2654435761u + seed;
  return out;
}

}  // namespace kiln::gpu

// Whether this CPU can run the CPU kernels as they were compiled
// (KILN_CPU_ARCH, x86-64-v3 by default: AVX2 and FMA).
#ifndef KILN_KERNELS_CPU_CPU_FEATURES_H_
#define KILN_KERNELS_CPU_CPU_FEATURES_H_

#include "base/status.h"

namespace kiln::kernels::cpu {

// FailedPrecondition naming the missing instructions and the build option
// that avoids them; ok otherwise.
Status CheckCpuSupport();

}  // namespace kiln::kernels::cpu

#endif  // KILN_KERNELS_CPU_CPU_FEATURES_H_

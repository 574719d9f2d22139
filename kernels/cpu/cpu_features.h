// Whether this CPU can run the CPU kernels as they were compiled
// (KILN_CPU_ARCH, x86-64-v3 by default: AVX2 and FMA).
#ifndef KILN_KERNELS_CPU_CPU_FEATURES_H_
#define KILN_KERNELS_CPU_CPU_FEATURES_H_

#include "base/status.h"

namespace kiln::kernels::cpu {

// FailedPrecondition naming the missing instructions and the build option
// that avoids them; ok otherwise.
Status CheckCpuSupport();

// An estimate of the fp32 FLOP/s the CPU kernels can reach at most, for MFU:
// threads (OpenMP's maximum) x the highest core clock x FLOPs per cycle of the
// instruction set compiled in (32 with AVX2 and two FMA units, 8 without).
// 0 when the clock is unknown. Turbo limits and shared cores make the real
// ceiling lower, so MFU against it is conservative.
double EstimatedPeakFlops();

}  // namespace kiln::kernels::cpu

#endif  // KILN_KERNELS_CPU_CPU_FEATURES_H_

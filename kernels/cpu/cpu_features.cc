#include "kernels/cpu/cpu_features.h"

#include <string>

namespace kiln::kernels::cpu {

Status CheckCpuSupport() {
#if defined(KILN_CPU_ARCH) && (defined(__x86_64__) || defined(__i386__))
  // x86-64-v3 = v2 + AVX, AVX2, BMI1/2, F16C, FMA, LZCNT, MOVBE.
  const std::string arch = KILN_CPU_ARCH;
  if (arch == "x86-64-v3" || arch == "x86-64-v4" || arch == "native") {
    __builtin_cpu_init();
    std::string missing;
    if (!__builtin_cpu_supports("avx2")) missing += " avx2";
    if (!__builtin_cpu_supports("fma")) missing += " fma";
    if (!missing.empty()) {
      return Status::FailedPrecondition(
          "the CPU kernels were built for " + arch + " but this CPU lacks" + missing +
          "; rebuild with -DKILN_CPU_ARCH= (empty) for the baseline instruction set");
    }
  }
#endif
  return Status::Ok();
}

}  // namespace kiln::kernels::cpu

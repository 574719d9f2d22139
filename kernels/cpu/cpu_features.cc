#include "kernels/cpu/cpu_features.h"

#include <omp.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
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

namespace {

// The highest clock of core 0 in Hz: cpufreq's maximum, else /proc/cpuinfo's
// current "cpu MHz" (virtual machines often have no cpufreq).
double MaxClockHz() {
  std::ifstream max_khz("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq");
  double khz = 0;
  if (max_khz >> khz && khz > 0) return khz * 1e3;
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("cpu MHz", 0) == 0) {
      // 0 (unknown) for a line that is not "cpu MHz : <number>"; callers
      // then fall back to their default clock.
      auto colon = line.find(':');
      if (colon == std::string::npos) return 0;
      const char* text = line.c_str() + colon + 1;
      char* end = nullptr;
      const double mhz = std::strtod(text, &end);
      return end != text && std::isfinite(mhz) && mhz > 0 ? mhz * 1e6 : 0;
    }
  }
  return 0;
}

}  // namespace

double EstimatedPeakFlops() {
#if defined(KILN_CPU_ARCH)
  const std::string arch = KILN_CPU_ARCH;
  const double per_cycle =
      (arch == "x86-64-v3" || arch == "x86-64-v4" || arch == "native") ? 32.0 : 8.0;
#else
  const double per_cycle = 8.0;
#endif
  return omp_get_max_threads() * MaxClockHz() * per_cycle;
}

}  // namespace kiln::kernels::cpu

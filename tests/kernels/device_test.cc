// CPU-side tests of kernels/device.h; the GPU run lives in device_gpu_test.cc.
#include "kernels/device.h"

#include <catch2/catch.hpp>

namespace kiln::gpu {
namespace {

TEST_CASE("probe reference is the documented hash pattern", "[kernels][device]") {
  auto ref = ProbeReference(4, 5);
  REQUIRE(ref.size() == 4);
  CHECK(ref[0] == 5u);
  CHECK(ref[1] == 2654435761u + 5u);
  CHECK(ref[3] == 3u * 2654435761u + 5u);  // Wraps modulo 2^32 like the kernel.
}

TEST_CASE("device listing matches how the build was configured", "[kernels][device]") {
  auto devices = ListDevices();
  if (BuiltWithCuda()) {
    // With or without a GPU on this machine, listing succeeds (possibly empty).
    REQUIRE(devices.ok());
    CHECK_FALSE(GetLibraryVersions().cuda_runtime.empty());
  } else {
    CHECK(devices.status().code() == StatusCode::kFailedPrecondition);
    CHECK(ProbeDevice(0).code() == StatusCode::kFailedPrecondition);
  }
}

}  // namespace
}  // namespace kiln::gpu

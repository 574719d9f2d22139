// Fuzzes decoding kiln's API types (operator/api/v1alpha1, operator/api/codec.h)
// from JSON, as the operator and the router read them from the API server.
// Whatever decodes must survive the round trip: encoding it and decoding
// that gives the same value.
#include <cstdint>

#include <nlohmann/json.hpp>

#include "operator/api/codec.h"
#include "operator/api/v1alpha1/membercluster.h"
#include "operator/api/v1alpha1/modeldeployment.h"
#include "operator/api/v1alpha1/trainingjob.h"

namespace {

template <class Kind>
void RoundTrip(const nlohmann::json& j) {
  auto decoded = kiln::api::Decode<Kind>(j);
  if (!decoded.ok()) return;
  auto again = kiln::api::Decode<Kind>(kiln::api::Encode(*decoded));
  if (!again.ok() || !(*again == *decoded)) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  RoundTrip<kiln::api::v1alpha1::TrainingJob>(j);
  RoundTrip<kiln::api::v1alpha1::ModelDeployment>(j);
  RoundTrip<kiln::api::v1alpha1::MemberCluster>(j);
  return 0;
}

// Fuzzes reading the API server's error replies (kube/api_error.h): a
// metav1.Status body (or anything else) with the status code and
// Retry-After header the first bytes choose.
#include <cstdint>
#include <string>

#include "kube/api_error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  kiln::kube::HttpResponse response;
  response.status = 400 + (data[0] % 200);  // 4xx and 5xx.
  const size_t header_len = data[1] % 16;
  if (size < 2 + header_len) return 0;
  response.headers["retry-after"] =
      std::string(reinterpret_cast<const char*>(data) + 2, header_len);
  response.body =
      std::string(reinterpret_cast<const char*>(data) + 2 + header_len, size - 2 - header_len);
  kiln::Status s = kiln::kube::ErrorFromResponse(response, "GET /api/v1/pods");
  if (s.ok()) __builtin_trap();  // A non-2xx response is never ok.
  (void)kiln::kube::GetApiError(s);
  return 0;
}

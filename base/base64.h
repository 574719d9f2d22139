// Standard (RFC 4648, padded) base64, as Kubernetes uses for []byte fields and
// kubeconfig *-data fields. Stateless; thread-safe.
#ifndef KILN_BASE_BASE64_H_
#define KILN_BASE_BASE64_H_

#include <string>
#include <string_view>

#include "base/statusor.h"

namespace kiln {

std::string Base64Encode(std::string_view data);

// Decodes padded base64; ASCII whitespace (line breaks in PEM-style input) is
// ignored. InvalidArgument for any other character or a bad length.
StatusOr<std::string> Base64Decode(std::string_view text);

}  // namespace kiln

#endif  // KILN_BASE_BASE64_H_

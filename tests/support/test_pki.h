// Test certificates made in-process with OpenSSL: a fresh CA, and client
// certificates signed by a given CA with chosen validity, for tests of TLS and
// authentication failures. Stateless; thread-safe.
#ifndef KILN_TESTS_SUPPORT_TEST_PKI_H_
#define KILN_TESTS_SUPPORT_TEST_PKI_H_

#include <chrono>
#include <string>
#include <vector>

#include "base/statusor.h"

namespace kiln::testing {

struct CertAndKey {
  std::string cert_pem;
  std::string key_pem;
};

// A self-signed CA valid from an hour ago for a day.
StatusOr<CertAndKey> NewTestCa(const std::string& common_name);

// A client certificate for `common_name` in `organizations` (Kubernetes
// groups), signed by `ca`, valid from now+not_before to now+not_after.
StatusOr<CertAndKey> IssueClientCert(const CertAndKey& ca, const std::string& common_name,
                                     const std::vector<std::string>& organizations,
                                     std::chrono::seconds not_before,
                                     std::chrono::seconds not_after);

}  // namespace kiln::testing

#endif  // KILN_TESTS_SUPPORT_TEST_PKI_H_

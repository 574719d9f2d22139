// S3Options: where kiln-worker's S3 client connects and with what
// credentials, read from the standard AWS environment variables (and a
// mounted Kubernetes Secret). A plain value; copy freely.
//
//   AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL  endpoint of an S3-compatible store
//                                          (default https://s3.<region>.amazonaws.com)
//   AWS_REGION, AWS_DEFAULT_REGION         region signed into requests (us-east-1)
//   KILN_S3_ADDRESSING_STYLE               "path" or "virtual"; default path with a
//                                          custom endpoint, virtual-hosted for AWS
//   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN   credentials
//   KILN_S3_CREDENTIALS_DIR                a mounted Secret: files named
//                                          AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
//                                          and optionally AWS_SESSION_TOKEN, used
//                                          when the variables are not set
//   AWS_CA_BUNDLE                          PEM file of the CAs to trust instead of
//                                          the system roots (TLS is always verified);
//                                          unset, a ca.crt in KILN_S3_CREDENTIALS_DIR
//                                          (a store behind a private CA)
#ifndef KILN_WORKER_STORAGE_S3_OPTIONS_H_
#define KILN_WORKER_STORAGE_S3_OPTIONS_H_

#include <chrono>
#include <functional>
#include <string>

#include "base/clock.h"
#include "base/statusor.h"
#include "worker/storage/s3_signer.h"

namespace kiln::storage {

// The key of the credentials Secret (a file in KILN_S3_CREDENTIALS_DIR) that
// holds the PEM CAs of a store behind a private CA; cert-manager's name.
inline constexpr const char* kS3CaFile = "ca.crt";

struct S3Options {
  std::string endpoint;  // scheme://host[:port], no trailing slash.
  std::string region = "us-east-1";
  bool path_style = true;  // false: https://<bucket>.<endpoint host>/<key>.
  S3Credentials credentials;
  std::string ca_pem;  // Trusted CAs; empty: the system roots.

  // Retries of throttling (429, 503 SlowDown), 5xx and lost connections:
  // at most `max_attempts` tries, the pause doubling from `initial_backoff`
  // up to `max_backoff`.
  int max_attempts = 5;
  std::chrono::milliseconds initial_backoff{200};
  std::chrono::milliseconds max_backoff{5000};
  std::chrono::milliseconds timeout{std::chrono::seconds(120)};  // Per request.
  Clock* clock = RealClock::Get();

  // Multipart uploads: part size (S3's minimum is 5 MiB) and parts in flight;
  // an upload holds at most (parallel + 1) parts in memory. Downloads use the
  // same size for their ranged reads.
  int64_t part_size = 16 << 20;
  int parallel = 4;
};

// The options from the environment, looked up through `getenv` (std::getenv
// in production). InvalidArgument for missing or partial credentials, an
// unreadable Secret directory or CA bundle, or a malformed endpoint.
StatusOr<S3Options> S3OptionsFromEnvironment(const std::function<const char*(const char*)>& getenv);

}  // namespace kiln::storage

#endif  // KILN_WORKER_STORAGE_S3_OPTIONS_H_

// AWS Signature Version 4 for S3 requests: the canonical request, the string
// to sign and the Authorization header, computed with OpenSSL's SHA-256 and
// HMAC. Stateless functions; thread-safe.
#ifndef KILN_WORKER_STORAGE_S3_SIGNER_H_
#define KILN_WORKER_STORAGE_S3_SIGNER_H_

#include <chrono>
#include <map>
#include <string>
#include <string_view>

namespace kiln::storage {

struct S3Credentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;  // Empty unless the credentials are temporary.
};

// What is signed: the method, the path (already URI-encoded as sent), the
// query parameters (raw; encoded here), and the headers to sign (any case;
// they must be sent with exactly these values).
struct SigningInput {
  std::string method;
  std::string encoded_path;
  std::map<std::string, std::string> query;
  std::map<std::string, std::string> headers;
  std::string payload_sha256;  // Lowercase hex, or "UNSIGNED-PAYLOAD".
};

// The lowercase hex SHA-256 of `bytes`.
std::string Sha256Hex(std::string_view bytes);

// "20130524T000000Z": the x-amz-date form of `t` (UTC).
std::string AmzDate(std::chrono::system_clock::time_point t);

// S3's URI encoding: every byte but A-Z a-z 0-9 - _ . ~ as %XX (upper case);
// '/' is kept when `keep_slash` (object keys in paths) and encoded otherwise.
std::string UriEncode(std::string_view s, bool keep_slash);

// The query string as signed and sent: keys sorted, "k=v" joined by '&'.
std::string CanonicalQuery(const std::map<std::string, std::string>& query);

// The canonical request (AWS's "CanonicalRequest"), lines joined by '\n'.
std::string CanonicalRequest(const SigningInput& input);

// "AWS4-HMAC-SHA256\n<amz date>\n<scope>\n<hex SHA-256 of canonical request>".
std::string StringToSign(const std::string& amz_date, const std::string& scope,
                         const std::string& canonical_request);

// "<yyyymmdd>/<region>/<service>/aws4_request".
std::string CredentialScope(const std::string& amz_date, const std::string& region,
                            const std::string& service);

// The hex signature of `string_to_sign` with the key derived from `secret`.
std::string Signature(const std::string& secret, const std::string& amz_date,
                      const std::string& region, const std::string& service,
                      const std::string& string_to_sign);

// The Authorization header's value for `input` signed at `amz_date`; the
// input's headers must already hold x-amz-date (and x-amz-content-sha256 and
// x-amz-security-token as S3 requires).
std::string Authorization(const S3Credentials& credentials, const std::string& region,
                          const std::string& service, const std::string& amz_date,
                          const SigningInput& input);

}  // namespace kiln::storage

#endif  // KILN_WORKER_STORAGE_S3_SIGNER_H_

// S3Client: the S3 REST API calls kiln-worker makes — get (whole or a byte
// range), head, put, multipart upload, list by prefix (ListObjectsV2 with
// continuation) and delete — signed with SigV4 (s3_signer.h) and sent through
// the project's HTTP transport (kube/http.h). Throttling (429, 503 SlowDown),
// other 5xx and lost connections are retried with exponential backoff; every
// other answer is final.
//
// Errors name the call and the object, with S3's error code and message:
// PermissionDenied for rejected credentials or access (403), NotFound for a
// missing bucket, object or upload (404), InvalidArgument for a request S3
// refuses as malformed (400, 416 — often a wrong region), Unavailable when
// retries ran out (throttled or down), DataLoss for a reply kiln cannot
// parse. Thread-safe: calls may run concurrently.
#ifndef KILN_WORKER_STORAGE_S3_CLIENT_H_
#define KILN_WORKER_STORAGE_S3_CLIENT_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "base/statusor.h"
#include "kube/http.h"
#include "worker/storage/s3_options.h"

namespace kiln::storage {

struct S3Object {
  std::string key;
  int64_t size = 0;
  std::string etag;
};

// Makes the transport for one server ("scheme://host[:port]", trusting
// `ca_pem`); kube::NewHttpTransport in production, a fake in tests.
using TransportFactory = std::function<StatusOr<std::unique_ptr<kube::HttpTransport>>(
    const std::string& server, const std::string& ca_pem)>;

class S3Client {
 public:
  // A client over cpprestsdk. InvalidArgument for unusable options.
  static StatusOr<std::unique_ptr<S3Client>> Create(const S3Options& options);
  // A client whose transports come from `factory`.
  S3Client(S3Options options, TransportFactory factory);

  S3Client(const S3Client&) = delete;
  S3Client& operator=(const S3Client&) = delete;

  const S3Options& options() const { return options_; }

  // The whole object.
  StatusOr<std::string> Get(const std::string& bucket, const std::string& key);
  // Bytes [offset, offset + length) of the object (fewer at its end).
  StatusOr<std::string> GetRange(const std::string& bucket, const std::string& key, int64_t offset,
                                 int64_t length);
  // The object's size and ETag without its bytes.
  StatusOr<S3Object> Head(const std::string& bucket, const std::string& key);
  // Creates or replaces the object with `body` in one request.
  Status Put(const std::string& bucket, const std::string& key, std::string_view body);
  // Every object whose key starts with `prefix`, in key order.
  StatusOr<std::vector<S3Object>> List(const std::string& bucket, const std::string& prefix);
  // Creates the bucket; ok when it exists and is this caller's.
  Status CreateBucket(const std::string& bucket);
  // Deletes the object; ok when it did not exist.
  Status Delete(const std::string& bucket, const std::string& key);

  // Multipart upload: the object appears only when Complete succeeds.
  StatusOr<std::string> CreateMultipartUpload(const std::string& bucket, const std::string& key);
  // Uploads part `part_number` (from 1) and returns its ETag.
  StatusOr<std::string> UploadPart(const std::string& bucket, const std::string& key,
                                   const std::string& upload_id, int part_number,
                                   std::string_view body);
  Status CompleteMultipartUpload(const std::string& bucket, const std::string& key,
                                 const std::string& upload_id,
                                 const std::vector<std::string>& etags);
  Status AbortMultipartUpload(const std::string& bucket, const std::string& key,
                              const std::string& upload_id);

 private:
  struct Request {
    std::string method = "GET";
    std::string bucket;
    std::string key;
    std::map<std::string, std::string> query;
    std::map<std::string, std::string> headers;
    std::string_view body;
  };
  // Sends `request` with retries; returns a 2xx response or the error.
  StatusOr<kube::HttpResponse> Send(const Request& request);
  StatusOr<kube::HttpTransport*> Transport(const std::string& bucket);
  std::string Describe(const Request& request) const;

  S3Options options_;
  TransportFactory factory_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<kube::HttpTransport>> transports_;  // By server; mu_.
};

// "s3://bucket/key" split; InvalidArgument when it is not an s3:// URI with a
// bucket. The key may be empty or a prefix.
struct S3Uri {
  std::string bucket;
  std::string key;
};
StatusOr<S3Uri> ParseS3Uri(const std::string& uri);
// Whether `path` is an s3:// URI.
bool IsS3Uri(std::string_view path);

}  // namespace kiln::storage

#endif  // KILN_WORKER_STORAGE_S3_CLIENT_H_

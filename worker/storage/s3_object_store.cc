#include "worker/storage/s3_object_store.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <future>
#include <thread>

namespace kiln::storage {
namespace {

// A multipart upload: parts of part_size are sent as they fill, at most
// `parallel` at a time; the upload is completed by Commit and aborted when
// the writer is dropped before. An object smaller than one part is sent with
// a single PUT at Commit instead.
class S3Upload final : public ObjectWriter {
 public:
  S3Upload(std::shared_ptr<S3Client> client, std::string bucket, std::string key)
      : client_(std::move(client)), bucket_(std::move(bucket)), key_(std::move(key)) {}

  S3Upload(const S3Upload&) = delete;
  S3Upload& operator=(const S3Upload&) = delete;

  ~S3Upload() override {
    if (committed_ || upload_id_.empty()) return;
    for (auto& part : in_flight_) part.wait();
    // Best effort: an upload left behind is invisible, and buckets commonly
    // expire incomplete uploads by lifecycle rule.
    (void)client_->AbortMultipartUpload(bucket_, key_, upload_id_);
  }

  Status Append(std::string_view bytes) override {
    KILN_RETURN_IF_ERROR(failed_);
    const auto part_size = static_cast<size_t>(client_->options().part_size);
    while (!bytes.empty()) {
      const size_t take = std::min(bytes.size(), part_size - buffer_.size());
      buffer_.append(bytes.substr(0, take));
      bytes.remove_prefix(take);
      if (buffer_.size() == part_size) KILN_RETURN_IF_ERROR(SendPart());
    }
    return Status::Ok();
  }

  Status Commit() override {
    KILN_RETURN_IF_ERROR(failed_);
    if (upload_id_.empty()) {
      KILN_RETURN_IF_ERROR(client_->Put(bucket_, key_, buffer_));
      committed_ = true;
      return Status::Ok();
    }
    if (!buffer_.empty()) KILN_RETURN_IF_ERROR(SendPart());
    while (!in_flight_.empty()) KILN_RETURN_IF_ERROR(CollectOldest());
    KILN_RETURN_IF_ERROR(client_->CompleteMultipartUpload(bucket_, key_, upload_id_, etags_));
    committed_ = true;
    return Status::Ok();
  }

 private:
  Status SendPart() {
    if (upload_id_.empty()) {
      auto id = client_->CreateMultipartUpload(bucket_, key_);
      if (!id.ok()) return failed_ = id.status();
      upload_id_ = *id;
    }
    while (static_cast<int>(in_flight_.size()) >= std::max(client_->options().parallel, 1)) {
      KILN_RETURN_IF_ERROR(CollectOldest());
    }
    const int number = ++parts_;
    in_flight_.push_back(std::async(
        std::launch::async,
        [client = client_, bucket = bucket_, key = key_, id = upload_id_, number,
         part = std::move(buffer_)] { return client->UploadPart(bucket, key, id, number, part); }));
    buffer_ = std::string();
    buffer_.reserve(static_cast<size_t>(client_->options().part_size));
    return Status::Ok();
  }

  Status CollectOldest() {
    auto etag = in_flight_.front().get();
    in_flight_.pop_front();
    if (!etag.ok()) return failed_ = etag.status();
    etags_.push_back(*etag);
    return Status::Ok();
  }

  std::shared_ptr<S3Client> client_;
  std::string bucket_, key_;
  std::string upload_id_;
  std::string buffer_;
  int parts_ = 0;
  std::deque<std::future<StatusOr<std::string>>> in_flight_;  // Oldest part first.
  std::vector<std::string> etags_;                            // Of the collected parts.
  Status failed_;
  bool committed_ = false;
};

}  // namespace

S3ObjectStore::S3ObjectStore(std::shared_ptr<S3Client> client, std::string bucket)
    : client_(std::move(client)), bucket_(std::move(bucket)) {}

std::string S3ObjectStore::Describe(const std::string& key) const {
  return "s3://" + bucket_ + "/" + key;
}

StatusOr<std::string> S3ObjectStore::Get(const std::string& key) {
  KILN_ASSIGN_OR_RETURN(S3Object head, client_->Head(bucket_, key));
  const int64_t part = std::max<int64_t>(client_->options().part_size, 1);
  if (head.size <= part) return client_->Get(bucket_, key);
  // Parallel ranged reads into one buffer: a single connection is the
  // bottleneck for checkpoints of hundreds of MB.
  std::string out(static_cast<size_t>(head.size), '\0');
  const int64_t ranges = (head.size + part - 1) / part;
  std::atomic<int64_t> next{0};
  std::mutex mu;
  Status failed;
  auto work = [&] {
    while (true) {
      const int64_t i = next.fetch_add(1);
      if (i >= ranges) return;
      {
        std::lock_guard<std::mutex> lock(mu);
        if (!failed.ok()) return;
      }
      const int64_t offset = i * part, length = std::min(part, head.size - offset);
      auto bytes = client_->GetRange(bucket_, key, offset, length);
      std::lock_guard<std::mutex> lock(mu);
      if (!bytes.ok()) {
        if (failed.ok()) failed = bytes.status();
        return;
      }
      if (static_cast<int64_t>(bytes->size()) != length) {
        if (failed.ok()) {
          failed = Status::DataLoss(Describe(key) + ": the object changed while reading it");
        }
        return;
      }
      std::memcpy(out.data() + offset, bytes->data(), bytes->size());
    }
  };
  std::vector<std::thread> threads;
  const int n =
      static_cast<int>(std::min<int64_t>(std::max(client_->options().parallel, 1), ranges));
  for (int t = 0; t < n; ++t) threads.emplace_back(work);
  for (auto& t : threads) t.join();
  KILN_RETURN_IF_ERROR(failed);
  return out;
}

StatusOr<std::string> S3ObjectStore::GetRange(const std::string& key, int64_t offset,
                                              int64_t length) {
  return client_->GetRange(bucket_, key, offset, length);
}

StatusOr<ObjectInfo> S3ObjectStore::Stat(const std::string& key) {
  KILN_ASSIGN_OR_RETURN(S3Object head, client_->Head(bucket_, key));
  return ObjectInfo{key, head.size};
}

Status S3ObjectStore::Put(const std::string& key, std::string_view bytes) {
  return client_->Put(bucket_, key, bytes);
}

StatusOr<std::unique_ptr<ObjectWriter>> S3ObjectStore::NewWriter(const std::string& key) {
  return std::unique_ptr<ObjectWriter>(std::make_unique<S3Upload>(client_, bucket_, key));
}

StatusOr<std::vector<ObjectInfo>> S3ObjectStore::List(const std::string& prefix) {
  KILN_ASSIGN_OR_RETURN(auto objects, client_->List(bucket_, prefix));
  std::vector<ObjectInfo> out;
  out.reserve(objects.size());
  for (auto& o : objects) out.push_back({std::move(o.key), o.size});
  return out;
}

Status S3ObjectStore::Delete(const std::string& key) { return client_->Delete(bucket_, key); }

StatusOr<OpenedStore> OpenS3Store(const std::string& uri) {
  KILN_ASSIGN_OR_RETURN(S3Uri parsed, ParseS3Uri(uri));
  KILN_ASSIGN_OR_RETURN(S3Options options, S3OptionsFromEnvironment(std::getenv));
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<S3Client> client, S3Client::Create(options));
  return OpenedStore{
      std::make_shared<S3ObjectStore>(std::shared_ptr<S3Client>(std::move(client)), parsed.bucket),
      parsed.key};
}

}  // namespace kiln::storage

#include "worker/storage/s3_client.h"

#include <algorithm>
#include <chrono>

namespace kiln::storage {
namespace {

// S3's replies are small, flat XML documents; these read the few elements
// kiln needs without a full XML parser.

std::string XmlUnescape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '&') {
      out.push_back(s[i]);
      continue;
    }
    const size_t end = s.find(';', i);
    if (end == std::string_view::npos) {
      out.push_back(s[i]);
      continue;
    }
    const std::string_view entity = s.substr(i + 1, end - i - 1);
    if (entity == "amp") {
      out.push_back('&');
    } else if (entity == "lt") {
      out.push_back('<');
    } else if (entity == "gt") {
      out.push_back('>');
    } else if (entity == "quot") {
      out.push_back('"');
    } else if (entity == "apos") {
      out.push_back('\'');
    } else if (entity.size() > 1 && entity[0] == '#') {
      const bool hex = entity[1] == 'x';
      const unsigned long cp =
          std::strtoul(std::string(entity.substr(hex ? 2 : 1)).c_str(), nullptr, hex ? 16 : 10);
      if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
      } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xc0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
      } else {
        out.push_back(static_cast<char>(0xe0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
      }
    } else {
      out.append(s.substr(i, end - i + 1));
    }
    i = end;
  }
  return out;
}

// The raw contents of every <tag>...</tag> in `xml`, in order (not nested).
std::vector<std::string_view> Elements(std::string_view xml, const std::string& tag) {
  std::vector<std::string_view> out;
  const std::string open = "<" + tag + ">", close = "</" + tag + ">";
  size_t pos = 0;
  while ((pos = xml.find(open, pos)) != std::string_view::npos) {
    const size_t start = pos + open.size();
    const size_t end = xml.find(close, start);
    if (end == std::string_view::npos) break;
    out.push_back(xml.substr(start, end - start));
    pos = end + close.size();
  }
  return out;
}

std::string Element(std::string_view xml, const std::string& tag) {
  auto all = Elements(xml, tag);
  return all.empty() ? "" : XmlUnescape(all.front());
}

std::string XmlEscape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

bool Retryable(int http_status) { return http_status == 429 || http_status >= 500; }

// The error for a final non-2xx answer.
Status HttpError(const std::string& what, const kube::HttpResponse& r) {
  std::string code = Element(r.body, "Code"), message = Element(r.body, "Message");
  if (code.empty()) {
    // HEAD replies have no body: say what the status means for S3.
    code = "HTTP " + std::to_string(r.status);
    if (r.status == 403) {
      message =
          "access denied, or the S3 credentials were rejected: check "
          "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or the credentials Secret";
    } else if (r.status == 503) {
      message = "throttled (SlowDown) or unavailable";
    }
  }
  std::string text = what + ": " + code + (message.empty() ? "" : ": " + message);
  switch (r.status) {
    case 403:
      if (code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch" ||
          code == "InvalidToken" || code == "ExpiredToken") {
        text +=
            " (the S3 credentials were rejected: check AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY or the credentials Secret)";
      }
      return Status::PermissionDenied(text);
    case 404:
      if (code == "NoSuchBucket") text += " (the bucket does not exist)";
      return Status::NotFound(text);
    case 400:
    case 416:
      return Status::InvalidArgument(text);
    case 409:
    case 412:
      return Status::FailedPrecondition(text);
    default:
      if (Retryable(r.status)) return Status::Unavailable(text);
      return Status::Internal(text);
  }
}

std::string Authority(const std::string& server) { return server.substr(server.find("://") + 3); }

}  // namespace

bool IsS3Uri(std::string_view path) { return path.rfind("s3://", 0) == 0; }

StatusOr<S3Uri> ParseS3Uri(const std::string& uri) {
  if (!IsS3Uri(uri)) return Status::InvalidArgument("\"" + uri + "\" is not an s3:// URI");
  const std::string rest = uri.substr(5);
  const size_t slash = rest.find('/');
  S3Uri out;
  out.bucket = rest.substr(0, slash);
  if (slash != std::string::npos) out.key = rest.substr(slash + 1);
  if (out.bucket.empty()) return Status::InvalidArgument("\"" + uri + "\" names no bucket");
  return out;
}

StatusOr<std::unique_ptr<S3Client>> S3Client::Create(const S3Options& options) {
  TransportFactory factory = [](const std::string& server, const std::string& ca_pem) {
    kube::RestConfig config;
    config.server = server;
    config.ca_pem = ca_pem;
    config.source = "S3 endpoint";
    config.tls_hint = ca_pem.empty()
                          ? "the store's certificate is checked against the system roots; for a "
                            "private CA put its PEM in AWS_CA_BUNDLE or the credentials Secret's "
                            "ca.crt"
                          : "the store's certificate must be signed by a CA in AWS_CA_BUNDLE or "
                            "the credentials Secret's ca.crt, and name the endpoint's host";
    return kube::NewHttpTransport(config);
  };
  auto client = std::make_unique<S3Client>(options, std::move(factory));
  // Fail now for an unusable endpoint or CA bundle, not at the first request.
  KILN_RETURN_IF_ERROR(client->Transport("").status());
  return client;
}

S3Client::S3Client(S3Options options, TransportFactory factory)
    : options_(std::move(options)), factory_(std::move(factory)) {}

StatusOr<kube::HttpTransport*> S3Client::Transport(const std::string& bucket) {
  std::string server = options_.endpoint;
  if (!options_.path_style && !bucket.empty()) {
    const size_t at = server.find("://") + 3;
    server.insert(at, bucket + ".");
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = transports_.find(server);
  if (it == transports_.end()) {
    KILN_ASSIGN_OR_RETURN(auto transport, factory_(server, options_.ca_pem));
    it = transports_.emplace(server, std::move(transport)).first;
  }
  return it->second.get();
}

std::string S3Client::Describe(const Request& r) const {
  return "S3 " + r.method + " s3://" + r.bucket + "/" + r.key;
}

StatusOr<kube::HttpResponse> S3Client::Send(const Request& r) {
  KILN_ASSIGN_OR_RETURN(kube::HttpTransport * transport, Transport(r.bucket));
  std::string server = options_.endpoint;
  std::string path = "/";
  if (options_.path_style) {
    path += r.bucket;
    if (!r.key.empty()) path += "/";
  } else {
    server.insert(server.find("://") + 3, r.bucket + ".");
  }
  path += UriEncode(r.key, true);
  const std::string query = CanonicalQuery(r.query);
  const std::string payload_sha256 = Sha256Hex(r.body);
  const std::string what = Describe(r);

  std::chrono::milliseconds backoff = options_.initial_backoff;
  Status last;
  for (int attempt = 1; attempt <= std::max(options_.max_attempts, 1); ++attempt) {
    if (attempt > 1) {
      options_.clock->SleepFor(backoff);
      backoff = std::min(backoff * 2, options_.max_backoff);
    }
    SigningInput sign{r.method, path, r.query, r.headers, payload_sha256};
    const std::string date = AmzDate(std::chrono::system_clock::now());
    sign.headers["host"] = Authority(server);
    sign.headers["x-amz-date"] = date;
    sign.headers["x-amz-content-sha256"] = payload_sha256;
    if (!options_.credentials.session_token.empty()) {
      sign.headers["x-amz-security-token"] = options_.credentials.session_token;
    }
    kube::HttpRequest http;
    http.method = r.method;
    http.path = query.empty() ? path : path + "?" + query;
    http.timeout = options_.timeout;
    for (const auto& [name, value] : sign.headers) {
      // The transport sends the same Host itself (and takes an explicit one
      // as the TLS server name, which must not carry the port).
      if (name != "host") http.headers[name] = value;
    }
    http.headers["Authorization"] =
        Authorization(options_.credentials, options_.region, "s3", date, sign);
    http.headers["Content-Type"] = "application/octet-stream";
    http.body = std::string(r.body);
    auto response = transport->Do(http);
    if (!response.ok()) {
      last = Status(response.status().code(), what + ": " + response.status().message());
      if (!response.status().IsRetryable()) return last;
      continue;
    }
    if (response->status >= 200 && response->status < 300) return std::move(*response);
    last = HttpError(what, *response);
    if (!Retryable(response->status)) return last;
  }
  return Status::Unavailable(last.message() + " (gave up after " +
                             std::to_string(options_.max_attempts) + " attempts)");
}

StatusOr<std::string> S3Client::Get(const std::string& bucket, const std::string& key) {
  KILN_ASSIGN_OR_RETURN(auto r, Send({.method = "GET", .bucket = bucket, .key = key}));
  return std::move(r.body);
}

StatusOr<std::string> S3Client::GetRange(const std::string& bucket, const std::string& key,
                                         int64_t offset, int64_t length) {
  if (length <= 0) return std::string();
  Request req{.method = "GET", .bucket = bucket, .key = key};
  req.headers["range"] =
      "bytes=" + std::to_string(offset) + "-" + std::to_string(offset + length - 1);
  KILN_ASSIGN_OR_RETURN(auto r, Send(req));
  // A server that ignores Range answers 200 with the whole object.
  if (r.status == 200 && static_cast<int64_t>(r.body.size()) > length) {
    if (offset >= static_cast<int64_t>(r.body.size())) return std::string();
    return r.body.substr(static_cast<size_t>(offset), static_cast<size_t>(length));
  }
  return std::move(r.body);
}

StatusOr<S3Object> S3Client::Head(const std::string& bucket, const std::string& key) {
  KILN_ASSIGN_OR_RETURN(auto r, Send({.method = "HEAD", .bucket = bucket, .key = key}));
  S3Object out{key, 0, r.headers["etag"]};
  const std::string length = r.headers["content-length"];
  char* end = nullptr;
  out.size = std::strtoll(length.c_str(), &end, 10);
  if (length.empty() || *end != '\0') {
    return Status::DataLoss("S3 HEAD s3://" + bucket + "/" + key +
                            ": no usable Content-Length in the reply");
  }
  return out;
}

Status S3Client::Put(const std::string& bucket, const std::string& key, std::string_view body) {
  return Send({.method = "PUT", .bucket = bucket, .key = key, .body = body}).status();
}

StatusOr<std::vector<S3Object>> S3Client::List(const std::string& bucket,
                                               const std::string& prefix) {
  std::vector<S3Object> out;
  std::string token;
  while (true) {
    Request req{.method = "GET", .bucket = bucket};
    req.query = {{"list-type", "2"}, {"prefix", prefix}};
    if (!token.empty()) req.query["continuation-token"] = token;
    KILN_ASSIGN_OR_RETURN(auto r, Send(req));
    for (std::string_view contents : Elements(r.body, "Contents")) {
      S3Object o;
      o.key = Element(contents, "Key");
      o.size = std::strtoll(Element(contents, "Size").c_str(), nullptr, 10);
      o.etag = Element(contents, "ETag");
      out.push_back(std::move(o));
    }
    if (Element(r.body, "IsTruncated") != "true") break;
    token = Element(r.body, "NextContinuationToken");
    if (token.empty()) {
      return Status::DataLoss("S3 list s3://" + bucket + "/" + prefix +
                              ": a truncated listing without a continuation token");
    }
  }
  std::sort(out.begin(), out.end(),
            [](const S3Object& a, const S3Object& b) { return a.key < b.key; });
  return out;
}

Status S3Client::CreateBucket(const std::string& bucket) {
  auto r = Send({.method = "PUT", .bucket = bucket});
  if (!r.ok() && r.status().message().find("BucketAlreadyOwnedByYou") != std::string::npos) {
    return Status::Ok();
  }
  return r.status();
}

Status S3Client::Delete(const std::string& bucket, const std::string& key) {
  auto r = Send({.method = "DELETE", .bucket = bucket, .key = key});
  if (!r.ok() && r.status().code() == StatusCode::kNotFound &&
      r.status().message().find("NoSuchBucket") == std::string::npos) {
    return Status::Ok();
  }
  return r.status();
}

StatusOr<std::string> S3Client::CreateMultipartUpload(const std::string& bucket,
                                                      const std::string& key) {
  Request req{.method = "POST", .bucket = bucket, .key = key};
  req.query["uploads"] = "";
  KILN_ASSIGN_OR_RETURN(auto r, Send(req));
  std::string id = Element(r.body, "UploadId");
  if (id.empty()) {
    return Status::DataLoss(Describe(req) + ": no UploadId in the reply: " + r.body.substr(0, 200));
  }
  return id;
}

StatusOr<std::string> S3Client::UploadPart(const std::string& bucket, const std::string& key,
                                           const std::string& upload_id, int part_number,
                                           std::string_view body) {
  Request req{.method = "PUT", .bucket = bucket, .key = key, .body = body};
  req.query = {{"partNumber", std::to_string(part_number)}, {"uploadId", upload_id}};
  KILN_ASSIGN_OR_RETURN(auto r, Send(req));
  std::string etag = r.headers["etag"];
  if (etag.empty()) return Status::DataLoss(Describe(req) + ": no ETag in the reply");
  return etag;
}

Status S3Client::CompleteMultipartUpload(const std::string& bucket, const std::string& key,
                                         const std::string& upload_id,
                                         const std::vector<std::string>& etags) {
  std::string body = "<CompleteMultipartUpload>";
  for (size_t i = 0; i < etags.size(); ++i) {
    body += "<Part><PartNumber>" + std::to_string(i + 1) + "</PartNumber><ETag>" +
            XmlEscape(etags[i]) + "</ETag></Part>";
  }
  body += "</CompleteMultipartUpload>";
  Request req{.method = "POST", .bucket = bucket, .key = key, .body = body};
  req.query["uploadId"] = upload_id;
  KILN_ASSIGN_OR_RETURN(auto r, Send(req));
  // S3 may answer 200 and report the failure in the body.
  if (r.body.find("<Error>") != std::string::npos) {
    return Status::Unavailable(Describe(req) + ": " + Element(r.body, "Code") + ": " +
                               Element(r.body, "Message"));
  }
  return Status::Ok();
}

Status S3Client::AbortMultipartUpload(const std::string& bucket, const std::string& key,
                                      const std::string& upload_id) {
  Request req{.method = "DELETE", .bucket = bucket, .key = key};
  req.query["uploadId"] = upload_id;
  return Send(req).status();
}

}  // namespace kiln::storage

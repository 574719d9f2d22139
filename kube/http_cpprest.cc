// HttpTransport over cpprestsdk (Boost.Asio + OpenSSL). cpprestsdk exceptions
// stop here and become Status values.
#include <cctype>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include <cpprest/containerstream.h>
#include <cpprest/http_client.h>
#include <cpprest/rawptrstream.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "kube/http.h"

namespace kiln::kube {
namespace {

namespace http = web::http;
namespace client = web::http::client;

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Checks PEM material up front so a bad kubeconfig fails at construction with
// a clear message instead of as an opaque handshake error later.
Status CheckPem(const std::string& pem, bool is_key, const std::string& what) {
  if (pem.empty()) return Status::Ok();
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  bool ok = false;
  if (is_key) {
    EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
    ok = key != nullptr;
    EVP_PKEY_free(key);
  } else {
    X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    ok = cert != nullptr;
    X509_free(cert);
  }
  BIO_free(bio);
  ERR_clear_error();
  if (!ok)
    return Status::InvalidArgument(what + " is not a PEM " +
                                   (is_key ? "private key" : "certificate"));
  return Status::Ok();
}

// Adds every certificate in `pem` to a fresh store, replacing the defaults.
void TrustOnly(SSL_CTX* ctx, const std::string& pem) {
  X509_STORE* store = X509_STORE_new();
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  while (X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
    X509_STORE_add_cert(store, cert);
    X509_free(cert);
  }
  BIO_free(bio);
  ERR_clear_error();
  SSL_CTX_set_cert_store(ctx, store);
}

void UseClientCert(SSL_CTX* ctx, const std::string& cert_pem, const std::string& key_pem) {
  BIO* bio = BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size()));
  if (X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
    SSL_CTX_use_certificate(ctx, cert);
    X509_free(cert);
    while (X509* chain = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
      SSL_CTX_add_extra_chain_cert(ctx, chain);  // Takes ownership.
    }
  }
  BIO_free(bio);
  bio = BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size()));
  if (EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr)) {
    SSL_CTX_use_PrivateKey(ctx, key);
    EVP_PKEY_free(key);
  }
  BIO_free(bio);
  ERR_clear_error();
}

Status FromException(const std::exception& e, const RestConfig& config, const HttpRequest& req) {
  std::string what = e.what();
  std::string where = req.method + " " + config.server + req.path;
  if (what.find("certificate verify failed") != std::string::npos ||
      what.find("handshake") != std::string::npos) {
    return Status::FailedPrecondition("TLS handshake for " + where + " failed: " + what + " (" +
                                      config.tls_hint + ")");
  }
  if (what.find("timed out") != std::string::npos || what.find("timeout") != std::string::npos) {
    return Status::DeadlineExceeded(where + ": " + what);
  }
  return Status::Unavailable(where + ": " + what);
}

// Wakes a thread waiting for an asynchronous read to finish.
class Wakeup {
 public:
  void Notify() {
    std::lock_guard<std::mutex> lock(mu_);
    fired_ = true;
    cv_.notify_all();
  }
  void WaitFor(std::chrono::milliseconds d) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, d, [this] { return fired_; });
    fired_ = false;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool fired_ = false;
};

class CppRestTransport final : public HttpTransport {
 public:
  explicit CppRestTransport(RestConfig config) : config_(std::move(config)) {}

  StatusOr<HttpResponse> Do(const HttpRequest& request) override {
    try {
      http::http_response resp = PooledClient(request.timeout).request(ToCppRest(request)).get();
      HttpResponse out = Head(resp);
      // The bytes as sent: extract_utf8string would convert a body without a
      // UTF-8 charset from Latin-1, corrupting binary bodies (S3 objects).
      concurrency::streams::container_buffer<std::string> body;
      resp.body().read_to_end(body).get();
      out.body = std::move(body.collection());
      return out;
    } catch (const std::exception& e) {
      return FromException(e, config_, request);
    }
  }

  Status Stream(const HttpRequest& request, const std::function<void(const HttpResponse&)>& on_head,
                const std::function<bool(std::string_view)>& on_chunk,
                const std::atomic<bool>* cancel) override {
    // Cancelling the request aborts its connection, which is the only way to
    // end a read that is waiting for the server (closing the buffer is not).
    pplx::cancellation_token_source cts;
    try {
      client::http_client c(config_.server, ClientConfig(request.timeout));
      http::http_response resp = c.request(ToCppRest(request), cts.get_token()).get();
      on_head(Head(resp));
      auto body = resp.body();
      // The buffer outlives any read still pending when the caller cancels.
      auto buf = std::make_shared<std::vector<uint8_t>>(64 * 1024);
      auto wake = std::make_shared<Wakeup>();
      auto sb = body.streambuf();
      while (true) {
        // Ask for one byte: cpprestsdk completes a larger read only once that
        // many bytes arrived (or the stream ended), which would hold watch
        // events back. Whatever else is already buffered is taken after it.
        auto read = sb.getn(buf->data(), 1);
        read.then([wake](pplx::task<size_t>) { wake->Notify(); });
        // Wait for data, checking for cancellation so Stop() is prompt even
        // when the server is silent.
        while (!read.is_done()) {
          if (cancel != nullptr && cancel->load()) {
            cts.cancel();
            try {
              read.wait();
            } catch (const std::exception&) {
              // The read fails because its connection was aborted under it.
            }
            return Status::Ok();
          }
          wake->WaitFor(std::chrono::milliseconds(100));
        }
        size_t n = read.get();
        if (n == 0) return Status::Ok();  // The server ended the stream.
        size_t avail = sb.in_avail();
        if (avail > 0) n += sb.getn(buf->data() + 1, std::min(avail, buf->size() - 1)).get();
        if (!on_chunk(std::string_view(reinterpret_cast<const char*>(buf->data()), n))) {
          cts.cancel();
          return Status::Ok();
        }
      }
    } catch (const pplx::task_canceled&) {
      return Status::Ok();
    } catch (const std::exception& e) {
      return FromException(e, config_, request);
    }
  }

 private:
  // One http_client per timeout, kept for the transport's life: cpprestsdk
  // keeps its connections alive per client, so requests reuse TLS sessions
  // instead of handshaking each time. http_client is safe for concurrent use.
  client::http_client& PooledClient(std::chrono::milliseconds timeout) {
    std::lock_guard<std::mutex> lock(pool_mu_);
    auto it = pool_.find(timeout.count());
    if (it == pool_.end()) {
      it = pool_
               .emplace(timeout.count(), std::make_unique<client::http_client>(
                                             config_.server, ClientConfig(timeout)))
               .first;
    }
    return *it->second;
  }

  client::http_client_config ClientConfig(std::chrono::milliseconds timeout) const {
    client::http_client_config cfg;
    cfg.set_timeout(timeout);
    cfg.set_validate_certificates(!config_.insecure_skip_tls_verify);
    std::string ca = config_.ca_pem, cert = config_.client_cert_pem, key = config_.client_key_pem;
    cfg.set_ssl_context_callback([ca, cert, key](boost::asio::ssl::context& ctx) {
      if (!ca.empty()) TrustOnly(ctx.native_handle(), ca);
      if (!cert.empty()) UseClientCert(ctx.native_handle(), cert, key);
    });
    return cfg;
  }

  http::http_request ToCppRest(const HttpRequest& r) const {
    http::http_request req(r.method);
    req.set_request_uri(r.path);
    for (const auto& [k, v] : r.headers) req.headers().add(k, v);
    // tls-server-name: cpprestsdk takes the name it sends as SNI and checks in
    // the server's certificate from the Host header when one is set (and
    // pools connections by it). The API server ignores Host, so this is how
    // the name is overridden without forking the transport.
    if (!config_.tls_server_name.empty() && !r.headers.count("Host")) {
      req.headers().add("Host", config_.tls_server_name);
    }
    if (!r.body.empty() || r.method == "POST" || r.method == "PUT" || r.method == "PATCH") {
      auto it = r.headers.find("Content-Type");
      // As bytes: cpprestsdk's set_body(std::string) reads its char buffer
      // through a streambuf<unsigned char>, a member call on an object of
      // another type that UBSan reports (the asan preset).
      const std::size_t length = r.body.size();
      req.set_body(std::vector<unsigned char>(r.body.begin(), r.body.end()));
      req.headers().set_content_length(length);
      req.headers().set_content_type(it == r.headers.end() ? "application/json" : it->second);
    }
    return req;
  }

  static HttpResponse Head(const http::http_response& resp) {
    HttpResponse out;
    out.status = resp.status_code();
    for (const auto& [k, v] : resp.headers()) out.headers[Lower(k)] = v;
    return out;
  }

  RestConfig config_;
  std::mutex pool_mu_;
  std::map<long long, std::unique_ptr<client::http_client>> pool_;  // Guarded by pool_mu_.
};

}  // namespace

StatusOr<std::unique_ptr<HttpTransport>> NewHttpTransport(const RestConfig& config) {
  if (config.server.empty()) return Status::InvalidArgument("no API server address");
  const std::string src = config.source.empty() ? "config" : config.source;
  KILN_RETURN_IF_ERROR(CheckPem(config.ca_pem, false, src + ": certificate authority"));
  KILN_RETURN_IF_ERROR(CheckPem(config.client_cert_pem, false, src + ": client certificate"));
  KILN_RETURN_IF_ERROR(CheckPem(config.client_key_pem, true, src + ": client key"));
  try {
    web::uri check(config.server);
    (void)check;
  } catch (const std::exception& e) {
    return Status::InvalidArgument(src + ": server \"" + config.server + "\": " + e.what());
  }
  return std::unique_ptr<HttpTransport>(std::make_unique<CppRestTransport>(config));
}

}  // namespace kiln::kube

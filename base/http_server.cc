#include "base/http_server.h"

#include <cpprest/http_listener.h>
#include <cpprest/uri.h>

namespace kiln {
namespace {

namespace http = web::http;

class CppRestServer : public HttpServer {
 public:
  CppRestServer(std::string url, std::map<std::string, HttpHandler> routes)
      : url_(std::move(url)), routes_(std::move(routes)), listener_(url_) {
    listener_.support([this](http::http_request req) { Handle(std::move(req)); });
  }
  ~CppRestServer() override { Stop(); }

  Status Open() {
    try {
      listener_.open().wait();
      open_ = true;
      return Status::Ok();
    } catch (const std::exception& e) {
      return Status::Unavailable("cannot listen on " + url_ + ": " + e.what());
    }
  }

  void Stop() override {
    if (!open_) return;
    open_ = false;
    try {
      listener_.close().wait();
    } catch (const std::exception&) {
      // Closing a listener whose socket already failed: nothing left to do.
    }
  }

  const std::string& url() const override { return url_; }

 private:
  void Handle(http::http_request req) {
    HttpReply reply;
    const auto& method = req.method();
    if (method != http::methods::GET && method != http::methods::HEAD) {
      reply = {405, "text/plain; charset=utf-8", "method not allowed: use GET\n"};
    } else {
      HttpQuery q;
      q.path = web::uri::decode(req.relative_uri().path());
      // Split by hand: web::uri::split_query drops keys without "=", and
      // probes are written "?verbose".
      std::string query = req.relative_uri().query();
      for (size_t start = 0; start <= query.size();) {
        size_t end = query.find('&', start);
        if (end == std::string::npos) end = query.size();
        std::string pair = query.substr(start, end - start);
        if (!pair.empty()) {
          size_t eq = pair.find('=');
          q.query[web::uri::decode(pair.substr(0, eq))] =
              eq == std::string::npos ? "" : web::uri::decode(pair.substr(eq + 1));
        }
        start = end + 1;
      }
      const HttpHandler* best = nullptr;
      size_t best_len = 0;
      for (const auto& [prefix, handler] : routes_) {
        bool match = q.path == prefix || (q.path.size() > prefix.size() &&
                                          q.path.compare(0, prefix.size(), prefix) == 0 &&
                                          q.path[prefix.size()] == '/');
        if (match && prefix.size() >= best_len) {
          best = &handler;
          best_len = prefix.size();
        }
      }
      if (best == nullptr) {
        reply = {404, "text/plain; charset=utf-8", "not found: " + q.path + "\n"};
      } else {
        try {
          reply = (*best)(q);
        } catch (const std::exception& e) {
          reply = {500, "text/plain; charset=utf-8", std::string("internal error: ") + e.what()};
        }
      }
    }
    http::http_response resp(static_cast<http::status_code>(reply.status));
    resp.headers().add("Cache-Control", "no-cache");
    resp.headers().add("X-Content-Type-Options", "nosniff");
    resp.set_body(method == http::methods::HEAD ? std::string() : reply.body, reply.content_type);
    req.reply(resp).then([](pplx::task<void> t) {
      try {
        t.get();
      } catch (const std::exception&) {
        // The client went away before the reply was sent.
      }
    });
  }

  const std::string url_;
  const std::map<std::string, HttpHandler> routes_;
  http::experimental::listener::http_listener listener_;
  bool open_ = false;
};

}  // namespace

StatusOr<std::pair<std::string, int>> ParseBindAddress(const std::string& address) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos) {
    return Status::InvalidArgument("bind address \"" + address +
                                   "\": want host:port, e.g. \":8080\" or \"127.0.0.1:8080\"");
  }
  std::string host = address.substr(0, colon);
  std::string port_text = address.substr(colon + 1);
  int port = 0;
  for (char c : port_text) {
    if (c < '0' || c > '9' || port > 65535) {
      port = -1;
      break;
    }
    port = port * 10 + (c - '0');
  }
  if (port_text.empty() || port <= 0 || port > 65535) {
    return Status::InvalidArgument("bind address \"" + address + "\": port must be 1-65535");
  }
  if (host.find(':') != std::string::npos && host.front() != '[') {
    return Status::InvalidArgument("bind address \"" + address +
                                   "\": put an IPv6 host in brackets, e.g. \"[::1]:8080\"");
  }
  return std::make_pair(host, port);
}

StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const std::string& bind_address,
                                                        std::map<std::string, HttpHandler> routes) {
  KILN_ASSIGN_OR_RETURN(auto host_port, ParseBindAddress(bind_address));
  std::string host = host_port.first.empty() ? "0.0.0.0" : host_port.first;
  std::string url = "http://" + host + ":" + std::to_string(host_port.second);
  auto server = std::make_unique<CppRestServer>(url, std::move(routes));
  KILN_RETURN_IF_ERROR(server->Open());
  return std::unique_ptr<HttpServer>(std::move(server));
}

}  // namespace kiln

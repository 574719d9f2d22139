// Fuzzes how kiln's HTTP server reads requests and how kiln-router routes
// them: the bytes as one connection's stream (pipelined requests included),
// parsed exactly as base/http_server.cc does (Boost.Beast's parser with the
// default HttpLimits, then base/http_request_parser.h), each whole request
// then routed as kiln-router does (router/request_model.h's "model" from the
// body; router/route_table.h by model, Host, path, x-kiln-version and sticky
// header or cookie).
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include <boost/asio/buffer.hpp>

#include "base/http_request_parser.h"
#include "base/http_server.h"
#include "router/endpoint.h"
#include "router/request_model.h"
#include "router/route_config.h"
#include "router/route_table.h"

namespace {

using kiln::router::Route;
using kiln::router::RouteConfig;

// Two routes: one by model with a sticky cookie, one by Host and path with a
// sticky header; two versions each.
std::shared_ptr<const kiln::router::RouteTable> Table() {
  static kiln::router::EndpointRegistry registry;
  RouteConfig config;
  Route chat{"default/chat", {"chat"}, "", "", {}, 10, "v2", "", "session"};
  chat.versions = {{"v1", "stable", 70, {"127.0.0.1:9001"}},
                   {"v2", "canary", 30, {"127.0.0.1:9002", "[::1]:9003"}}};
  Route web{"default/web", {}, "example.com", "/v1/", {}, 0, "", "x-session-id", ""};
  web.versions = {{"a", "stable", 50, {"127.0.0.1:9004"}}, {"b", "canary", 50, {"127.0.0.1:9005"}}};
  config.routes = {chat, web};
  if (!kiln::router::Validate(config).ok()) std::abort();  // The harness's own mistake.
  auto table = kiln::router::RouteTable::Build(config, registry);
  if (!table.ok()) std::abort();
  return *table;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::shared_ptr<const kiln::router::RouteTable> table = Table();
  const kiln::HttpLimits limits;
  const char* next = reinterpret_cast<const char*>(data);
  size_t left = size;
  uint64_t random = 0;
  // Requests one after another on one connection, as pipelined.
  while (left > 0) {
    kiln::http_internal::RequestParser parser;
    kiln::http_internal::ConfigureRequestParser(parser, limits);
    boost::system::error_code ec;
    size_t used = 0;
    // The connection feeds what it has read; the parser takes what it can.
    while (!parser.is_done() && used < left) {
      const size_t n = parser.put(boost::asio::buffer(next + used, left - used), ec);
      if (ec == boost::beast::http::error::need_more) {
        ec = {};
        break;
      }
      if (ec) break;
      if (n == 0) break;
      used += n;
    }
    kiln::HttpRequest request = kiln::http_internal::RequestHead(parser);
    if (ec || !parser.is_done()) return 0;  // The server answers 400/413/431 and closes.
    request.body = parser.get().body();
    const kiln::router::RequestModel model = kiln::router::ReadRequestModel(request.body);
    const kiln::router::Pick pick = table->Choose(model.model, request, random);
    random = random * 6364136223846793005u + 1442695040888963407u;
    if (pick.error == kiln::router::PickError::kNone && pick.endpoint == nullptr) __builtin_trap();
    if (used == 0) return 0;
    next += used;
    left -= used;
  }
  return 0;
}

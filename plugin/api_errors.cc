#include "plugin/api_errors.h"

#include "kube/api_error.h"

namespace kiln::plugin {
namespace {

std::string Quoted(const std::string& s) { return "\"" + s + "\""; }

std::string Where(const Attempt& a) {
  return a.ns.empty() ? std::string() : " in namespace " + Quoted(a.ns);
}

}  // namespace

std::string Explain(const Status& status, const Attempt& a) {
  const kube::ApiError* api = kube::GetApiError(status);
  if (api == nullptr) {
    if (status.code() == StatusCode::kUnavailable ||
        status.code() == StatusCode::kDeadlineExceeded) {
      return "cannot reach the API server" + (a.server.empty() ? "" : " at " + a.server) + ": " +
             status.message();
    }
    return status.message();
  }
  // A subresource (pods/log) answered 404: the object exists, what it was
  // asked for does not; the fallthrough below says so with the server's words.
  const bool subresource = a.resource.find('/') != std::string::npos;
  if (kube::IsNotFound(status) && !subresource) {
    if (!a.name.empty() && (api->name == a.name || api->name.empty()) &&
        api->message.find("could not find the requested resource") == std::string::npos) {
      return a.kind + " " + Quoted(a.name) + " not found" + Where(a);
    }
    return "the API server does not serve " + a.resource +
           (a.resource.find("kiln.dev") != std::string::npos
                ? ": are kiln's CRDs installed (kubectl apply -f crds/)?"
                : "") +
           " (" + api->message + ")";
  }
  if (kube::IsForbidden(status)) {
    std::string target = a.resource + (a.name.empty() ? "" : " " + Quoted(a.name));
    return "forbidden: you may not " + a.verb + " " + target + Where(a) +
           (api->message.empty() ? "" : " (the API server: " + api->message + ")");
  }
  if (kube::IsUnauthorized(status)) {
    return "unauthorized: the API server" + (a.server.empty() ? "" : " at " + a.server) +
           " did not accept the credentials (" + api->message + ")";
  }
  return a.verb + " " + a.resource + (a.name.empty() ? "" : " " + Quoted(a.name)) + Where(a) +
         ": " + std::to_string(api->http_code) + " " + api->reason +
         (api->message.empty() ? "" : ": " + api->message);
}

}  // namespace kiln::plugin

#include "worker/storage/s3_options.h"

#include <filesystem>
#include <fstream>
#include <sstream>

namespace kiln::storage {
namespace {

std::string Env(const std::function<const char*(const char*)>& getenv, const char* name) {
  const char* v = getenv(name);
  return v == nullptr ? "" : v;
}

// The whole file at `path`, its trailing newline dropped (Secret files written
// by hand often have one).
StatusOr<std::string> ReadSecretFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::InvalidArgument("cannot read S3 credentials file " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

}  // namespace

StatusOr<S3Options> S3OptionsFromEnvironment(
    const std::function<const char*(const char*)>& getenv) {
  S3Options o;
  for (const char* name : {"AWS_REGION", "AWS_DEFAULT_REGION"}) {
    if (std::string r = Env(getenv, name); !r.empty()) {
      o.region = r;
      break;
    }
  }
  std::string endpoint = Env(getenv, "AWS_ENDPOINT_URL_S3");
  if (endpoint.empty()) endpoint = Env(getenv, "AWS_ENDPOINT_URL");
  const bool custom = !endpoint.empty();
  if (!custom) endpoint = "https://s3." + o.region + ".amazonaws.com";
  while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
  const auto scheme_end = endpoint.find("://");
  if (scheme_end == std::string::npos ||
      (endpoint.compare(0, scheme_end, "http") != 0 &&
       endpoint.compare(0, scheme_end, "https") != 0) ||
      endpoint.size() == scheme_end + 3 ||
      endpoint.find('/', scheme_end + 3) != std::string::npos) {
    return Status::InvalidArgument("S3 endpoint \"" + endpoint +
                                   "\" is not http(s)://host[:port] (AWS_ENDPOINT_URL)");
  }
  o.endpoint = endpoint;
  const std::string style = Env(getenv, "KILN_S3_ADDRESSING_STYLE");
  if (style.empty()) {
    o.path_style = custom;
  } else if (style == "path" || style == "virtual") {
    o.path_style = style == "path";
  } else {
    return Status::InvalidArgument("KILN_S3_ADDRESSING_STYLE is \"" + style +
                                   "\"; use path or virtual");
  }

  S3Credentials& c = o.credentials;
  c.access_key_id = Env(getenv, "AWS_ACCESS_KEY_ID");
  c.secret_access_key = Env(getenv, "AWS_SECRET_ACCESS_KEY");
  c.session_token = Env(getenv, "AWS_SESSION_TOKEN");
  const std::string dir = Env(getenv, "KILN_S3_CREDENTIALS_DIR");
  if (c.access_key_id.empty() && c.secret_access_key.empty() && !dir.empty()) {
    namespace fs = std::filesystem;
    KILN_ASSIGN_OR_RETURN(c.access_key_id,
                          ReadSecretFile((fs::path(dir) / "AWS_ACCESS_KEY_ID").string()));
    KILN_ASSIGN_OR_RETURN(c.secret_access_key,
                          ReadSecretFile((fs::path(dir) / "AWS_SECRET_ACCESS_KEY").string()));
    std::error_code ec;
    const auto token = fs::path(dir) / "AWS_SESSION_TOKEN";
    if (fs::exists(token, ec)) {
      KILN_ASSIGN_OR_RETURN(c.session_token, ReadSecretFile(token.string()));
    }
  }
  if (c.access_key_id.empty() || c.secret_access_key.empty()) {
    return Status::InvalidArgument(
        "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
        "KILN_S3_CREDENTIALS_DIR to a mounted Secret holding files of those names");
  }
  // The CAs to trust: AWS_CA_BUNDLE, else a ca.crt in the mounted Secret
  // (a store behind a private CA), else the system roots.
  std::string bundle = Env(getenv, "AWS_CA_BUNDLE");
  const char* bundle_source = "AWS_CA_BUNDLE";
  if (bundle.empty() && !dir.empty()) {
    std::error_code ec;
    const auto ca = std::filesystem::path(dir) / kS3CaFile;
    if (std::filesystem::exists(ca, ec)) {
      bundle = ca.string();
      bundle_source = "the CA file";
    }
  }
  if (!bundle.empty()) {
    std::ifstream in(bundle, std::ios::binary);
    if (!in)
      return Status::InvalidArgument(std::string("cannot read ") + bundle_source + " " + bundle);
    std::stringstream ss;
    ss << in.rdbuf();
    o.ca_pem = ss.str();
    if (o.ca_pem.find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
      return Status::InvalidArgument(std::string(bundle_source) + " " + bundle +
                                     " holds no PEM certificate");
    }
  }
  return o;
}

}  // namespace kiln::storage

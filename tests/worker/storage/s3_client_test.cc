// The S3 client: SigV4 against AWS's published example, and the client's
// requests, retries and errors against a scripted transport.
#include "worker/storage/s3_client.h"

#include <catch2/catch.hpp>

#include "tests/kube/fake_transport.h"
#include "tests/support/fake_clock.h"
#include "tests/support/temp_dir.h"
#include "worker/storage/s3_signer.h"

namespace kiln::storage {
namespace {

using kube::testing::FakeTransport;

TEST_CASE("SigV4 matches AWS's GET Object example", "[storage][s3]") {
  // docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html,
  // "Example: GET Object".
  const std::string empty = Sha256Hex("");
  CHECK(empty == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  SigningInput in{"GET",
                  "/test.txt",
                  {},
                  {{"Host", "examplebucket.s3.amazonaws.com"},
                   {"Range", "bytes=0-9"},
                   {"x-amz-content-sha256", empty},
                   {"x-amz-date", "20130524T000000Z"}},
                  empty};
  CHECK(CanonicalRequest(in) ==
        "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
        "x-amz-content-sha256:" +
            empty +
            "\nx-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n" +
            empty);
  const std::string scope = CredentialScope("20130524T000000Z", "us-east-1", "s3");
  CHECK(scope == "20130524/us-east-1/s3/aws4_request");
  CHECK(StringToSign("20130524T000000Z", scope, CanonicalRequest(in)) ==
        "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
        "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
  S3Credentials creds{"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", ""};
  CHECK(Authorization(creds, "us-east-1", "s3", "20130524T000000Z", in) ==
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

TEST_CASE("query strings and keys are encoded as S3 signs them", "[storage][s3]") {
  CHECK(UriEncode("a b/c+d~e", true) == "a%20b/c%2Bd~e");
  CHECK(UriEncode("a/b", false) == "a%2Fb");
  CHECK(CanonicalQuery({{"prefix", "run/x"}, {"list-type", "2"}, {"uploads", ""}}) ==
        "list-type=2&prefix=run%2Fx&uploads=");
  CHECK(AmzDate(std::chrono::system_clock::from_time_t(1369353600)) == "20130524T000000Z");
}

// Hands every client transport's requests to one FakeTransport the test scripts.
class Forward final : public kube::HttpTransport {
 public:
  explicit Forward(FakeTransport* to) : to_(to) {}
  StatusOr<kube::HttpResponse> Do(const kube::HttpRequest& r) override { return to_->Do(r); }
  Status Stream(const kube::HttpRequest& r,
                const std::function<void(const kube::HttpResponse&)>& on_head,
                const std::function<bool(std::string_view)>& on_chunk,
                const std::atomic<bool>* cancel) override {
    return to_->Stream(r, on_head, on_chunk, cancel);
  }

 private:
  FakeTransport* to_;
};

struct Fixture {
  kiln::testing::FakeClock clock;
  FakeTransport fake;
  FakeTransport* transport = &fake;
  std::vector<std::string> servers;
  std::unique_ptr<S3Client> client;

  explicit Fixture(bool path_style = true) {
    S3Options o;
    o.endpoint = "http://127.0.0.1:9000";
    o.path_style = path_style;
    o.credentials = {"AK", "SK", "TOKEN"};
    o.clock = &clock;
    o.max_attempts = 3;
    client = std::make_unique<S3Client>(o, [this](const std::string& server, const std::string&) {
      servers.push_back(server);
      return StatusOr<std::unique_ptr<kube::HttpTransport>>(std::make_unique<Forward>(&fake));
    });
  }
};

TEST_CASE("requests are signed, path-style or virtual-hosted", "[storage][s3]") {
  Fixture f;
  f.transport->Respond(200, "hello");
  auto got = f.client->Get("b", "dir/a b.bin");
  REQUIRE(got.ok());
  CHECK(*got == "hello");
  auto req = f.transport->requests().at(0);
  CHECK(req.method == "GET");
  CHECK(req.path == "/b/dir/a%20b.bin");
  CHECK(req.headers.at("Authorization").rfind("AWS4-HMAC-SHA256 Credential=AK/", 0) == 0);
  CHECK(req.headers.at("Authorization")
            .find("SignedHeaders=host;x-amz-content-sha256;x-amz-date;"
                  "x-amz-security-token,") != std::string::npos);
  CHECK(req.headers.at("x-amz-security-token") == "TOKEN");
  CHECK(f.servers == std::vector<std::string>{"http://127.0.0.1:9000"});

  Fixture v(/*path_style=*/false);
  v.transport->Respond(200, "x");
  REQUIRE(v.client->Get("b", "k").ok());
  CHECK(v.transport->requests().at(0).path == "/k");
  CHECK(v.servers == std::vector<std::string>{"http://b.127.0.0.1:9000"});
}

TEST_CASE("throttling and 5xx are retried with backoff, other errors are final", "[storage][s3]") {
  Fixture f;
  SECTION("503 SlowDown, then success") {
    const auto start = f.clock.Now();
    f.transport->Respond(503, "<Error><Code>SlowDown</Code><Message>Reduce</Message></Error>");
    f.transport->Fail(Status::Unavailable("connection reset"));
    f.transport->Respond(200, "ok");
    auto got = f.client->Get("b", "k");
    REQUIRE(got.ok());
    CHECK(f.transport->requests().size() == 3);
    CHECK(f.clock.Now() - start == std::chrono::milliseconds(200 + 400));
  }
  SECTION("throttled every time: Unavailable naming SlowDown") {
    for (int i = 0; i < 3; ++i) {
      f.transport->Respond(503, "<Error><Code>SlowDown</Code><Message>Reduce</Message></Error>");
    }
    auto got = f.client->Get("b", "k");
    CHECK(got.status().code() == StatusCode::kUnavailable);
    CHECK(got.status().message().find("SlowDown") != std::string::npos);
    CHECK(got.status().message().find("gave up after 3 attempts") != std::string::npos);
  }
  SECTION("rejected credentials are not retried") {
    f.transport->Respond(403, "<Error><Code>InvalidAccessKeyId</Code></Error>");
    auto got = f.client->Get("b", "k");
    CHECK(got.status().code() == StatusCode::kPermissionDenied);
    CHECK(got.status().message().find("credentials were rejected") != std::string::npos);
    CHECK(f.transport->requests().size() == 1);
  }
  SECTION("a missing bucket is NotFound") {
    f.transport->Respond(404, "<Error><Code>NoSuchBucket</Code></Error>");
    auto got = f.client->Get("b", "k");
    CHECK(got.status().code() == StatusCode::kNotFound);
    CHECK(got.status().message().find("bucket does not exist") != std::string::npos);
  }
}

TEST_CASE("listing follows continuation tokens", "[storage][s3]") {
  Fixture f;
  f.transport->Respond(200,
                       "<ListBucketResult><IsTruncated>true</IsTruncated>"
                       "<Contents><Key>p/a&amp;1</Key><Size>3</Size></Contents>"
                       "<NextContinuationToken>tok/1</NextContinuationToken></ListBucketResult>");
  f.transport->Respond(200,
                       "<ListBucketResult><IsTruncated>false</IsTruncated>"
                       "<Contents><Key>p/b</Key><Size>12</Size></Contents></ListBucketResult>");
  auto listed = f.client->List("b", "p/");
  REQUIRE(listed.ok());
  REQUIRE(listed->size() == 2);
  CHECK((*listed)[0].key == "p/a&1");
  CHECK((*listed)[1].size == 12);
  CHECK(f.transport->requests().at(1).path ==
        "/b?continuation-token=tok%2F1&list-type=2&prefix=p%2F");
}

TEST_CASE("multipart upload requests", "[storage][s3]") {
  Fixture f;
  f.transport->Respond(200,
                       "<InitiateMultipartUploadResult><UploadId>U1</UploadId>"
                       "</InitiateMultipartUploadResult>");
  f.transport->Respond(200, "", {{"etag", "\"e1\""}});
  f.transport->Respond(200, "<CompleteMultipartUploadResult/>");
  auto id = f.client->CreateMultipartUpload("b", "k");
  REQUIRE(id.ok());
  CHECK(*id == "U1");
  auto etag = f.client->UploadPart("b", "k", "U1", 1, "data");
  REQUIRE(etag.ok());
  REQUIRE(f.client->CompleteMultipartUpload("b", "k", "U1", {*etag}).ok());
  auto reqs = f.transport->requests();
  CHECK(reqs[0].path == "/b/k?uploads=");
  CHECK(reqs[1].path == "/b/k?partNumber=1&uploadId=U1");
  CHECK(reqs[1].headers.at("x-amz-content-sha256") == Sha256Hex("data"));
  CHECK(reqs[2].body.find("<ETag>&quot;e1&quot;</ETag>") != std::string::npos);
}

TEST_CASE("options come from the AWS variables or a mounted Secret", "[storage][s3]") {
  std::map<std::string, std::string> env = {{"AWS_ACCESS_KEY_ID", "AK"},
                                            {"AWS_SECRET_ACCESS_KEY", "SK"},
                                            {"AWS_ENDPOINT_URL", "http://127.0.0.1:8333/"},
                                            {"AWS_REGION", "eu-west-1"}};
  auto getenv = [&](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  auto o = S3OptionsFromEnvironment(getenv);
  REQUIRE(o.ok());
  CHECK(o->endpoint == "http://127.0.0.1:8333");
  CHECK(o->path_style);
  CHECK(o->region == "eu-west-1");
  env.erase("AWS_ENDPOINT_URL");
  o = S3OptionsFromEnvironment(getenv);
  REQUIRE(o.ok());
  CHECK(o->endpoint == "https://s3.eu-west-1.amazonaws.com");
  CHECK_FALSE(o->path_style);
  env.erase("AWS_SECRET_ACCESS_KEY");
  CHECK(S3OptionsFromEnvironment(getenv).status().code() == StatusCode::kInvalidArgument);
  env.erase("AWS_ACCESS_KEY_ID");
  env["KILN_S3_CREDENTIALS_DIR"] = "/nonexistent/secret";
  auto missing = S3OptionsFromEnvironment(getenv);
  CHECK(missing.status().code() == StatusCode::kInvalidArgument);
  CHECK(missing.status().message().find("/nonexistent/secret/AWS_ACCESS_KEY_ID") !=
        std::string::npos);
  CHECK(ParseS3Uri("s3://bkt/a/b").value().key == "a/b");
  CHECK(ParseS3Uri("s3:///x").status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("the CAs to trust: AWS_CA_BUNDLE, else ca.crt in the mounted Secret", "[storage][s3]") {
  kiln::testing::TempDir secret;
  secret.Write("AWS_ACCESS_KEY_ID", "AK\n");
  secret.Write("AWS_SECRET_ACCESS_KEY", "SK");
  std::map<std::string, std::string> env = {{"KILN_S3_CREDENTIALS_DIR", secret.path()},
                                            {"AWS_ENDPOINT_URL_S3", "https://store.local:9000"}};
  auto getenv = [&](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  auto o = S3OptionsFromEnvironment(getenv);
  REQUIRE(o.ok());
  CHECK(o->credentials.access_key_id == "AK");
  CHECK(o->ca_pem.empty());  // The system roots.

  const std::string secret_ca = "-----BEGIN CERTIFICATE-----\nfrom the Secret\n";
  secret.Write(kS3CaFile, secret_ca);
  o = S3OptionsFromEnvironment(getenv);
  REQUIRE(o.ok());
  CHECK(o->ca_pem == secret_ca);

  kiln::testing::TempDir other;
  const std::string bundle_ca = "-----BEGIN CERTIFICATE-----\nfrom AWS_CA_BUNDLE\n";
  env["AWS_CA_BUNDLE"] = other.Write("bundle.pem", bundle_ca);
  o = S3OptionsFromEnvironment(getenv);
  REQUIRE(o.ok());
  CHECK(o->ca_pem == bundle_ca);  // The variable wins.

  env.erase("AWS_CA_BUNDLE");
  secret.Write(kS3CaFile, "not a certificate");
  auto bad = S3OptionsFromEnvironment(getenv);
  CHECK(bad.status().code() == StatusCode::kInvalidArgument);
  CHECK_THAT(bad.status().message(), Catch::Contains("ca.crt holds no PEM certificate"));
}

}  // namespace
}  // namespace kiln::storage

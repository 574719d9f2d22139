#include "tests/support/test_pki.h"

#include <memory>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace kiln::testing {
namespace {

template <typename T, void (*F)(T*)>
struct Deleter {
  void operator()(T* p) const { F(p); }
};
using Key = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using Cert = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using Bio = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;

std::string Drain(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(n));
}

std::string KeyPem(EVP_PKEY* key) {
  Bio bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  return Drain(bio.get());
}

std::string CertPem(X509* cert) {
  Bio bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), cert);
  return Drain(bio.get());
}

void AddExt(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

Cert NewCert(EVP_PKEY* key, const std::string& cn, const std::vector<std::string>& orgs,
             long not_before, long not_after) {
  Cert cert(X509_new());
  X509_set_version(cert.get(), 2);
  static long serial = 1000;
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), ++serial);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), not_before);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), not_after);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  for (const auto& o : orgs) {
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(o.c_str()), -1, -1, 0);
  }
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  return cert;
}

StatusOr<Key> ReadKey(const std::string& pem) {
  Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  Key key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return Status::InvalidArgument("not a PEM private key");
  return key;
}

StatusOr<Cert> ReadCert(const std::string& pem) {
  Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  Cert cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) return Status::InvalidArgument("not a PEM certificate");
  return cert;
}

}  // namespace

StatusOr<CertAndKey> NewTestCa(const std::string& common_name) {
  Key key(EVP_EC_gen("P-256"));
  if (!key) return Status::Internal("EC key generation failed");
  Cert cert = NewCert(key.get(), common_name, {}, -3600, 86400);
  X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get()));
  AddExt(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE");
  AddExt(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) == 0)
    return Status::Internal("signing failed");
  return CertAndKey{CertPem(cert.get()), KeyPem(key.get())};
}

StatusOr<CertAndKey> IssueClientCert(const CertAndKey& ca, const std::string& common_name,
                                     const std::vector<std::string>& organizations,
                                     std::chrono::seconds not_before,
                                     std::chrono::seconds not_after) {
  KILN_ASSIGN_OR_RETURN(Key ca_key, ReadKey(ca.key_pem));
  KILN_ASSIGN_OR_RETURN(Cert ca_cert, ReadCert(ca.cert_pem));
  Key key(EVP_EC_gen("P-256"));
  if (!key) return Status::Internal("EC key generation failed");
  Cert cert = NewCert(key.get(), common_name, organizations, static_cast<long>(not_before.count()),
                      static_cast<long>(not_after.count()));
  X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_cert.get()));
  AddExt(cert.get(), ca_cert.get(), NID_basic_constraints, "critical,CA:FALSE");
  AddExt(cert.get(), ca_cert.get(), NID_key_usage, "critical,digitalSignature");
  AddExt(cert.get(), ca_cert.get(), NID_ext_key_usage, "clientAuth");
  if (X509_sign(cert.get(), ca_key.get(), EVP_sha256()) == 0) {
    return Status::Internal("signing failed");
  }
  return CertAndKey{CertPem(cert.get()), KeyPem(key.get())};
}

}  // namespace kiln::testing

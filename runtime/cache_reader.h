// CacheReader: a Reader over an informer's Store — no API calls, so reads are
// cheap and a reconcile sees what the watch has delivered so far (possibly a
// little behind the server; writes must still carry resourceVersion). Before
// the informer has synced, every read fails Unavailable rather than answer
// from a partial cache. Thread-safe; the informer or store must outlive it.
#ifndef KILN_RUNTIME_CACHE_READER_H_
#define KILN_RUNTIME_CACHE_READER_H_

#include <string>
#include <vector>

#include "kube/informer.h"
#include "kube/store.h"
#include "runtime/reader.h"

namespace kiln::runtime {

class CacheReader final : public Reader {
 public:
  // Reads `informer`'s cache once it has synced.
  explicit CacheReader(const kube::Informer& informer);
  // Reads `store` as it is (a store filled by hand counts as synced).
  explicit CacheReader(const kube::Store& store);

  StatusOr<kube::Object> Get(const std::string& ns, const std::string& name) const override;
  StatusOr<std::vector<kube::Object>> List(const ListFilter& filter = {}) const override;

 private:
  Status Synced() const;

  const kube::Store& store_;
  const kube::Informer* const informer_;  // Null when reading a bare store.
  const std::string what_;                // The resource, for messages.
};

}  // namespace kiln::runtime

#endif  // KILN_RUNTIME_CACHE_READER_H_

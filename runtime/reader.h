// Reader: the read half of a client, in controller-runtime's sense. Reconcilers
// read objects of one resource through it (from the informer's cache in
// production, from a FakeReader in unit tests) and write through kube::Client.
// Objects are shared and immutable: copy one before changing it.
// Implementations are thread-safe.
#ifndef KILN_RUNTIME_READER_H_
#define KILN_RUNTIME_READER_H_

#include <string>
#include <vector>

#include "base/statusor.h"
#include "kube/label_selector.h"
#include "kube/store.h"

namespace kiln::runtime {

// Which objects List returns: all conditions hold.
struct ListFilter {
  std::string ns;              // Empty: every namespace (and cluster-scoped objects).
  kube::LabelSelector labels;  // Empty: any labels.
  // With `index` set: only objects the index files under `index_value`
  // (kube::kIndexOwner with an owner's UID, or a registered index's name).
  std::string index;
  std::string index_value;
};

class Reader {
 public:
  virtual ~Reader() = default;

  // The object `ns`/`name` (`ns` empty for cluster-scoped ones); NotFound if absent.
  virtual StatusOr<kube::Object> Get(const std::string& ns, const std::string& name) const = 0;
  // The matching objects, sorted by key. InvalidArgument for an index the
  // cache does not have.
  virtual StatusOr<std::vector<kube::Object>> List(const ListFilter& filter = {}) const = 0;
};

}  // namespace kiln::runtime

#endif  // KILN_RUNTIME_READER_H_

// The machine's host name (the pod name inside Kubernetes).
#ifndef KILN_BASE_HOSTNAME_H_
#define KILN_BASE_HOSTNAME_H_

#include <string>

namespace kiln {

// gethostname(2); empty when it fails.
std::string Hostname();

}  // namespace kiln

#endif  // KILN_BASE_HOSTNAME_H_

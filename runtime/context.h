// The controller runtime's name for kiln::Context (base/context.h), which
// moved to base so that the Kubernetes client can honour it too.
#ifndef KILN_RUNTIME_CONTEXT_H_
#define KILN_RUNTIME_CONTEXT_H_

#include "base/context.h"

namespace kiln::runtime {

using Context = kiln::Context;
using ScopedContext = kiln::ScopedContext;

}  // namespace kiln::runtime

#endif  // KILN_RUNTIME_CONTEXT_H_

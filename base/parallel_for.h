// ParallelFor: runs fn(0) ... fn(n - 1) on up to `width` threads (the caller's
// among them) and returns when all have returned. For a handful of blocking
// calls that need not wait on each other, e.g. one API request per pod of a
// gang; the calls' own rate limits still apply. fn must not throw.
#ifndef KILN_BASE_PARALLEL_FOR_H_
#define KILN_BASE_PARALLEL_FOR_H_

#include <cstddef>
#include <functional>

namespace kiln {

void ParallelFor(std::size_t n, std::size_t width, const std::function<void(std::size_t)>& fn);

}  // namespace kiln

#endif  // KILN_BASE_PARALLEL_FOR_H_

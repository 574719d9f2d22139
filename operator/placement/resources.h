// Resources: the schedulable amounts placement counts on a node or asks for a
// worker (GPUs, CPU in millicores, memory in bytes). A plain value; thread-safe
// to share once built.
#ifndef KILN_OPERATOR_PLACEMENT_RESOURCES_H_
#define KILN_OPERATOR_PLACEMENT_RESOURCES_H_

#include <algorithm>
#include <cstdint>

namespace kiln::placement {

struct Resources {
  int64_t gpus = 0;          // nvidia.com/gpu
  int64_t cpu_millis = 0;    // cpu, in millicores ("500m" = 500, "4" = 4000)
  int64_t memory_bytes = 0;  // memory, in bytes

  bool operator==(const Resources&) const = default;
  Resources& operator+=(const Resources& o) {
    gpus += o.gpus;
    cpu_millis += o.cpu_millis;
    memory_bytes += o.memory_bytes;
    return *this;
  }
  Resources& operator-=(const Resources& o) {
    gpus -= o.gpus;
    cpu_millis -= o.cpu_millis;
    memory_bytes -= o.memory_bytes;
    return *this;
  }
  friend Resources operator+(Resources a, const Resources& b) { return a += b; }
  friend Resources operator-(Resources a, const Resources& b) { return a -= b; }
};

// `allocatable - used`, each amount clamped at zero: informers can report a
// node whose pods hold more than it has (a shrunk node), and such a node has
// no room, not negative room.
inline Resources FreeOf(const Resources& allocatable, const Resources& used) {
  return {std::max<int64_t>(allocatable.gpus - used.gpus, 0),
          std::max<int64_t>(allocatable.cpu_millis - used.cpu_millis, 0),
          std::max<int64_t>(allocatable.memory_bytes - used.memory_bytes, 0)};
}

// How many workers each asking `per_worker` fit in `free`, at most `cap`. An
// amount a worker does not ask for (zero) does not limit it.
inline int64_t WorkersThatFit(const Resources& free, const Resources& per_worker, int64_t cap) {
  int64_t n = cap;
  if (per_worker.gpus > 0) n = std::min(n, free.gpus / per_worker.gpus);
  if (per_worker.cpu_millis > 0) n = std::min(n, free.cpu_millis / per_worker.cpu_millis);
  if (per_worker.memory_bytes > 0) n = std::min(n, free.memory_bytes / per_worker.memory_bytes);
  return std::max<int64_t>(n, 0);
}

}  // namespace kiln::placement

#endif  // KILN_OPERATOR_PLACEMENT_RESOURCES_H_

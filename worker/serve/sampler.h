// Sampling the next token from a model's logits: greedy, temperature, top-k
// and top-p (nucleus), with a per-request seeded generator so a given seed
// always produces the same text. Stateless apart from the Rng passed in.
#ifndef KILN_WORKER_SERVE_SAMPLER_H_
#define KILN_WORKER_SERVE_SAMPLER_H_

#include <cstdint>
#include <span>

#include "base/status.h"

namespace kiln::serve {

struct SamplingParams {
  // 0 picks the most likely token (greedy); otherwise logits are divided by it.
  double temperature = 1.0;
  // Keep only the k most likely tokens; 0 keeps all.
  int top_k = 0;
  // Keep the smallest set of most likely tokens whose probability reaches p; 1 keeps all.
  double top_p = 1.0;
  uint64_t seed = 0;

  // InvalidArgument naming the field unless temperature >= 0, top_k >= 0 and
  // 0 < top_p <= 1.
  Status Validate() const;
};

// xoshiro256** seeded through splitmix64: fast, small, and the same sequence
// on every platform and standard library (unlike std:: distributions).
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t Next();
  // Uniform in [0, 1) with 53 random bits.
  double Uniform();

 private:
  uint64_t s_[4];
};

// The next token from `logits` (the real vocabulary only, padding excluded).
// Ties in greedy decoding go to the lowest token id.
int32_t Sample(std::span<const float> logits, const SamplingParams& params, Rng& rng);

}  // namespace kiln::serve

#endif  // KILN_WORKER_SERVE_SAMPLER_H_

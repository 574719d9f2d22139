#include "worker/serve/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

namespace kiln::serve {

Status SamplingParams::Validate() const {
  if (!(temperature >= 0) || !std::isfinite(temperature)) {
    return Status::InvalidArgument("temperature must be a finite number >= 0");
  }
  if (top_k < 0) return Status::InvalidArgument("top_k must be >= 0");
  if (!(top_p > 0 && top_p <= 1)) return Status::InvalidArgument("top_p must be in (0, 1]");
  return Status::Ok();
}

Rng::Rng(uint64_t seed) {
  for (auto& s : s_) {
    seed += 0x9e3779b97f4a7c15ULL;
    uint64_t z = seed;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    s = z ^ (z >> 31);
  }
}

uint64_t Rng::Next() {
  auto rotl = [](uint64_t x, int k) { return (x << k) | (x >> (64 - k)); };
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Rng::Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

int32_t Sample(std::span<const float> logits, const SamplingParams& p, Rng& rng) {
  const auto V = static_cast<int32_t>(logits.size());
  if (p.temperature == 0 || p.top_k == 1) {
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  if ((p.top_k <= 0 || p.top_k >= V) && p.top_p >= 1) {
    // Every token is a candidate: the draw needs no order, so none is paid
    // for (sorting GPT-2's 50,257 logits per token cost milliseconds).
    const auto max = static_cast<double>(*std::max_element(logits.begin(), logits.end()));
    std::vector<double> probs(logits.size());
    double sum = 0;
    for (size_t i = 0; i < probs.size(); ++i) {
      probs[i] = std::exp((static_cast<double>(logits[i]) - max) / p.temperature);
      sum += probs[i];
    }
    double r = rng.Uniform() * sum;
    for (size_t i = 0; i < probs.size(); ++i) {
      r -= probs[i];
      if (r < 0) return static_cast<int32_t>(i);
    }
    // Rounding left a sliver: the most likely token.
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  // Candidates, most likely first (ties by token id, so the order is total).
  std::vector<int32_t> ids(static_cast<size_t>(V));
  std::iota(ids.begin(), ids.end(), 0);
  auto more_likely = [&](int32_t a, int32_t b) {
    const float la = logits[static_cast<size_t>(a)], lb = logits[static_cast<size_t>(b)];
    return la > lb || (la == lb && a < b);
  };
  size_t keep = ids.size();
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < keep) {
    keep = static_cast<size_t>(p.top_k);
    std::partial_sort(ids.begin(), ids.begin() + static_cast<ptrdiff_t>(keep), ids.end(),
                      more_likely);
  } else {
    std::sort(ids.begin(), ids.end(), more_likely);
  }
  // Softmax over the kept candidates at the temperature, in double.
  const auto max = static_cast<double>(logits[static_cast<size_t>(ids[0])]);
  std::vector<double> probs(keep);
  double sum = 0;
  for (size_t i = 0; i < keep; ++i) {
    probs[i] =
        std::exp((static_cast<double>(logits[static_cast<size_t>(ids[i])]) - max) / p.temperature);
    sum += probs[i];
  }
  for (auto& q : probs) q /= sum;
  if (p.top_p < 1) {
    double cumulative = 0;
    size_t n = 0;
    while (n < keep) {
      cumulative += probs[n++];
      if (cumulative >= p.top_p) break;
    }
    keep = n;
    sum = cumulative;
  } else {
    sum = 1;
  }
  double r = rng.Uniform() * sum;
  for (size_t i = 0; i < keep; ++i) {
    r -= probs[i];
    if (r < 0) return ids[i];
  }
  return ids[keep - 1];  // Rounding left a sliver: the last candidate.
}

}  // namespace kiln::serve

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

namespace {

// exp((logit - max) / temperature) of every token, in token order, into
// `out`; returns their sum (the softmax's denominator), in double.
double Weights(std::span<const float> logits, double temperature, std::vector<double>& out) {
  const auto max = static_cast<double>(*std::max_element(logits.begin(), logits.end()));
  out.resize(logits.size());
  double sum = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = std::exp((static_cast<double>(logits[i]) - max) / temperature);
    sum += out[i];
  }
  return sum;
}

}  // namespace

int32_t Sample(std::span<const float> logits, const SamplingParams& p, Rng& rng) {
  const auto V = static_cast<int32_t>(logits.size());
  if (p.temperature == 0 || p.top_k == 1) {
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  if ((p.top_k <= 0 || p.top_k >= V) && p.top_p >= 1) {
    // Every token is a candidate: the draw needs no order, so none is paid
    // for (sorting GPT-2's 50,257 logits per token cost milliseconds).
    std::vector<double> probs;
    const double sum = Weights(logits, p.temperature, probs);
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
  if (p.top_k <= 0 || p.top_k >= V) {
    // Top-p alone: the nucleus is usually a small part of the vocabulary,
    // so sort only the most likely m tokens, 64 first, four times as many
    // until their probability reaches top_p (a full sort of GPT-2's 50,257
    // logits cost 5 ms per token).
    std::vector<double> weight;
    const double total = Weights(logits, p.temperature, weight);
    size_t m = std::min<size_t>(ids.size(), 64), n = 0;
    double cumulative = 0;
    while (true) {
      std::partial_sort(ids.begin(), ids.begin() + static_cast<ptrdiff_t>(m), ids.end(),
                        more_likely);
      cumulative = 0;
      n = 0;
      while (n < m && cumulative < p.top_p) {
        cumulative += weight[static_cast<size_t>(ids[n++])] / total;
      }
      if (cumulative >= p.top_p || m == ids.size()) break;
      m = std::min(ids.size(), m * 4);
    }
    double r = rng.Uniform() * cumulative;
    for (size_t i = 0; i < n; ++i) {
      r -= weight[static_cast<size_t>(ids[i])] / total;
      if (r < 0) return ids[i];
    }
    return ids[n - 1];  // Rounding left a sliver: the last candidate.
  }
  // Top-k (then top-p among those k).
  size_t keep = static_cast<size_t>(p.top_k);
  std::partial_sort(ids.begin(), ids.begin() + static_cast<ptrdiff_t>(keep), ids.end(),
                    more_likely);
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

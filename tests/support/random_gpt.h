// RandomGpt: a small GPT for serving tests — GPT-2 initialisation for `seed`,
// then a deterministic uniform perturbation of every parameter in
// [-noise/2, noise/2), so logits differ clearly by token and position (a
// fresh GPT-2 init is nearly uniform). Vocabulary 257 (padded 320).
#ifndef KILN_TESTS_SUPPORT_RANDOM_GPT_H_
#define KILN_TESTS_SUPPORT_RANDOM_GPT_H_

#include <cstdio>
#include <cstdlib>

#include "worker/model/gpt.h"

namespace kiln::testing {

inline model::Gpt<float> RandomGpt(int layers, int heads, int channels, int context, uint64_t seed,
                                   float noise) {
  model::GptConfig c;
  c.num_layers = layers;
  c.num_heads = heads;
  c.channels = channels;
  c.max_seq_len = context;
  c.vocab_size = 257;
  c.padded_vocab_size = 320;
  auto m = model::Gpt<float>::Create(c, seed);
  if (!m.ok()) {  // A bad shape in the test itself.
    std::fprintf(stderr, "RandomGpt: %s\n", m.status().ToString().c_str());
    std::abort();
  }
  auto x = static_cast<uint32_t>(seed * 2654435761u + 1);
  for (float& p : m->params()) {
    x = x * 1664525u + 1013904223u;
    p += (static_cast<float>(x >> 8) / 16777216.0f - 0.5f) * noise;
  }
  return std::move(*m);
}

}  // namespace kiln::testing

#endif  // KILN_TESTS_SUPPORT_RANDOM_GPT_H_

// Tiny training runs in process on real text: the fortunes corpus prepared
// into a test's folder, and a model small enough to train in a second.
// scripts/setup.sh installs the fortunes package.
#ifndef KILN_TESTS_SUPPORT_TINY_TRAINING_H_
#define KILN_TESTS_SUPPORT_TINY_TRAINING_H_

#include <string>

#include <catch2/catch.hpp>

#include "tests/support/temp_dir.h"
#include "worker/data/prepare.h"
#include "worker/train/trainer.h"

namespace kiln::testing {

// The manifest path of the prepared corpus.
inline std::string PrepareFortunes(const TempDir& dir) {
  data::PrepareOptions p;
  p.inputs = {"/usr/share/games/fortunes"};
  p.output_dir = dir.path() + "/data";
  auto r = data::Prepare(p);
  INFO(r.status().ToString());
  REQUIRE(r.ok());
  return r->manifest_path;
}

// One layer, 2 heads, 32 channels, batch 4 x 16 tokens, 20 steps with a
// short warm-up; clipping low enough to act, so the norm is on the path.
inline train::TrainOptions TinyTrainOptions(const std::string& manifest) {
  train::TrainOptions o;
  o.manifest = manifest;
  o.model.num_layers = 1;
  o.model.num_heads = 2;
  o.model.channels = 32;
  o.batch_size = 4;
  o.seq_len = 16;
  o.steps = 20;
  o.learning_rate = 1e-3;
  o.warmup_steps = 3;
  o.grad_clip = 0.5;
  o.checkpoint_every = 5;
  return o;
}

}  // namespace kiln::testing

#endif  // KILN_TESTS_SUPPORT_TINY_TRAINING_H_

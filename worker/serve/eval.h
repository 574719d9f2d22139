// Evaluation of a model for the rollout's quality gate: the loss (and
// perplexity) of an evaluation set under a checkpoint, and exact-match
// accuracy of greedy completions from a checkpoint or a running server.
//
// The evaluation set is JSON Lines. Each line is either
//   {"text": "..."}                          scored for loss only, or
//   {"prompt": "...", "completion": "..."}   loss of the completion given the
//                                            prompt, and exact match: the
//                                            greedy completion of as many
//                                            tokens must equal it exactly.
#ifndef KILN_WORKER_SERVE_EVAL_H_
#define KILN_WORKER_SERVE_EVAL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/statusor.h"
#include "worker/model/gpt.h"

namespace kiln::serve {

struct EvalExample {
  int line = 0;            // 1-based, for messages.
  std::string prompt;      // Empty for a "text" example.
  std::string completion;  // The text scored (all of it for a "text" example).
  bool exact_match = false;
};

// NotFound or PermissionDenied for an unreadable file; DataLoss naming the
// line for a malformed one (bad JSON, unknown or missing fields, empty text).
StatusOr<std::vector<EvalExample>> ReadEvalSet(const std::string& path);

// `n` of `examples`, in their order in the set: the first `n` without a
// seed; with one, `n` chosen uniformly at random by a generator seeded with
// it (the same examples for the same set and seed on every machine and
// build, so that models scored apart are scored on the same ones). All of
// them when there are no more than `n`.
std::vector<EvalExample> SampleExamples(std::vector<EvalExample> examples, size_t n,
                                        std::optional<uint64_t> seed);

struct LossResult {
  int64_t examples = 0;
  int64_t tokens = 0;  // Tokens scored.
  double loss = 0;     // Mean negative log-likelihood per scored token (nats).
  double perplexity = 0;
};

// Scores every example's completion tokens (a "text" example's from its
// second) given what precedes them. Text longer than the context is scored
// in windows sliding by half a context, so each token sees everything before
// it or at least half a context. InvalidArgument when nothing is scored.
StatusOr<LossResult> EvaluateLoss(model::Gpt<float>& model,
                                  const std::vector<EvalExample>& examples);

// Produces a greedy completion of `max_tokens` tokens.
class Completer {
 public:
  virtual ~Completer() = default;
  virtual StatusOr<std::string> Complete(const std::string& prompt, int max_tokens) = 0;
};

// Through an in-process engine over `model`.
std::unique_ptr<Completer> NewModelCompleter(model::Gpt<float>& model);
// Through a running server's POST /v1/completions ("temperature": 0).
// Unavailable when it cannot be reached; Internal for an error response.
std::unique_ptr<Completer> NewHttpCompleter(const std::string& base_url, const std::string& model);

struct ExactMatchResult {
  int64_t total = 0;
  int64_t correct = 0;
  double accuracy = 0;
  std::vector<int> failed_lines;  // The first few, for the report.
};

StatusOr<ExactMatchResult> EvaluateExactMatch(Completer& completer,
                                              const std::vector<EvalExample>& examples);

}  // namespace kiln::serve

#endif  // KILN_WORKER_SERVE_EVAL_H_

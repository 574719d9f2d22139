// `kiln-worker eval`: the rollout's model-quality gate. Prints one JSON
// object with loss, perplexity and exact-match accuracy, and exits
// QualityGateFailed (7) when a gate is missed (worker/exit_codes.h).
#ifndef KILN_WORKER_CMD_EVAL_COMMAND_H_
#define KILN_WORKER_CMD_EVAL_COMMAND_H_

namespace kiln::worker {

// argv[1] is "eval". Returns the process exit code.
int RunEvalCommand(int argc, char** argv);

}  // namespace kiln::worker

#endif  // KILN_WORKER_CMD_EVAL_COMMAND_H_

// `kiln-worker train`: flags to TrainOptions, progress lines to stdout, and
// the run's outcome to an exit code (worker/exit_codes.h).
#ifndef KILN_WORKER_CMD_TRAIN_COMMAND_H_
#define KILN_WORKER_CMD_TRAIN_COMMAND_H_

namespace kiln::worker {

// argv[1] is "train". Returns the process exit code.
int RunTrainCommand(int argc, char** argv);

}  // namespace kiln::worker

#endif  // KILN_WORKER_CMD_TRAIN_COMMAND_H_

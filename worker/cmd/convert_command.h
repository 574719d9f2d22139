// `kiln-worker convert`: between kiln checkpoints and llm.c model files
// (worker/train/llmc_checkpoint.h).
#ifndef KILN_WORKER_CMD_CONVERT_COMMAND_H_
#define KILN_WORKER_CMD_CONVERT_COMMAND_H_

namespace kiln::worker {

// argv[1] is "convert". Returns the process exit code.
int RunConvertCommand(int argc, char** argv);

}  // namespace kiln::worker

#endif  // KILN_WORKER_CMD_CONVERT_COMMAND_H_

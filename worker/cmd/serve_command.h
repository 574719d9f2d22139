// `kiln-worker serve`: loads a checkpoint, warms the engine up, serves the
// OpenAI-compatible API (worker/serve/server.h) until SIGTERM, then drains.
#ifndef KILN_WORKER_CMD_SERVE_COMMAND_H_
#define KILN_WORKER_CMD_SERVE_COMMAND_H_

namespace kiln::worker {

// argv[1] is "serve". Returns the process exit code.
int RunServeCommand(int argc, char** argv);

}  // namespace kiln::worker

#endif  // KILN_WORKER_CMD_SERVE_COMMAND_H_

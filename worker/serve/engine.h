// Engine: continuous batching over a Decoder (CPU or GPU) and the paged KV
// cache.
//
// Requests wait in a bounded FIFO queue. Each Step():
//   1. drops cancelled requests (their KV blocks return to the pool at once);
//   2. admits waiting requests, oldest first, while fewer than max_running run
//      and the cache has blocks for the prompt plus max_tokens (reserved up
//      front, so a running request never has to be preempted); with
//      prefix_cache, the leading blocks of the prompt that an earlier request
//      left in the cache (prefix_cache.h) are shared, not computed again, and
//      unused cached blocks are evicted when the pool runs short;
//   3. builds one batch of at most max_batch_tokens tokens: the newest token
//      of every decoding request, then prompt chunks of at most
//      prefill_chunk tokens (chunked prefill, so a long prompt never stalls
//      the others' decoding for long);
//   4. runs the decoder once, samples the next token of every request whose
//      pending tokens are all in the cache, and reports it.
// New requests therefore join the running batch between decode steps, and
// finished ones leave it. A request ends at max_tokens ("length"), at the
// context length ("length"), at the end-of-text token or a stop sequence
// ("stop"), or when cancelled. Stop sequences are not part of the output, and
// text that could still become one is held back until it cannot.
//
// Submit, Cancel and the counters are thread-safe; Step runs on one thread
// (the serving loop), and the callbacks run on it, never under the engine's
// lock: a callback may call Submit or Cancel, and a caller may hold its own
// lock around Submit or Cancel while its callbacks take that lock.
#ifndef KILN_WORKER_SERVE_ENGINE_H_
#define KILN_WORKER_SERVE_ENGINE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/statusor.h"
#include "worker/model/gpt.h"
#include "worker/serve/decoder.h"
#include "worker/serve/kv_cache.h"
#include "worker/serve/prefix_cache.h"
#include "worker/serve/sampler.h"

namespace kiln::serve {

struct EngineOptions {
  int max_running = 16;        // Requests decoding at once.
  int max_batch_tokens = 256;  // Tokens per decoder call.
  int prefill_chunk = 64;      // Prompt tokens per request per call.
  int max_queue = 64;          // Waiting requests; Submit refuses more.
  int block_size = 16;         // Positions per KV-cache block.
  // KV-cache blocks; 0: enough for max_running requests at the full context.
  int kv_blocks = 0;
  int32_t end_of_text = 256;  // The tokenizer's end-of-document token; < 0: none.
  // The CPU decoder's weight matrices (decoder.h); a GPU decoder ignores it.
  CpuWeights cpu_weights = CpuWeights::kFloat;
  // Keep finished prompts' full KV blocks for later requests that start with
  // the same tokens (prefix_cache.h).
  bool prefix_cache = true;
};

struct GenerateRequest {
  std::vector<int32_t> prompt;
  int max_tokens = 16;
  SamplingParams sampling;
  std::vector<std::string> stop;  // Stop sequences, as text.
  // Keep generating past the end-of-text token (which then adds no text), so
  // the request runs to max_tokens: benchmarks and tests (vLLM's ignore_eos).
  bool ignore_eos = false;
};

enum class FinishReason { kNone, kStop, kLength, kCancelled, kError };
// "stop", "length", "cancelled", "error" ("" for kNone).
const char* FinishReasonName(FinishReason r);

// What a request's callback receives: each new token with the text it
// releases (possibly empty while a stop sequence might be starting), then
// one final event with `finish` set.
struct TokenEvent {
  int64_t request = 0;
  std::optional<int32_t> token;  // Unset on the final event.
  std::string text;
  FinishReason finish = FinishReason::kNone;
  int prompt_tokens = 0;
  int completion_tokens = 0;
  // Prompt positions found in the prefix cache (on token events).
  int cached_prompt_tokens = 0;
};

using TokenCallback = std::function<void(const TokenEvent&)>;

// Builds the decoder of a GPU engine for `model` with a device KV cache of
// `num_blocks` blocks of `block_size` positions (the engine's PagedKvCache
// then only hands out block ids).
using DecoderFactory = std::function<StatusOr<std::unique_ptr<Decoder>>(
    const model::Gpt<float>& model, int block_size, int num_blocks)>;

class Engine {
 public:
  // `model` must outlive the engine. InvalidArgument for bad options.
  // Without `make_decoder`, decodes on the CPU (CpuDecoder); otherwise its
  // errors are Create's.
  static StatusOr<std::unique_ptr<Engine>> Create(model::Gpt<float>& model,
                                                  const EngineOptions& options,
                                                  const DecoderFactory& make_decoder = nullptr);

  // Queues a request and returns its id. InvalidArgument for an empty
  // prompt, a prompt at or beyond the context length, max_tokens < 1, bad
  // sampling, or a request that could never fit in the KV cache;
  // ResourceExhausted when the queue is full (the caller should retry later).
  StatusOr<int64_t> Submit(GenerateRequest request, TokenCallback callback);

  // Ends a request at the next Step (its callback gets kCancelled). Unknown
  // or finished ids are ignored.
  void Cancel(int64_t id);

  // One scheduling iteration. Returns whether there was work; errors only
  // for decoder failures (which end every running request).
  StatusOr<bool> Step();

  int queued() const { return queued_.load(); }
  int running() const { return running_count_.load(); }
  double kv_utilization() const { return kv_utilization_.load(); }
  const model::GptConfig& config() const { return model_.config(); }
  const EngineOptions& options() const { return options_; }
  // Where the decoder runs: "cpu" or "cuda:N".
  std::string device() const { return decoder_->device(); }

 private:
  struct Sequence {
    int64_t id = 0;
    GenerateRequest request;
    TokenCallback callback;
    Rng rng{0};
    std::vector<int32_t> tokens;  // Prompt, then generated.
    std::vector<int> blocks;
    int shared = 0;         // Leading blocks taken from the prefix cache.
    int cached = 0;         // Positions already in the KV cache.
    std::string generated;  // Text of the generated tokens.
    size_t released = 0;    // Bytes of `generated` already reported.
    bool done = false;
  };

  Engine(model::Gpt<float>& model, const EngineOptions& options, int kv_blocks, bool host_cache);
  // Sends the final event (with `text`) and frees the sequence's blocks.
  void Finish(Sequence& s, FinishReason reason, std::string text = "");
  // Returns the sequence's blocks: shared ones to the prefix cache, full
  // prompt blocks into it (when it has none for their prefix), the rest to
  // the pool.
  void ReleaseBlocks(Sequence& s);
  // Blocks in use by running sequences / all blocks (unreferenced cached
  // blocks count as free: they are evicted on demand).
  double LiveUtilization() const;
  // Reports the new token, and ends the sequence when it should. Returns
  // whether it ended.
  bool Advance(Sequence& s, int32_t token);

  model::Gpt<float>& model_;
  const EngineOptions options_;
  PagedKvCache cache_;
  PrefixCache prefix_;
  std::unique_ptr<Decoder> decoder_;
  std::vector<float> logits_;

  std::mutex mu_;  // Guards waiting_, cancelled_, next_id_.
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::set<int64_t> cancelled_;
  int64_t next_id_ = 1;
  std::vector<std::unique_ptr<Sequence>> running_;  // Step's thread only.
  std::atomic<int> queued_{0}, running_count_{0};
  std::atomic<double> kv_utilization_{0};
};

}  // namespace kiln::serve

#endif  // KILN_WORKER_SERVE_ENGINE_H_

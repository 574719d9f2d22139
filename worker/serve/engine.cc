#include "worker/serve/engine.h"

#include <algorithm>
#include <span>

namespace kiln::serve {

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kError:
      return "error";
    case FinishReason::kNone:
      break;
  }
  return "";
}

StatusOr<std::unique_ptr<Engine>> Engine::Create(model::Gpt<float>& model, const EngineOptions& o,
                                                 const DecoderFactory& make_decoder) {
  auto positive = [](int v, const char* name) {
    return v > 0 ? Status::Ok()
                 : Status::InvalidArgument(std::string(name) + " must be positive, got " +
                                           std::to_string(v));
  };
  KILN_RETURN_IF_ERROR(positive(o.max_running, "max running"));
  KILN_RETURN_IF_ERROR(positive(o.max_batch_tokens, "max batch tokens"));
  KILN_RETURN_IF_ERROR(positive(o.prefill_chunk, "prefill chunk"));
  KILN_RETURN_IF_ERROR(positive(o.max_queue, "max queue"));
  KILN_RETURN_IF_ERROR(positive(o.block_size, "block size"));
  if (o.kv_blocks < 0) return Status::InvalidArgument("kv blocks must be >= 0");
  if (o.max_batch_tokens < o.max_running) {
    return Status::InvalidArgument("max batch tokens (" + std::to_string(o.max_batch_tokens) +
                                   ") must be at least max running (" +
                                   std::to_string(o.max_running) +
                                   "): every running request decodes each step");
  }
  const int per_request = (model.config().max_seq_len + o.block_size - 1) / o.block_size;
  const int blocks = o.kv_blocks > 0 ? o.kv_blocks : o.max_running * per_request;
  std::unique_ptr<Engine> engine(new Engine(model, o, blocks, make_decoder == nullptr));
  if (make_decoder) {
    KILN_ASSIGN_OR_RETURN(engine->decoder_, make_decoder(model, o.block_size, blocks));
  } else {
    engine->decoder_ = std::make_unique<CpuDecoder>(model, engine->cache_, o.cpu_weights);
  }
  return engine;
}

Engine::Engine(model::Gpt<float>& model, const EngineOptions& options, int kv_blocks,
               bool host_cache)
    : model_(model),
      options_(options),
      cache_(model.config().num_layers, model.config().channels, options.block_size, kv_blocks,
             host_cache),
      prefix_(options.block_size) {}

double Engine::LiveUtilization() const {
  const int n = cache_.num_blocks();
  return n == 0 ? 0.0
                : static_cast<double>(n - cache_.free_blocks() - prefix_.evictable()) /
                      static_cast<double>(n);
}

void Engine::ReleaseBlocks(Sequence& s) {
  const int bs = cache_.block_size();
  // Blocks whose every position holds a prompt token already computed.
  const int full = std::min(s.cached, static_cast<int>(s.request.prompt.size())) / bs;
  const std::span<const int32_t> prompt(s.request.prompt);
  std::vector<int> to_pool;
  for (int i = 0; i < static_cast<int>(s.blocks.size()); ++i) {
    const int b = s.blocks[static_cast<size_t>(i)];
    if (i < s.shared) {
      prefix_.Release({&b, 1});
    } else if (!(options_.prefix_cache && i < full &&
                 prefix_.Insert(prompt.first(static_cast<size_t>((i + 1) * bs)), b))) {
      to_pool.push_back(b);
    }
  }
  cache_.Free(to_pool);
  s.blocks.clear();
  s.shared = 0;
}

StatusOr<int64_t> Engine::Submit(GenerateRequest request, TokenCallback callback) {
  const model::GptConfig& c = model_.config();
  const auto prompt = static_cast<int64_t>(request.prompt.size());
  if (prompt == 0) return Status::InvalidArgument("the prompt is empty");
  if (prompt >= c.max_seq_len) {
    return Status::InvalidArgument(
        "the prompt has " + std::to_string(prompt) + " tokens; the context length is " +
        std::to_string(c.max_seq_len) + " and at least one must be left to generate");
  }
  for (int32_t t : request.prompt) {
    if (t < 0 || t >= c.vocab_size) {
      return Status::InvalidArgument("prompt token " + std::to_string(t) +
                                     " is outside the vocabulary of " +
                                     std::to_string(c.vocab_size));
    }
  }
  if (request.max_tokens < 1) return Status::InvalidArgument("max_tokens must be at least 1");
  KILN_RETURN_IF_ERROR(request.sampling.Validate());
  for (const auto& s : request.stop) {
    if (s.empty()) return Status::InvalidArgument("a stop sequence is empty");
  }
  const int64_t positions = std::min<int64_t>(prompt + request.max_tokens, c.max_seq_len);
  if (cache_.BlocksFor(positions) > cache_.num_blocks()) {
    return Status::InvalidArgument("the request needs " + std::to_string(positions) +
                                   " KV-cache positions; the cache holds " +
                                   std::to_string(cache_.num_blocks() * cache_.block_size()));
  }
  auto seq = std::make_unique<Sequence>();
  seq->rng = Rng(request.sampling.seed);
  seq->tokens = request.prompt;
  seq->request = std::move(request);
  seq->callback = std::move(callback);
  std::lock_guard<std::mutex> lock(mu_);
  if (static_cast<int>(waiting_.size()) >= options_.max_queue) {
    return Status::ResourceExhausted("the queue is full (" + std::to_string(options_.max_queue) +
                                     " requests waiting)");
  }
  seq->id = next_id_++;
  const int64_t id = seq->id;
  waiting_.push_back(std::move(seq));
  queued_ = static_cast<int>(waiting_.size());
  return id;
}

void Engine::Cancel(int64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  cancelled_.insert(id);
}

void Engine::Finish(Sequence& s, FinishReason reason, std::string text) {
  if (s.done) return;
  s.done = true;
  ReleaseBlocks(s);
  // Before the callback: a client that has its answer sees the blocks freed.
  kv_utilization_ = LiveUtilization();
  TokenEvent e;
  e.request = s.id;
  e.text = std::move(text);
  e.finish = reason;
  e.prompt_tokens = static_cast<int>(s.request.prompt.size());
  e.completion_tokens = static_cast<int>(s.tokens.size() - s.request.prompt.size());
  if (s.callback) s.callback(e);
}

bool Engine::Advance(Sequence& s, int32_t token) {
  s.tokens.push_back(token);
  const int completion = static_cast<int>(s.tokens.size() - s.request.prompt.size());
  const bool end_of_text = token == options_.end_of_text;
  if (end_of_text && !s.request.ignore_eos) return Finish(s, FinishReason::kStop), true;
  if (!end_of_text) s.generated.push_back(static_cast<char>(static_cast<unsigned char>(token)));
  // A stop sequence that now ends the text stops the request; the text
  // before it is released, the stop sequence itself never.
  size_t longest = 0;
  for (const auto& stop : s.request.stop) longest = std::max(longest, stop.size());
  const size_t from = s.released > longest ? s.released - longest : 0;
  size_t stop_at = std::string::npos;
  for (const auto& stop : s.request.stop) {
    const size_t at = s.generated.find(stop, from);
    if (at != std::string::npos) stop_at = std::min(stop_at, at);
  }
  TokenEvent e;
  e.request = s.id;
  e.token = token;
  e.prompt_tokens = static_cast<int>(s.request.prompt.size());
  e.cached_prompt_tokens = s.shared * cache_.block_size();
  e.completion_tokens = completion;
  if (stop_at != std::string::npos) {
    e.text = s.generated.substr(s.released, stop_at > s.released ? stop_at - s.released : 0);
    s.released = s.generated.size();
    if (s.callback) s.callback(e);
    return Finish(s, FinishReason::kStop), true;
  }
  // Hold back the longest tail that could still grow into a stop sequence.
  size_t hold = 0;
  for (const auto& stop : s.request.stop) {
    for (size_t k = std::min(stop.size() - 1, s.generated.size()); k > hold; --k) {
      if (s.generated.compare(s.generated.size() - k, k, stop, 0, k) == 0) {
        hold = k;
        break;
      }
    }
  }
  const size_t safe = std::max(s.released, s.generated.size() - hold);
  e.text = s.generated.substr(s.released, safe - s.released);
  s.released = safe;
  if (s.callback) s.callback(e);
  if (completion >= s.request.max_tokens ||
      static_cast<int>(s.tokens.size()) >= model_.config().max_seq_len) {
    std::string rest = s.generated.substr(s.released);
    s.released = s.generated.size();
    return Finish(s, FinishReason::kLength, std::move(rest)), true;
  }
  return false;
}

StatusOr<bool> Engine::Step() {
  const model::GptConfig& c = model_.config();
  bool worked = false;
  // Cancelled requests are collected under the lock and finished after it:
  // callbacks never run under mu_, since a caller may hold its own lock
  // while it calls Submit or Cancel (the server does), and a callback that
  // takes that lock would then deadlock against it.
  std::vector<Sequence*> cancelled_running;
  std::vector<std::unique_ptr<Sequence>> cancelled_waiting;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& s : running_) {
      if (cancelled_.count(s->id) != 0) cancelled_running.push_back(s.get());
    }
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      if (cancelled_.count((*it)->id) != 0) {
        cancelled_waiting.push_back(std::move(*it));
        it = waiting_.erase(it);
      } else {
        ++it;
      }
    }
    cancelled_.clear();
    // Admission, oldest first: a request that does not fit yet waits, and so
    // do the ones behind it.
    while (!waiting_.empty() && static_cast<int>(running_.size()) < options_.max_running) {
      Sequence& s = *waiting_.front();
      const int prompt = static_cast<int>(s.request.prompt.size());
      const int64_t positions =
          std::min<int64_t>(static_cast<int64_t>(prompt) + s.request.max_tokens, c.max_seq_len);
      // The prompt's last token is always computed: its logits give the
      // first token.
      std::vector<int> shared;
      if (options_.prefix_cache) {
        shared = prefix_.Acquire(s.request.prompt, (prompt - 1) / cache_.block_size());
      }
      const int fresh = cache_.BlocksFor(positions) - static_cast<int>(shared.size());
      if (cache_.free_blocks() < fresh) cache_.Free(prefix_.Evict(fresh - cache_.free_blocks()));
      auto blocks = cache_.Allocate(fresh);
      if (!blocks.ok()) {
        prefix_.Release(shared);
        break;
      }
      s.shared = static_cast<int>(shared.size());
      s.cached = s.shared * cache_.block_size();
      s.blocks = std::move(shared);
      s.blocks.insert(s.blocks.end(), blocks->begin(), blocks->end());
      running_.push_back(std::move(waiting_.front()));
      waiting_.pop_front();
    }
    queued_ = static_cast<int>(waiting_.size());
  }
  for (Sequence* s : cancelled_running) Finish(*s, FinishReason::kCancelled);
  for (auto& s : cancelled_waiting) Finish(*s, FinishReason::kCancelled);
  worked = worked || !cancelled_running.empty() || !cancelled_waiting.empty();
  std::erase_if(running_, [](const auto& s) { return s->done; });

  // The batch: every decoding request's newest token first, then prompt chunks.
  std::vector<Sequence*> batch;
  std::vector<SequenceSlice> slices;
  int budget = options_.max_batch_tokens;
  for (int pass = 0; pass < 2; ++pass) {
    for (auto& s : running_) {
      const int pending = static_cast<int>(s->tokens.size()) - s->cached;
      if ((pass == 0) != (pending == 1) || budget == 0) continue;
      const int n = std::min({pending, options_.prefill_chunk, budget});
      budget -= n;
      batch.push_back(s.get());
      slices.push_back({.tokens = std::span<const int32_t>(s->tokens).subspan(
                            static_cast<size_t>(s->cached), static_cast<size_t>(n)),
                        .start = s->cached,
                        .blocks = &s->blocks});
    }
  }
  if (!slices.empty()) {
    worked = true;
    Status st = decoder_->Forward(slices, logits_);
    if (!st.ok()) {
      for (auto& s : running_) Finish(*s, FinishReason::kError);
      running_.clear();
      running_count_ = 0;
      kv_utilization_ = LiveUtilization();
      return st;
    }
    const auto Vp = static_cast<size_t>(c.padded_vocab_size);
    for (size_t i = 0; i < batch.size(); ++i) {
      Sequence& s = *batch[i];
      s.cached += static_cast<int>(slices[i].tokens.size());
      if (s.cached < static_cast<int>(s.tokens.size())) continue;  // Prompt not all in yet.
      std::span<const float> row(logits_.data() + i * Vp, static_cast<size_t>(c.vocab_size));
      Advance(s, Sample(row, s.request.sampling, s.rng));
    }
  }
  std::erase_if(running_, [](const auto& s) { return s->done; });
  running_count_ = static_cast<int>(running_.size());
  kv_utilization_ = LiveUtilization();
  return worked;
}

}  // namespace kiln::serve

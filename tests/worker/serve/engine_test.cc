// The continuous-batching engine: batched greedy output equals unbatched,
// a seed reproduces the text, stop sequences, length limits, end of text,
// cancellation (blocks freed), admission and the queue bound, the prefix
// cache (shared blocks give the same tokens; cached blocks give way).
#include "worker/serve/engine.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/support/random_gpt.h"
namespace kiln::serve {
namespace {

model::Gpt<float> TestModel() { return testing::RandomGpt(2, 2, 32, 48, 7, 0.3f); }

std::vector<int32_t> Prompt(const std::string& text) {
  return std::vector<int32_t>(text.begin(), text.end());
}

struct Result {
  int cached = -1;  // Prompt tokens from the prefix cache, as the first token reports.
  std::vector<int32_t> tokens;
  std::string text;
  FinishReason finish = FinishReason::kNone;
  int completion_tokens = 0;
  int finals = 0;
};

// Collects a request's events into `results[id]`.
TokenCallback Collect(std::map<int64_t, Result>& results) {
  return [&results](const TokenEvent& e) {
    Result& r = results[e.request];
    if (e.token && r.tokens.empty()) r.cached = e.cached_prompt_tokens;
    if (e.token) r.tokens.push_back(*e.token);
    r.text += e.text;
    if (e.finish != FinishReason::kNone) {
      r.finish = e.finish;
      r.completion_tokens = e.completion_tokens;
      ++r.finals;
    }
  };
}

void Drain(Engine& e) {
  for (int i = 0; i < 10000; ++i) {
    auto worked = e.Step();
    REQUIRE(worked.ok());
    if (!*worked) return;
  }
  FAIL("the engine never went idle");
}

Result RunOne(model::Gpt<float>& m, GenerateRequest r, EngineOptions o = {}) {
  auto e = Engine::Create(m, o);
  REQUIRE(e.ok());
  std::map<int64_t, Result> results;
  auto id = (*e)->Submit(std::move(r), Collect(results));
  REQUIRE(id.ok());
  Drain(**e);
  CHECK((*e)->kv_utilization() == 0);
  return results[*id];
}

const std::vector<std::string> kPrompts = {
    "A", "The cat sat on", "Hello, world! ", "fortune: ", "xyzzy", "Once upon a time, in a land"};

TEST_CASE("batched greedy decoding gives each request its unbatched output", "[serve]") {
  auto m = TestModel();
  std::vector<Result> alone;
  for (const auto& p : kPrompts) {
    alone.push_back(
        RunOne(m, {.prompt = Prompt(p), .max_tokens = 12, .sampling = {.temperature = 0}}));
    CHECK(alone.back().tokens.size() == 12);
  }
  // All at once, with a small token budget so prompts prefill in chunks
  // while others decode, and requests join and leave the running batch.
  EngineOptions o{.max_running = 4, .max_batch_tokens = 8, .prefill_chunk = 3};
  auto e = Engine::Create(m, o);
  REQUIRE(e.ok());
  std::map<int64_t, Result> results;
  std::vector<int64_t> ids;
  int most_running = 0;
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    const int max_tokens = 12;
    auto id = (*e)->Submit(
        {.prompt = Prompt(kPrompts[i]), .max_tokens = max_tokens, .sampling = {.temperature = 0}},
        Collect(results));
    REQUIRE(id.ok());
    ids.push_back(*id);
    // Later requests arrive while earlier ones run.
    if (i % 2 == 1) {
      REQUIRE((*e)->Step().ok());
      most_running = std::max(most_running, (*e)->running());
    }
  }
  while (true) {
    auto worked = (*e)->Step();
    REQUIRE(worked.ok());
    most_running = std::max(most_running, (*e)->running());
    if (!*worked) break;
  }
  CHECK(most_running == 4);
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    INFO("prompt '" << kPrompts[i] << "'");
    CHECK(results[ids[i]].tokens == alone[i].tokens);
    CHECK(results[ids[i]].finish == FinishReason::kLength);
    CHECK(results[ids[i]].finals == 1);
  }
  CHECK((*e)->kv_utilization() == 0);
}

TEST_CASE("a seed reproduces the sampled text, another seed changes it", "[serve]") {
  auto m = TestModel();
  auto run = [&](uint64_t seed) {
    return RunOne(m, {.prompt = Prompt("Seeds: "),
                      .max_tokens = 24,
                      .sampling = {.temperature = 1.0, .top_k = 50, .top_p = 0.95, .seed = seed}})
        .tokens;
  };
  CHECK(run(11) == run(11));
  CHECK(run(11) != run(12));
}

TEST_CASE("a stop sequence ends the text before it and is never sent", "[serve]") {
  auto m = TestModel();
  const GenerateRequest base{
      .prompt = Prompt("stop test "), .max_tokens = 20, .sampling = {.temperature = 0}};
  Result free_run = RunOne(m, base);
  REQUIRE(free_run.text.size() == 20);
  // Stop at the two bytes at offset 6 (their first occurrence is what stops).
  const std::string stop = free_run.text.substr(6, 2);
  const size_t at = free_run.text.find(stop);
  GenerateRequest with_stop = base;
  with_stop.stop = {"never appears \x01", stop};
  Result stopped = RunOne(m, with_stop);
  CHECK(stopped.finish == FinishReason::kStop);
  CHECK(stopped.text == free_run.text.substr(0, at));
  CHECK(stopped.completion_tokens == static_cast<int>(at + 2));
}

TEST_CASE("requests end at max_tokens, the context length and end of text", "[serve]") {
  auto m = TestModel();
  Result r = RunOne(m, {.prompt = Prompt("abc"), .max_tokens = 5, .sampling = {.temperature = 0}});
  CHECK(r.finish == FinishReason::kLength);
  CHECK(r.completion_tokens == 5);
  CHECK(r.text.size() == 5);
  // A prompt of 45 in a context of 48: 3 tokens, then the context is full.
  r = RunOne(
      m,
      {.prompt = std::vector<int32_t>(45, 'a'), .max_tokens = 100, .sampling = {.temperature = 0}});
  CHECK(r.finish == FinishReason::kLength);
  CHECK(r.completion_tokens == 3);
  // Make the third greedy token the end-of-text token: the request stops
  // there and the token is not text.
  Result free_run =
      RunOne(m, {.prompt = Prompt("eot"), .max_tokens = 6, .sampling = {.temperature = 0}});
  REQUIRE(free_run.tokens.size() == 6);
  EngineOptions o;
  o.end_of_text = free_run.tokens[2];
  const size_t first =
      static_cast<size_t>(std::find(free_run.tokens.begin(), free_run.tokens.end(), o.end_of_text) -
                          free_run.tokens.begin());
  r = RunOne(m, {.prompt = Prompt("eot"), .max_tokens = 6, .sampling = {.temperature = 0}}, o);
  CHECK(r.finish == FinishReason::kStop);
  CHECK(r.completion_tokens == static_cast<int>(first + 1));
  CHECK(r.text == free_run.text.substr(0, first));
  // ignore_eos runs on to max_tokens; the end-of-text token adds no text.
  r = RunOne(m,
             {.prompt = Prompt("eot"),
              .max_tokens = 6,
              .sampling = {.temperature = 0},
              .ignore_eos = true},
             o);
  CHECK(r.finish == FinishReason::kLength);
  CHECK(r.completion_tokens == 6);
  CHECK(r.tokens == free_run.tokens);
  CHECK(r.text.size() == 6 - static_cast<size_t>(std::count(free_run.tokens.begin(),
                                                            free_run.tokens.end(), o.end_of_text)));
}

TEST_CASE("cancelling frees the request's KV blocks at the next step", "[serve]") {
  auto m = TestModel();
  auto e = Engine::Create(m, {.max_running = 2, .max_batch_tokens = 64, .kv_blocks = 8});
  REQUIRE(e.ok());
  std::map<int64_t, Result> results;
  auto a = (*e)->Submit({.prompt = Prompt("cancel me"), .max_tokens = 30}, Collect(results));
  auto b = (*e)->Submit({.prompt = Prompt("keep me"), .max_tokens = 4}, Collect(results));
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  REQUIRE((*e)->Step().ok());
  CHECK((*e)->running() == 2);
  CHECK((*e)->kv_utilization() > 0);
  (*e)->Cancel(*a);
  REQUIRE((*e)->Step().ok());
  CHECK(results[*a].finish == FinishReason::kCancelled);
  CHECK(results[*a].finals == 1);
  CHECK((*e)->running() == 1);
  Drain(**e);
  CHECK(results[*b].finish == FinishReason::kLength);
  CHECK((*e)->kv_utilization() == 0);
  // A queued request can be cancelled before it runs.
  auto c = (*e)->Submit({.prompt = Prompt("x"), .max_tokens = 3}, Collect(results));
  REQUIRE(c.ok());
  (*e)->Cancel(*c);
  Drain(**e);
  CHECK(results[*c].finish == FinishReason::kCancelled);
  CHECK(results[*c].tokens.empty());
}

// A callback may call back into the engine: the server's callbacks take the
// server's lock, and the server calls Submit and Cancel under that lock, so
// a callback run under the engine's lock deadlocked the two (seen as a
// SIGTERM drain that never ended). Step runs on its own thread here, so a
// regression ends the test binary with a message instead of hanging it.
TEST_CASE("callbacks run outside the engine's lock and may call Submit and Cancel", "[serve]") {
  auto m = TestModel();
  auto e = Engine::Create(m, {.max_running = 1, .max_batch_tokens = 64, .kv_blocks = 8});
  REQUIRE(e.ok());
  Engine& engine = **e;
  std::map<int64_t, Result> results;
  auto collect = Collect(results);
  std::optional<StatusOr<int64_t>> resubmitted;
  int64_t queued_id = 0;
  auto reentrant = [&](const TokenEvent& ev) {
    collect(ev);
    if (ev.finish != FinishReason::kCancelled) return;
    engine.Cancel(queued_id);
    resubmitted = engine.Submit({.prompt = Prompt("again"), .max_tokens = 2}, collect);
  };
  auto a = engine.Submit({.prompt = Prompt("running"), .max_tokens = 30}, reentrant);
  auto b = engine.Submit({.prompt = Prompt("queued"), .max_tokens = 30}, collect);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  queued_id = *b;
  REQUIRE(engine.Step().ok());
  engine.Cancel(*a);
  std::promise<bool> stepped;
  auto done = stepped.get_future();
  std::thread([&engine, &stepped] { stepped.set_value(engine.Step().ok()); }).detach();
  if (done.wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
    std::fprintf(stderr, "engine_test: Step deadlocked in a callback that calls the engine\n");
    std::_Exit(1);
  }
  REQUIRE(done.get());
  CHECK(results[*a].finish == FinishReason::kCancelled);
  REQUIRE(resubmitted.has_value());
  REQUIRE(resubmitted->ok());
  Drain(engine);
  CHECK(results[*b].finish == FinishReason::kCancelled);
  CHECK(results[**resubmitted].finish == FinishReason::kLength);
  CHECK(engine.kv_utilization() == 0);
}

TEST_CASE("requests wait for KV blocks, and the queue is bounded", "[serve]") {
  auto m = TestModel();
  // 6 blocks of 16: requests of 40 positions (3 blocks) fit two at a time. No
  // end-of-text token, so every request runs to its max_tokens.
  auto e = Engine::Create(m, {.max_running = 4,
                              .max_batch_tokens = 64,
                              .max_queue = 3,
                              .block_size = 16,
                              .kv_blocks = 6,
                              .end_of_text = -1});
  REQUIRE(e.ok());
  std::map<int64_t, Result> results;
  for (int i = 0; i < 3; ++i) {
    REQUIRE((*e)->Submit({.prompt = Prompt("wait"), .max_tokens = 36}, Collect(results)).ok());
  }
  auto full = (*e)->Submit({.prompt = Prompt("too many"), .max_tokens = 1}, Collect(results));
  CHECK(full.status().code() == StatusCode::kResourceExhausted);
  REQUIRE((*e)->Step().ok());
  CHECK((*e)->running() == 2);  // The third waits for blocks.
  CHECK((*e)->queued() == 1);
  CHECK((*e)->kv_utilization() == 1.0);
  Drain(**e);
  CHECK(results.size() == 3);
  for (auto& [id, r] : results) {
    CHECK(r.completion_tokens == 36);
    CHECK(r.finish == FinishReason::kLength);
  }
}

TEST_CASE("bad requests are refused with the reason", "[serve]") {
  auto m = TestModel();
  auto e = Engine::Create(m, {.block_size = 16, .kv_blocks = 2});
  REQUIRE(e.ok());
  auto refuse = [&](GenerateRequest r, const std::string& why) {
    auto id = (*e)->Submit(std::move(r), nullptr);
    INFO(why);
    REQUIRE_FALSE(id.ok());
    CHECK(id.status().code() == StatusCode::kInvalidArgument);
    CHECK_THAT(id.status().message(), Catch::Contains(why));
  };
  refuse({.prompt = {}}, "prompt is empty");
  refuse({.prompt = std::vector<int32_t>(48, 1)}, "the context length is 48");
  refuse({.prompt = {300}}, "outside the vocabulary");
  refuse({.prompt = {1}, .max_tokens = 0}, "max_tokens");
  refuse({.prompt = {1}, .sampling = {.top_p = 2}}, "top_p");
  refuse({.prompt = {1}, .stop = {""}}, "stop sequence is empty");
  refuse({.prompt = std::vector<int32_t>(40, 1), .max_tokens = 8}, "the cache holds 32");
  CHECK(Engine::Create(m, {.max_running = 8, .max_batch_tokens = 4})
            .status()
            .message()
            .find("every running request decodes") != std::string::npos);
}

// Greedy tokens of `prompt` in an engine of its own without the prefix cache.
std::vector<int32_t> Uncached(model::Gpt<float>& m, const std::string& prompt, int max_tokens) {
  return RunOne(m, {.prompt = Prompt(prompt), .max_tokens = max_tokens}, {.prefix_cache = false})
      .tokens;
}

TEST_CASE("a prompt that starts like a finished one's shares its blocks and decodes the same",
          "[serve]") {
  auto m = TestModel();                                              // Context 48, blocks of 16.
  const std::string base = "Once upon a time, in a land far away!";  // 37 tokens.
  REQUIRE(base.size() == 37);
  auto e = Engine::Create(m, {.max_running = 2});
  REQUIRE(e.ok());
  std::map<int64_t, Result> results;
  auto run = [&](const std::string& prompt) {
    auto id = (*e)->Submit({.prompt = Prompt(prompt), .max_tokens = 8}, Collect(results));
    REQUIRE(id.ok());
    Drain(**e);
    CHECK((*e)->kv_utilization() == 0);
    return results[*id];
  };
  const Result first = run(base + "a");
  CHECK(first.cached == 0);
  CHECK(first.tokens == Uncached(m, base + "a", 8));
  // Two full blocks (32 tokens) of the same prefix; the rest is computed.
  const Result second = run(base + "b");
  CHECK(second.cached == 32);
  CHECK(second.tokens == Uncached(m, base + "b", 8));
  // The same prompt again: still 32, as the last prompt token is always
  // computed (its logits give the first token), and the same tokens.
  const Result again = run(base + "a");
  CHECK(again.cached == 32);
  CHECK(again.tokens == first.tokens);
  // A prompt of exactly two blocks shares only the first.
  const Result exact = run(base.substr(0, 32));
  CHECK(exact.cached == 16);
  CHECK(exact.tokens == Uncached(m, base.substr(0, 32), 8));
  // A different first token shares nothing.
  const Result other = run("X" + base.substr(1) + "a");
  CHECK(other.cached == 0);
  CHECK(other.tokens == Uncached(m, "X" + base.substr(1) + "a", 8));
}

TEST_CASE(
    "running requests share cached blocks, and cached blocks give way when the pool runs "
    "short",
    "[serve]") {
  auto m = TestModel();
  // Each request below needs 3 blocks (20 prompt + 20 generated positions);
  // the pool has 4.
  auto e = Engine::Create(m, {.max_running = 2, .kv_blocks = 4});
  REQUIRE(e.ok());
  std::map<int64_t, Result> results;
  const std::string a(20, 'a'), b(20, 'b'), c(20, 'c');
  auto submit = [&](const std::string& prompt) {
    auto id = (*e)->Submit({.prompt = Prompt(prompt), .max_tokens = 20}, Collect(results));
    REQUIRE(id.ok());
    return *id;
  };
  const int64_t first = submit(a);
  Drain(**e);
  CHECK(results[first].cached == 0);
  // a's first block stays cached; b needs 3 of the 3 free blocks.
  const int64_t with_b = submit(b);
  Drain(**e);
  CHECK(results[with_b].cached == 0);
  // Now a's and b's blocks are cached and 2 are free: c evicts the least
  // recently used (a's) and runs.
  const int64_t with_c = submit(c);
  Drain(**e);
  CHECK(results[with_c].cached == 0);
  CHECK(results[with_c].tokens == Uncached(m, c, 20));
  CHECK(results[with_c].finals == 1);
  // b's block is still there, a's is not.
  const int64_t b_again = submit(b), a_again = submit(a);
  Drain(**e);
  CHECK(results[b_again].cached == 16);
  CHECK(results[b_again].tokens == results[with_b].tokens);
  CHECK(results[a_again].cached == 0);
  CHECK(results[a_again].tokens == results[first].tokens);
  CHECK((*e)->kv_utilization() == 0);
}

TEST_CASE("two running requests read one cached block at once", "[serve]") {
  auto m = TestModel();
  auto e = Engine::Create(m, {.max_running = 4});
  REQUIRE(e.ok());
  std::map<int64_t, Result> results;
  const std::string prefix = "The same sixteen.";  // 17 tokens: one full block and one more.
  auto seed = (*e)->Submit({.prompt = Prompt(prefix + "!"), .max_tokens = 4}, Collect(results));
  REQUIRE(seed.ok());
  Drain(**e);
  std::vector<int64_t> ids;
  for (const char* tail : {"x", "yy", "zzz"}) {
    auto id = (*e)->Submit({.prompt = Prompt(prefix + tail), .max_tokens = 12}, Collect(results));
    REQUIRE(id.ok());
    ids.push_back(*id);
  }
  Drain(**e);  // All three decode in the same steps, reading block 0 of the seed.
  const char* tails[] = {"x", "yy", "zzz"};
  for (size_t i = 0; i < ids.size(); ++i) {
    INFO("tail " << tails[i]);
    CHECK(results[ids[i]].cached == 16);
    CHECK(results[ids[i]].tokens == Uncached(m, prefix + tails[i], 12));
  }
  CHECK((*e)->kv_utilization() == 0);
}

}  // namespace
}  // namespace kiln::serve

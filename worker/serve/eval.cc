#include "worker/serve/eval.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include <cpprest/http_client.h>

#include "worker/serve/engine.h"
#include "worker/serve/openai.h"

namespace kiln::serve {
namespace {

using nlohmann::json;

std::vector<int32_t> Bytes(const std::string& s) {
  std::vector<int32_t> out;
  for (char c : s) out.push_back(static_cast<unsigned char>(c));
  return out;
}

class ModelCompleter final : public Completer {
 public:
  explicit ModelCompleter(model::Gpt<float>& model) : model_(model) {}
  StatusOr<std::string> Complete(const std::string& prompt, int max_tokens) override {
    KILN_ASSIGN_OR_RETURN(
        auto engine,
        Engine::Create(model_, {.max_running = 1, .max_batch_tokens = 256, .end_of_text = -1}));
    std::string text;
    std::vector<int32_t> tokens = Bytes(prompt);
    const int room = model_.config().max_seq_len - 1;
    if (static_cast<int>(tokens.size()) > room - max_tokens) {
      tokens.erase(tokens.begin(), tokens.end() - std::max(1, room - max_tokens));
    }
    KILN_RETURN_IF_ERROR(
        engine
            ->Submit({.prompt = tokens, .max_tokens = max_tokens, .sampling = {.temperature = 0}},
                     [&](const TokenEvent& e) { text += e.text; })
            .status());
    while (true) {
      KILN_ASSIGN_OR_RETURN(bool worked, engine->Step());
      if (!worked) break;
    }
    return text;
  }

 private:
  model::Gpt<float>& model_;
};

class HttpCompleter final : public Completer {
 public:
  HttpCompleter(const std::string& base_url, const std::string& model)
      : client_(base_url), model_(model) {}
  StatusOr<std::string> Complete(const std::string& prompt, int max_tokens) override {
    json body = {{"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0}};
    if (!model_.empty()) body["model"] = model_;
    try {
      web::http::http_request req(web::http::methods::POST);
      req.set_request_uri("/v1/completions");
      req.set_body(Dump(body), "application/json");
      auto resp = client_.request(req).get();
      const std::string text = resp.extract_utf8string(true).get();
      json j = json::parse(text, nullptr, false);
      if (resp.status_code() != 200 || !j.is_object() || !j.contains("choices")) {
        return Status::Internal("the server answered " + std::to_string(resp.status_code()) + ": " +
                                text.substr(0, 300));
      }
      return j["choices"][0]["text"].get<std::string>();
    } catch (const std::exception& e) {
      return Status::Unavailable(std::string("cannot reach the server: ") + e.what());
    }
  }

 private:
  web::http::client::http_client client_;
  std::string model_;
};

}  // namespace

std::vector<EvalExample> SampleExamples(std::vector<EvalExample> examples, size_t n,
                                        std::optional<uint64_t> seed) {
  if (examples.size() <= n) return examples;
  if (!seed) {
    examples.resize(n);
    return examples;
  }
  // SplitMix64: fixed arithmetic, unlike the standard distributions, whose
  // results may differ between standard libraries.
  uint64_t state = *seed;
  auto next = [&state] {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  // A partial Fisher-Yates shuffle of the indices picks n of them; sorted,
  // they keep the set's order.
  std::vector<size_t> index(examples.size());
  for (size_t i = 0; i < index.size(); ++i) index[i] = i;
  for (size_t i = 0; i < n; ++i) {
    const uint64_t left = index.size() - i;
    // Rejection keeps the choice uniform (no modulo bias).
    const uint64_t limit = UINT64_MAX - UINT64_MAX % left;
    uint64_t r = next();
    while (r >= limit) r = next();
    std::swap(index[i], index[i + static_cast<size_t>(r % left)]);
  }
  index.resize(n);
  std::sort(index.begin(), index.end());
  std::vector<EvalExample> out;
  out.reserve(n);
  for (size_t i : index) out.push_back(std::move(examples[i]));
  return out;
}

StatusOr<std::vector<EvalExample>> ReadEvalSet(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("cannot open the evaluation set " + path);
  std::vector<EvalExample> out;
  int n = 0;
  for (std::string line; std::getline(in, line);) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto bad = [&](const std::string& why) {
      return Status::DataLoss(path + ":" + std::to_string(n) + ": " + why);
    };
    json j = json::parse(line, nullptr, false);
    if (!j.is_object()) return bad("not a JSON object");
    EvalExample e;
    e.line = n;
    for (auto& [k, v] : j.items()) {
      if (k != "text" && k != "prompt" && k != "completion")
        return bad("unknown field '" + k + "'");
      if (!v.is_string()) return bad("'" + k + "' must be a string");
    }
    if (j.contains("text")) {
      if (j.contains("prompt") || j.contains("completion")) {
        return bad("give either 'text' or 'prompt' and 'completion'");
      }
      e.completion = j["text"].get<std::string>();
    } else {
      if (!j.contains("prompt") || !j.contains("completion")) {
        return bad("needs 'text', or both 'prompt' and 'completion'");
      }
      e.prompt = j["prompt"].get<std::string>();
      e.completion = j["completion"].get<std::string>();
      e.exact_match = true;
    }
    if (e.completion.empty()) return bad("the scored text is empty");
    out.push_back(std::move(e));
  }
  if (out.empty()) return Status::DataLoss(path + ": the evaluation set has no examples");
  return out;
}

StatusOr<LossResult> EvaluateLoss(model::Gpt<float>& model,
                                  const std::vector<EvalExample>& examples) {
  const model::GptConfig& c = model.config();
  const int T = c.max_seq_len;
  const auto V = static_cast<size_t>(c.vocab_size), Vp = static_cast<size_t>(c.padded_vocab_size);
  LossResult r;
  double nll = 0;
  for (const auto& e : examples) {
    const auto prompt = Bytes(e.prompt), target = Bytes(e.completion);
    // A "text" example's first token has no context: it is not scored.
    std::vector<int32_t> all = prompt;
    all.insert(all.end(), target.begin(), target.end());
    const size_t first_scored = prompt.empty() ? 1 : prompt.size();
    // Windows of at most T inputs, sliding by half a context: every scored
    // token sees all that precedes it, or at least half a context.
    const size_t stride = std::max<size_t>(1, static_cast<size_t>(T) / 2);
    for (size_t pos = first_scored; pos < all.size();) {
      const size_t end = std::min(all.size(), pos + stride);
      // Input i is all[begin + i]; its logits predict all[begin + i + 1].
      const size_t begin = end - 1 > static_cast<size_t>(T) ? end - 1 - static_cast<size_t>(T) : 0;
      std::vector<int32_t> inputs(all.begin() + static_cast<ptrdiff_t>(begin),
                                  all.begin() + static_cast<ptrdiff_t>(end - 1));
      KILN_RETURN_IF_ERROR(
          model.Forward(inputs.data(), nullptr, 1, static_cast<int>(inputs.size())).status());
      auto logits = model.logits();
      for (size_t k = pos; k < end; ++k) {
        const float* l = logits.data() + (k - 1 - begin) * Vp;
        double max = l[0];
        for (size_t v = 1; v < V; ++v) max = std::max(max, static_cast<double>(l[v]));
        double sum = 0;
        for (size_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(l[v]) - max);
        nll += std::log(sum) + max - static_cast<double>(l[static_cast<size_t>(all[k])]);
      }
      r.tokens += static_cast<int64_t>(end - pos);
      pos = end;
    }
    ++r.examples;
  }
  if (r.tokens == 0) return Status::InvalidArgument("no tokens to score");
  r.loss = nll / static_cast<double>(r.tokens);
  r.perplexity = std::exp(r.loss);
  return r;
}

std::unique_ptr<Completer> NewModelCompleter(model::Gpt<float>& model) {
  return std::make_unique<ModelCompleter>(model);
}

std::unique_ptr<Completer> NewHttpCompleter(const std::string& base_url, const std::string& model) {
  return std::make_unique<HttpCompleter>(base_url, model);
}

StatusOr<ExactMatchResult> EvaluateExactMatch(Completer& completer,
                                              const std::vector<EvalExample>& examples) {
  ExactMatchResult r;
  for (const auto& e : examples) {
    if (!e.exact_match) continue;
    KILN_ASSIGN_OR_RETURN(std::string got,
                          completer.Complete(e.prompt, static_cast<int>(e.completion.size())));
    ++r.total;
    // Compare as the server reports text (invalid UTF-8 replaced).
    if (got == e.completion || Dump(json(got)) == Dump(json(e.completion))) {
      ++r.correct;
    } else if (r.failed_lines.size() < 10) {
      r.failed_lines.push_back(e.line);
    }
  }
  r.accuracy = r.total == 0 ? 0 : static_cast<double>(r.correct) / static_cast<double>(r.total);
  return r;
}

}  // namespace kiln::serve

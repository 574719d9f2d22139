#include "worker/serve/decoder.h"

#include <algorithm>
#include <string>

#include "kernels/cpu/matmul_bf16.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/paged_attention.h"

namespace kiln::serve {
namespace cpu = kernels::cpu;
using model::Param;

StatusOr<DecodeRows> FlattenSlices(const model::GptConfig& c, int bs,
                                   std::span<const SequenceSlice> slices) {
  if (slices.empty()) return Status::InvalidArgument("no sequences to decode");
  DecodeRows rows;
  for (size_t s = 0; s < slices.size(); ++s) {
    const SequenceSlice& sl = slices[s];
    const int n = static_cast<int>(sl.tokens.size());
    if (n == 0) return Status::InvalidArgument("sequence " + std::to_string(s) + " has no tokens");
    if (sl.start < 0 || sl.start + n > c.max_seq_len) {
      return Status::InvalidArgument("positions up to " + std::to_string(sl.start + n) +
                                     " exceed the context length " + std::to_string(c.max_seq_len));
    }
    if (sl.blocks == nullptr ||
        static_cast<int64_t>(sl.blocks->size()) * bs < static_cast<int64_t>(sl.start) + n) {
      return Status::InvalidArgument("sequence " + std::to_string(s) +
                                     ": its KV-cache blocks do not cover its positions");
    }
    for (int i = 0; i < n; ++i) {
      const int32_t t = sl.tokens[static_cast<size_t>(i)];
      if (t < 0 || t >= c.vocab_size) {
        return Status::InvalidArgument("token " + std::to_string(t) +
                                       " is outside the vocabulary of " +
                                       std::to_string(c.vocab_size));
      }
      rows.slice.push_back(static_cast<int>(s));
      rows.pos.push_back(sl.start + i);
      rows.token.push_back(t);
    }
  }
  return rows;
}

CpuDecoder::CpuDecoder(model::Gpt<float>& model, PagedKvCache& cache, CpuWeights weights)
    : model_(model), cache_(cache) {
  if (weights == CpuWeights::kBf16) {
    for (Param p : {Param::kWte, Param::kQkvW, Param::kAttProjW, Param::kFcW, Param::kFcProjW}) {
      bf16_[static_cast<int>(p)] = cpu::ToBf16(model_.param(p));
    }
  }
}

void CpuDecoder::Matmul(float* out, const float* in, Param p, int layer, const float* bias, int N,
                        int C, int OC) {
  const int64_t offset = static_cast<int64_t>(layer) * OC * C;
  const std::vector<uint16_t>& bf16 = bf16_[static_cast<int>(p)];
  if (!bf16.empty()) {
    cpu::MatmulForwardBf16(out, in, bf16.data() + offset, bias, N, C, OC);
  } else {
    cpu::MatmulForward(out, in, model_.param(p).data() + offset, bias, N, C, OC);
  }
}

Status CpuDecoder::Forward(std::span<const SequenceSlice> slices, std::vector<float>& logits) {
  const model::GptConfig& c = model_.config();
  const int C = c.channels, L = c.num_layers, Vp = c.padded_vocab_size;
  const int bs = cache_.block_size();
  KILN_ASSIGN_OR_RETURN(DecodeRows rows, FlattenSlices(c, bs, slices));
  const std::vector<int>& row_slice = rows.slice;
  const std::vector<int>& row_pos = rows.pos;
  const std::vector<int32_t>& row_token = rows.token;
  const int N = static_cast<int>(row_token.size());
  const auto NC = static_cast<size_t>(N) * static_cast<size_t>(C);
  x_.resize(NC);
  ln_.resize(NC);
  mean_.resize(static_cast<size_t>(N));
  rstd_.resize(static_cast<size_t>(N));
  qkv_.resize(3 * NC);
  atty_.resize(NC);
  proj_.resize(NC);
  fch_.resize(8 * NC);  // Pre-GELU, then post-GELU.
  float* fch = fch_.data();
  float* fcg = fch_.data() + 4 * NC;
  auto P = [this](Param p) { return model_.param(p).data(); };

  cpu::EmbedRows(x_.data(), row_token.data(), row_pos.data(), P(Param::kWte), P(Param::kWpe), N, C);
  // The sequences' block tables, flattened for the attention kernel, and
  // where each row's key and value go.
  const int S = static_cast<int>(slices.size());
  int width = 1;
  for (const SequenceSlice& sl : slices)
    width = std::max(width, static_cast<int>(sl.blocks->size()));
  tables_.assign(static_cast<size_t>(S) * static_cast<size_t>(width), 0);
  for (int s = 0; s < S; ++s) {
    const std::vector<int>& blocks = *slices[static_cast<size_t>(s)].blocks;
    std::copy(blocks.begin(), blocks.end(), tables_.begin() + static_cast<int64_t>(s) * width);
  }
  slot_.resize(static_cast<size_t>(N));
  for (int r = 0; r < N; ++r) {
    const int pos = row_pos[static_cast<size_t>(r)];
    const int32_t* table =
        tables_.data() + static_cast<int64_t>(row_slice[static_cast<size_t>(r)]) * width;
    slot_[static_cast<size_t>(r)] = table[pos / bs] * bs + pos % bs;
  }
  for (int l = 0; l < L; ++l) {
    const int64_t lC = static_cast<int64_t>(l) * C;
    cpu::LayerNormForward(ln_.data(), mean_.data(), rstd_.data(), x_.data(), P(Param::kLn1W) + lC,
                          P(Param::kLn1B) + lC, N, C);
    Matmul(qkv_.data(), ln_.data(), Param::kQkvW, l, P(Param::kQkvB) + lC * 3, N, C, 3 * C);
    // This call's keys and values join the cache before attention reads it.
    cpu::AppendKv(cache_.Layer(l), qkv_.data(), slot_.data(), N, bs, C);
    cpu::PagedAttentionForward(atty_.data(), qkv_.data(), cache_.Layer(l), row_slice.data(),
                               row_pos.data(), tables_.data(), width, N, bs, C, c.num_heads);
    Matmul(proj_.data(), atty_.data(), Param::kAttProjW, l, P(Param::kAttProjB) + lC, N, C, C);
    cpu::ResidualForward(x_.data(), x_.data(), proj_.data(), static_cast<int64_t>(NC));
    cpu::LayerNormForward(ln_.data(), mean_.data(), rstd_.data(), x_.data(), P(Param::kLn2W) + lC,
                          P(Param::kLn2B) + lC, N, C);
    Matmul(fch, ln_.data(), Param::kFcW, l, P(Param::kFcB) + lC * 4, N, C, 4 * C);
    cpu::GeluForward(fcg, fch, static_cast<int64_t>(4 * NC));
    Matmul(proj_.data(), fcg, Param::kFcProjW, l, P(Param::kFcProjB) + lC, N, 4 * C, C);
    cpu::ResidualForward(x_.data(), x_.data(), proj_.data(), static_cast<int64_t>(NC));
  }
  // Only each slice's last token needs the final LayerNorm and the logits.
  last_rows_.resize(static_cast<size_t>(S));
  for (int s = 0, r = -1; s < S; ++s) {
    r += static_cast<int>(slices[static_cast<size_t>(s)].tokens.size());
    last_rows_[static_cast<size_t>(s)] = r;
  }
  last_.resize(static_cast<size_t>(S) * static_cast<size_t>(C));
  cpu::GatherRows(last_.data(), x_.data(), last_rows_.data(), S, C);
  cpu::LayerNormForward(ln_.data(), mean_.data(), rstd_.data(), last_.data(), P(Param::kLnfW),
                        P(Param::kLnfB), S, C);
  logits.resize(static_cast<size_t>(S) * static_cast<size_t>(Vp));
  Matmul(logits.data(), ln_.data(), Param::kWte, 0, nullptr, S, C, Vp);
  return Status::Ok();
}

}  // namespace kiln::serve

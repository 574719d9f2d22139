#include "worker/serve/decoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "kernels/cpu/matmul_bf16.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/vector_math.h"

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
  const float *wte = P(Param::kWte), *wpe = P(Param::kWpe);

  for (int r = 0; r < N; ++r) {
    const float* te = wte + static_cast<int64_t>(row_token[static_cast<size_t>(r)]) * C;
    const float* pe = wpe + static_cast<int64_t>(row_pos[static_cast<size_t>(r)]) * C;
    float* out = x_.data() + static_cast<int64_t>(r) * C;
    for (int i = 0; i < C; ++i) out[i] = te[i] + pe[i];
  }
  for (int l = 0; l < L; ++l) {
    const int64_t lC = static_cast<int64_t>(l) * C;
    cpu::LayerNormForward(ln_.data(), mean_.data(), rstd_.data(), x_.data(), P(Param::kLn1W) + lC,
                          P(Param::kLn1B) + lC, N, C);
    Matmul(qkv_.data(), ln_.data(), Param::kQkvW, l, P(Param::kQkvB) + lC * 3, N, C, 3 * C);
    // This call's keys and values join the cache before attention reads it.
    for (int r = 0; r < N; ++r) {
      const int pos = row_pos[static_cast<size_t>(r)];
      const auto& blocks = *slices[static_cast<size_t>(row_slice[static_cast<size_t>(r)])].blocks;
      const int block = blocks[static_cast<size_t>(pos / bs)];
      const int64_t row = static_cast<int64_t>(pos % bs) * C;
      const float* q = qkv_.data() + static_cast<int64_t>(r) * 3 * C;
      std::memcpy(cache_.Keys(l, block) + row, q + C, sizeof(float) * static_cast<size_t>(C));
      std::memcpy(cache_.Values(l, block) + row, q + 2 * C, sizeof(float) * static_cast<size_t>(C));
    }
    Attention(atty_.data(), qkv_.data(), slices, row_slice, row_pos, l);
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
  const int S = static_cast<int>(slices.size());
  last_.resize(static_cast<size_t>(S) * static_cast<size_t>(C));
  for (int s = 0, r = -1; s < S; ++s) {
    r += static_cast<int>(slices[static_cast<size_t>(s)].tokens.size());
    std::memcpy(last_.data() + static_cast<int64_t>(s) * C, x_.data() + static_cast<int64_t>(r) * C,
                sizeof(float) * static_cast<size_t>(C));
  }
  cpu::LayerNormForward(ln_.data(), mean_.data(), rstd_.data(), last_.data(), P(Param::kLnfW),
                        P(Param::kLnfB), S, C);
  logits.resize(static_cast<size_t>(S) * static_cast<size_t>(Vp));
  Matmul(logits.data(), ln_.data(), Param::kWte, 0, nullptr, S, C, Vp);
  return Status::Ok();
}

void CpuDecoder::Attention(float* out, const float* qkv, std::span<const SequenceSlice> slices,
                           const std::vector<int>& row_slice, const std::vector<int>& row_pos,
                           int layer) {
  const model::GptConfig& c = model_.config();
  const int C = c.channels, NH = c.num_heads, hs = C / NH, bs = cache_.block_size();
  const int N = static_cast<int>(row_slice.size());
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(c.max_seq_len));
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int r = 0; r < N; ++r) {
      for (int h = 0; h < NH; ++h) {
        const int n = row_pos[static_cast<size_t>(r)] + 1;  // Positions attended.
        const auto& blocks = *slices[static_cast<size_t>(row_slice[static_cast<size_t>(r)])].blocks;
        const float* q = qkv + static_cast<int64_t>(r) * 3 * C + h * hs;
        float* s = scores.data();
        // Block by block, so each key row is a pointer step, not a lookup.
        float max = -INFINITY;
        for (int t0 = 0; t0 < n; t0 += bs) {
          const float* k = cache_.Keys(layer, blocks[static_cast<size_t>(t0 / bs)]) + h * hs;
          const int end = std::min(n, t0 + bs);
          for (int t = t0; t < end; ++t, k += C) {
            float dot = 0;
#pragma omp simd reduction(+ : dot)
            for (int i = 0; i < hs; ++i) dot += q[i] * k[i];
            s[t] = dot * scale;
            max = std::max(max, s[t]);
          }
        }
        float sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int t = 0; t < n; ++t) {
          s[t] = cpu::VectorExp(s[t] - max);
          sum += s[t];
        }
        const float inv = 1.0f / sum;
        float* y = out + static_cast<int64_t>(r) * C + h * hs;
        std::fill(y, y + hs, 0.0f);
        for (int t0 = 0; t0 < n; t0 += bs) {
          const float* v = cache_.Values(layer, blocks[static_cast<size_t>(t0 / bs)]) + h * hs;
          const int end = std::min(n, t0 + bs);
          for (int t = t0; t < end; ++t, v += C) {
            const float w = s[t] * inv;
#pragma omp simd
            for (int i = 0; i < hs; ++i) y[i] += w * v[i];
          }
        }
      }
    }
  }
}

}  // namespace kiln::serve

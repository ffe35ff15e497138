#include "encode.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

namespace drq {

namespace {

// Vectors per work item: large enough to amortise the hand-out, small enough that worker 0
// polls for interrupts often (one item is ~32 * M * K * 4 flops).
constexpr size_t kEncodeChunk = 32;

}  // namespace

void encode_greedy(size_t n, size_t K, size_t M, const float* xc, const float* gram,
                   const float* scales, uint8_t* codes, float* norms,
                   const InterruptCallback& interrupt, int nthreads) {
    if (K == 0 || K > 256) {
        throw std::invalid_argument("encode_greedy: K must be in [1, 256] (codes are one byte), got " +
                                    std::to_string(K));
    }
    if (M == 0) throw std::invalid_argument("encode_greedy: M must be >= 1");
    if (n == 0) return;
    if (xc == nullptr || gram == nullptr || scales == nullptr || codes == nullptr ||
        norms == nullptr) {
        throw std::invalid_argument("encode_greedy: null array");
    }

    // Shared read-only inputs in double.
    std::vector<double> G(gram, gram + K * K);
    std::vector<double> gram_diag(K);
    for (size_t k = 0; k < K; ++k) gram_diag[k] = G[k * K + k];
    std::vector<double> s(scales, scales + M);

    const size_t nworkers = static_cast<size_t>(std::max(1, nthreads));
    // Per-worker scratch: cur (K) and score (K).
    std::vector<double> scratch(std::min(nworkers, (n + kEncodeChunk - 1) / kEncodeChunk) * 2 * K);

    Interrupter interrupter(interrupt);
    const size_t nchunks = (n + kEncodeChunk - 1) / kEncodeChunk;
    parallel_for(nchunks, nthreads, interrupter, [&](size_t chunk, int worker) {
        double* cur = scratch.data() + static_cast<size_t>(worker) * 2 * K;
        double* score = cur + K;
        const size_t begin = chunk * kEncodeChunk;
        const size_t end = std::min(n, begin + kEncodeChunk);
        for (size_t i = begin; i < end; ++i) {
            const float* x_dot_c = xc + i * K;
            for (size_t k = 0; k < K; ++k) cur[k] = x_dot_c[k];
            double norm = 0.0;
            uint8_t* code_row = codes + i * M;
            float* norm_row = norms + i * M;
            for (size_t m = 0; m < M; ++m) {
                const double sm = s[m];
                const double sm2 = sm * sm;
                // Separate passes: the score and update loops vectorise; the argmin is scalar.
                for (size_t k = 0; k < K; ++k) score[k] = sm2 * gram_diag[k] - 2.0 * sm * cur[k];
                size_t best = 0;
                double best_score = score[0];
                for (size_t k = 1; k < K; ++k) {
                    if (score[k] < best_score) {
                        best_score = score[k];
                        best = k;
                    }
                }
                const double xhat_dot_cb = static_cast<double>(x_dot_c[best]) - cur[best];
                norm += 2.0 * sm * xhat_dot_cb + sm2 * gram_diag[best];
                code_row[m] = static_cast<uint8_t>(best);
                norm_row[m] = static_cast<float>(norm);
                const double* g_row = G.data() + best * K;
                for (size_t k = 0; k < K; ++k) cur[k] -= sm * g_row[k];
            }
        }
    });
}

}  // namespace drq

#include "encode_per_iteration.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "encode_dots.h"
#include "encode_step.h"

namespace drq {

namespace {

// Vectors per work item. The block's residuals (4 d bytes per vector, 300 KB at d = 784) stay
// in L2 while each iteration's codebook (K * d floats, 800 KB) streams past them once per item:
// more vectors per item would read the codebooks from memory less often but spill the residuals
// out of L2 (measured on Fashion-MNIST: 36 to 144 rows within noise, 216 and 576 slower). One
// item is ~96 * M * K * d multiply-adds, ~0.1 s at one thread: the interrupt is also polled per
// iteration.
constexpr size_t kBlockRows = 96;

}  // namespace

void encode_per_iteration(size_t n, size_t d, size_t K, size_t M, const float* x,
                          const float* codebooks, const float* scales, const float* sq_norms,
                          uint8_t* codes, float* norms, const InterruptCallback& interrupt,
                          int nthreads, SimdLevel level) {
    if (K == 0 || K > 256) {
        throw std::invalid_argument("encode_per_iteration: K must be in [1, 256] (codes are one byte), got " +
                                    std::to_string(K));
    }
    if (M == 0) throw std::invalid_argument("encode_per_iteration: M must be >= 1");
    if (d == 0) throw std::invalid_argument("encode_per_iteration: d must be >= 1");
    if (n == 0) return;
    if (x == nullptr || codebooks == nullptr || scales == nullptr || sq_norms == nullptr ||
        codes == nullptr || norms == nullptr) {
        throw std::invalid_argument("encode_per_iteration: null array");
    }
    const EncodeDotsFn dots_fn = encode_dots_for(level);
    const EncodeStepFn step_fn = encode_step_for(level);

    // Fewer rows per item when there are fewer than kBlockRows per thread, so that a small batch
    // still keeps every thread busy (each vector's result does not depend on the block size).
    const size_t threads = static_cast<size_t>(std::max(1, nthreads));
    const size_t block_rows = std::min(kBlockRows, (n + threads - 1) / threads);
    const size_t nitems = (n + block_rows - 1) / block_rows;
    const size_t nworkers = std::min(threads, nitems);
    struct Scratch {
        std::vector<float> residual;  // block_rows * d
        std::vector<double> xhat;     // block_rows * d
        std::vector<float> dots;      // block_rows * K
    };
    std::vector<Scratch> scratch(nworkers);
    for (Scratch& s : scratch) {
        s.residual.resize(block_rows * d);
        s.xhat.resize(block_rows * d);
        s.dots.resize(block_rows * K);
    }

    Interrupter interrupter(interrupt);
    parallel_for(nitems, static_cast<int>(nworkers), interrupter, [&](size_t item, int worker) {
        Scratch& s = scratch[static_cast<size_t>(worker)];
        const size_t begin = item * block_rows;
        const size_t rows = std::min(n, begin + block_rows) - begin;
        float* residual = s.residual.data();
        double* xhat = s.xhat.data();
        std::copy(x + begin * d, x + (begin + rows) * d, residual);
        std::fill(xhat, xhat + rows * d, 0.0);
        for (size_t m = 0; m < M; ++m) {
            if (interrupter.should_stop(worker)) return;  // parallel_for throws Interrupted
            const float* codebook = codebooks + m * K * d;
            dots_fn(residual, rows, codebook, K, d, s.dots.data());
            for (size_t i = 0; i < rows; ++i) {
                double norm = 0.0;
                const size_t best = step_fn(s.dots.data() + i * K, sq_norms + m * K, K, codebook, d,
                                            scales[m], residual + i * d, xhat + i * d, &norm);
                codes[(begin + i) * M + m] = static_cast<uint8_t>(best);
                norms[(begin + i) * M + m] = static_cast<float>(norm);
            }
        }
    });
}

}  // namespace drq

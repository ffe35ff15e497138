#include "inner_products.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "encode_dots.h"

namespace drq {

namespace {
// Rows per work item: 64 rows of a 256-d subspace (64 KB) stay in L2 while the codewords stream
// past them once per item.
constexpr size_t kBlockRows = 64;
}  // namespace

void inner_products(const float* rows, size_t nrows, const float* codewords, size_t K, size_t d,
                    float* out, const InterruptCallback& interrupt, int nthreads, SimdLevel level) {
    if (K == 0) throw std::invalid_argument("inner_products: expected K >= 1 codewords");
    if (d == 0) throw std::invalid_argument("inner_products: expected d >= 1");
    if (!simd_level_supported(level)) {
        throw std::invalid_argument(std::string("inner_products: SIMD level ") + simd_level_name(level) +
                                    " is not supported on this CPU");
    }
    if (nrows == 0) return;
    if (rows == nullptr || codewords == nullptr || out == nullptr) {
        throw std::invalid_argument("inner_products: null array");
    }
    const EncodeDotsFn dots_fn = encode_dots_for(level);
    const size_t threads = static_cast<size_t>(std::max(1, nthreads));
    // Fewer rows per item for a small batch, so that every thread gets work.
    const size_t block_rows = std::max<size_t>(1, std::min(kBlockRows, (nrows + threads - 1) / threads));
    const size_t nitems = (nrows + block_rows - 1) / block_rows;
    Interrupter interrupter(interrupt);
    parallel_for(nitems, static_cast<int>(std::min(threads, nitems)), interrupter, [&](size_t item, int) {
        const size_t begin = item * block_rows;
        const size_t count = std::min(block_rows, nrows - begin);
        dots_fn(rows + begin * d, count, codewords, K, d, out + begin * K);
    });
}

}  // namespace drq

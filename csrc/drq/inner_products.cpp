// inner_products.h: argument checks, the kernel chosen once per call, rows split over threads.
#include "inner_products.h"

#include <algorithm>
#include <memory>
#include <stdexcept>
#include <string>

namespace drq {

namespace {
// Rows per work item: 64 rows of a 784-d query batch (200 KB) stay in L2 while the panels of
// columns stream past them.
constexpr size_t kBlockRows = 64;
// Columns are copied into panels of kPanel contiguous columns (d x kPanel floats each, the kernel's
// register block width) when there are at least kPackMinRows rows to amortise the copy: the rows
// of a wide matrix are K floats apart, so a 16-column block touches one cache line per dimension,
// all in the same few L1 sets when K * 4 is a multiple of 4 KB (2 Zen 3 cores, n = 256, d = 256,
// K = 14336, the 64-iteration tables of a query chunk: 34 GFMA/s strided, 51-56 packed).
constexpr size_t kPanel = kInnerProductsPanel;
constexpr size_t kPackMinRows = 16;

InnerProductsFn inner_products_for(SimdLevel level) {
    switch (level) {
#if defined(DRQ_HAVE_X86_SIMD)
        case SimdLevel::AVX512:  // no AVX-512 variant: the AVX2 kernel is FMA-bound already
        case SimdLevel::AVX2:
            return inner_products_avx2;
#endif
        default:
            return inner_products_ref;
    }
}
}  // namespace

namespace {

void check_common(size_t d, size_t row_stride, size_t K, size_t out_stride, SimdLevel level) {
    if (K == 0) throw std::invalid_argument("inner_products: expected K >= 1 columns");
    if (d == 0) throw std::invalid_argument("inner_products: expected d >= 1");
    if (row_stride < d || out_stride < K) {
        throw std::invalid_argument("inner_products: expected row_stride >= d and out_stride >= K");
    }
    if (!simd_level_supported(level)) {
        throw std::invalid_argument(std::string("inner_products: SIMD level ") + simd_level_name(level) +
                                    " is not supported on this CPU");
    }
}

// Rows split in items over the threads; each item runs the kernel on every panel (panels given)
// or on the strided columns (panels == nullptr).
void run_items(const float* rows, size_t nrows, size_t row_stride, const float* columns, size_t K,
               size_t column_stride, const float* panels, size_t d, float* out, size_t out_stride,
               const InterruptCallback& interrupt, int nthreads, SimdLevel level) {
    const InnerProductsFn fn = inner_products_for(level);
    const size_t threads = static_cast<size_t>(std::max(1, nthreads));
    // Fewer rows per item for a small batch, so that every thread gets work.
    const size_t block_rows = std::max<size_t>(1, std::min(kBlockRows, (nrows + threads - 1) / threads));
    const size_t nitems = (nrows + block_rows - 1) / block_rows;
    const size_t npanels = (K + kPanel - 1) / kPanel;
    Interrupter interrupter(interrupt);
    parallel_for(nitems, static_cast<int>(std::min(threads, nitems)), interrupter, [&](size_t item, int) {
        const size_t begin = item * block_rows;
        const size_t count = std::min(block_rows, nrows - begin);
        const float* r = rows + begin * row_stride;
        float* o = out + begin * out_stride;
        if (panels == nullptr) {
            fn(r, count, row_stride, columns, K, column_stride, d, o, out_stride);
            return;
        }
        for (size_t p = 0; p < npanels; ++p) {
            const size_t c0 = p * kPanel;
            fn(r, count, row_stride, panels + p * d * kPanel, std::min(kPanel, K - c0), kPanel, d, o + c0,
               out_stride);
        }
    });
}

}  // namespace

void pack_panels(const float* columns, size_t K, size_t column_stride, size_t d, float* panels) {
    const size_t npanels = (K + kPanel - 1) / kPanel;
    for (size_t p = 0; p < npanels; ++p) {
        const size_t c0 = p * kPanel, width = std::min(kPanel, K - c0);
        float* panel = panels + p * d * kPanel;
        for (size_t t = 0; t < d; ++t) {
            const float* src = columns + t * column_stride + c0;
            std::copy(src, src + width, panel + t * kPanel);
            std::fill(panel + t * kPanel + width, panel + (t + 1) * kPanel, 0.0f);
        }
    }
}

void inner_products(const float* rows, size_t nrows, size_t row_stride, const float* columns, size_t K,
                    size_t column_stride, size_t d, float* out, size_t out_stride,
                    const InterruptCallback& interrupt, int nthreads, SimdLevel level) {
    check_common(d, row_stride, K, out_stride, level);
    if (column_stride < K) throw std::invalid_argument("inner_products: expected column_stride >= K");
    if (nrows == 0) return;
    if (rows == nullptr || columns == nullptr || out == nullptr) {
        throw std::invalid_argument("inner_products: null array");
    }
    const size_t npanels = (K + kPanel - 1) / kPanel;
    std::unique_ptr<float[]> packed;
    if (nrows >= kPackMinRows && npanels > 1) {
        packed.reset(new float[npanels * d * kPanel]);
        pack_panels(columns, K, column_stride, d, packed.get());
    }
    run_items(rows, nrows, row_stride, columns, K, column_stride, packed.get(), d, out, out_stride, interrupt,
              nthreads, level);
}

void inner_products_packed(const float* rows, size_t nrows, size_t row_stride, const float* panels, size_t npanels,
                           size_t d, float* out, size_t out_stride, const InterruptCallback& interrupt, int nthreads,
                           SimdLevel level) {
    const size_t K = npanels * kPanel;
    check_common(d, row_stride, K, out_stride, level);
    if (nrows == 0) return;
    if (rows == nullptr || panels == nullptr || out == nullptr) {
        throw std::invalid_argument("inner_products: null array");
    }
    run_items(rows, nrows, row_stride, nullptr, K, kPanel, panels, d, out, out_stride, interrupt, nthreads, level);
}

}  // namespace drq

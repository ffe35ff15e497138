#include "parallel.h"

namespace drq {

namespace {

int default_num_threads() {
    const unsigned n = std::thread::hardware_concurrency();  // 0 when unknown
    return n == 0 ? 1 : static_cast<int>(n);
}

std::atomic<int>& num_threads_setting() {
    static std::atomic<int> n{default_num_threads()};
    return n;
}

}  // namespace

int get_num_threads() { return num_threads_setting().load(std::memory_order_relaxed); }

void set_num_threads(int n) {
    if (n < 1) {
        throw std::invalid_argument("set_num_threads: n must be >= 1, got " + std::to_string(n));
    }
    num_threads_setting().store(n, std::memory_order_relaxed);
}

}  // namespace drq

// A small std::thread based parallel loop with cooperative interruption.
//
// Why not OpenMP: the faiss-cpu and torch wheels each bundle their own OpenMP runtime; a third
// one in the same process invites oversubscription and runtime clashes.
//
// Model: the calling thread is worker 0 and takes part in the work; other workers are spawned for
// the call and joined before it returns. Work items are handed out one at a time from a shared
// counter, so uneven items balance and the result never depends on the number of workers (which
// also lets the loop go on with fewer workers if a thread cannot be created).
//
// Interruption: the callback (e.g. "did the user press Ctrl-C?") is only ever called on the
// calling thread, at most every `poll_period`, between work items, from inside long items
// (through Interrupter::should_stop(worker)), and while worker 0 waits for the others. Once it
// returns true every worker stops at its next check and the loop throws drq::Interrupted.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace drq {

// Thrown when an interrupt callback asked a long call to stop.
class Interrupted : public std::runtime_error {
public:
    Interrupted() : std::runtime_error("drq: interrupted") {}
};

// Returns true to request that the running call stops. Empty = never interrupted.
using InterruptCallback = std::function<bool()>;

// Default worker count for multi-threaded calls: std::thread::hardware_concurrency() (at least
// 1) until set_num_threads is called.
int get_num_threads();
// n >= 1; throws std::invalid_argument otherwise.
void set_num_threads(int n);

class Interrupter {
public:
    explicit Interrupter(InterruptCallback callback,
                         std::chrono::milliseconds poll_period = std::chrono::milliseconds(5))
        : callback_(std::move(callback)),
          poll_period_(poll_period),
          last_poll_(std::chrono::steady_clock::now()) {}

    // Called by every worker from its work at convenient points (e.g. every few blocks).
    // Worker 0 (the calling thread) also runs the callback when poll_period has passed.
    // Returns true when the worker must stop.
    bool should_stop(int worker) {
        if (worker == 0 && callback_ && !stop_.load(std::memory_order_relaxed)) {
            const auto now = std::chrono::steady_clock::now();
            if (now - last_poll_ >= poll_period_) {
                last_poll_ = now;
                if (callback_()) {
                    interrupted_ = true;
                    request_stop();
                }
            }
        }
        return stop_.load(std::memory_order_relaxed);
    }

    // Stops all workers (also used when one of them failed).
    void request_stop() { stop_.store(true, std::memory_order_relaxed); }
    bool stop_requested() const { return stop_.load(std::memory_order_relaxed); }

    // The callback asked to stop. Only meaningful on the calling thread after the workers joined.
    bool interrupted() const { return interrupted_; }

    std::chrono::milliseconds poll_period() const { return poll_period_; }

private:
    InterruptCallback callback_;
    std::chrono::milliseconds poll_period_;
    std::chrono::steady_clock::time_point last_poll_;  // worker 0 only
    bool interrupted_ = false;                         // worker 0 only
    std::atomic<bool> stop_{false};
};

// Calls fn(item, worker) for every item in [0, nitems) on up to `nworkers` workers.
// Rethrows the first exception thrown by fn (after stopping and joining all workers) and throws
// drq::Interrupted when the interrupter's callback asked to stop; either way some items may not
// have run.
template <class Fn>
void parallel_for(size_t nitems, int nworkers, Interrupter& interrupter, Fn&& fn) {
    if (nitems == 0) return;
    if (nworkers < 1) nworkers = 1;
    if (static_cast<size_t>(nworkers) > nitems) nworkers = static_cast<int>(nitems);

    std::atomic<size_t> next_item{0};
    std::vector<std::exception_ptr> errors(static_cast<size_t>(nworkers));

    auto work = [&](int worker) {
        try {
            for (;;) {
                if (interrupter.should_stop(worker)) return;
                const size_t item = next_item.fetch_add(1, std::memory_order_relaxed);
                if (item >= nitems) return;
                fn(item, worker);
            }
        } catch (...) {
            errors[static_cast<size_t>(worker)] = std::current_exception();
            interrupter.request_stop();
        }
    };

    std::mutex mutex;
    std::condition_variable finished_cv;
    int running = 0;  // spawned workers not yet finished, guarded by mutex
    std::vector<std::thread> threads;
    threads.reserve(static_cast<size_t>(nworkers - 1));
    for (int worker = 1; worker < nworkers; ++worker) {
        {
            std::lock_guard<std::mutex> lock(mutex);
            ++running;
        }
        try {
            threads.emplace_back([&, worker] {
                work(worker);
                {
                    std::lock_guard<std::mutex> lock(mutex);
                    --running;
                }
                finished_cv.notify_one();
            });
        } catch (const std::system_error&) {
            std::lock_guard<std::mutex> lock(mutex);
            --running;
            break;  // no more threads available: the shared counter lets fewer workers finish
        }
    }

    work(0);

    // Wait for the others, still polling the callback: the work left to them may be long.
    {
        std::unique_lock<std::mutex> lock(mutex);
        while (running > 0) {
            finished_cv.wait_for(lock, interrupter.poll_period());
            if (running > 0) {
                lock.unlock();
                try {
                    interrupter.should_stop(0);
                } catch (...) {  // a throwing callback must not skip the joins below
                    if (!errors[0]) errors[0] = std::current_exception();
                    interrupter.request_stop();
                }
                lock.lock();
            }
        }
    }
    for (auto& thread : threads) thread.join();

    for (const auto& error : errors) {
        if (error) std::rethrow_exception(error);
    }
    if (interrupter.interrupted()) throw Interrupted();
}

}  // namespace drq

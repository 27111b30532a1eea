// Which timer is cheaper on io_uring: the loop's heap (what weft's sleep_for uses, the
// wait carrying the next deadline) or one IORING_OP_TIMEOUT submission per sleep?
//
//   timer_cost [--timers N] [--repetitions R]
//
// Each round spawns N tasks that sleep a pseudo-random 1..50 ms, once through each
// mechanism, and reports the process CPU time (user + system) per timer; medians of R.
#include <weft/weft.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "args.hpp"

#if WEFT_HAS_URING
namespace {
using uring = weft::backend::uring;

/// A sleep as a kernel timer: one SQE, completing with -ETIME at the deadline.
struct kernel_sleep_op {
    int fd = -1;
    __kernel_timespec ts{};
    static constexpr weft::interest dir = weft::interest::read;
    int try_now() noexcept { return -EAGAIN; }  // never used: a proactor-only operation
    bool drained(int) const noexcept { return false; }
    void prepare(uring::preparer& p) noexcept { p.timeout(&ts); }
    bool finish(int& res) noexcept {
        if (res == -ETIME) res = 0;
        return true;
    }
    weft::result<void> make(int res) const noexcept { return weft::detail::to_result(res); }
};

double cpu_seconds() {
    rusage u{};
    ::getrusage(RUSAGE_SELF, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

template <bool Kernel>
double run_round(unsigned n) {
    weft::loop<uring> loop;
    std::uint64_t seed = 12345;
    double start = cpu_seconds();
    for (unsigned i = 0; i < n; ++i) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        auto ms = std::chrono::milliseconds(1 + (seed >> 33) % 50);
        if constexpr (Kernel) {
            loop.spawn([](uring& b, std::chrono::milliseconds d) -> weft::task<void> {
                kernel_sleep_op op;
                op.ts.tv_nsec = std::chrono::nanoseconds(d).count();
                (void)co_await weft::io_awaiter<uring, kernel_sleep_op>(&b, op);
            }(loop.backend(), ms));
        } else {
            loop.spawn([](std::chrono::milliseconds d) -> weft::task<void> { (void)co_await weft::sleep_for(d); }(ms));
        }
    }
    loop.run();
    return (cpu_seconds() - start) * 1e6 / n;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
    auto args = example::parse(argc, argv);
    auto n =
        static_cast<unsigned>(example::number_or_exit("--timers", args.get("--timers").value_or("20000"), 1, 1000000));
    auto reps = example::number_or_exit("--repetitions", args.get("--repetitions").value_or("5"), 1, 100);
    if (!uring::available()) {
        std::fprintf(stderr, "timer_cost: io_uring is not available here\n");
        return 3;
    }
    std::vector<double> heap, kernel;
    for (unsigned long r = 0; r < reps; ++r) {  // alternate, so drift hits both alike
        heap.push_back(run_round<false>(n));
        kernel.push_back(run_round<true>(n));
    }
    std::printf("timers per round: %u, rounds: %lu (medians, process CPU per timer, spawn included)\n", n, reps);
    std::printf("loop heap (sleep_for):       %.3f us\n", median(heap));
    std::printf("IORING_OP_TIMEOUT per sleep: %.3f us\n", median(kernel));
    return 0;
}
#else
int main() {
    std::fprintf(stderr, "timer_cost: built without liburing\n");
    return 3;
}
#endif

// Cross-loop ping-pong: a value goes from loop 0 to loop 1 over a weft::channel and
// straight back over another, N times; every leg wakes a loop that sleeps. Measures
// round trips per second and the round trip's latency, for a backend and a wake-up
// path (io_uring: IORING_OP_MSG_RING ring to ring, or the target loop's eventfd), and
// the same ping-pong between two plain threads over a mutex + condition variable queue
// as the baseline.
//
//   pingpong [--backend NAME] [--wake msg_ring|eventfd] [--round-trips N] [--pin on|off]
//   pingpong --baseline mutex_cv [--round-trips N] [--pin on|off]
//
// Prints one line:
//   pingpong backend=uring wake=msg_ring round_trips=N seconds=S round_trips_per_s=R
//            msgs_per_s=M p50_us=A p99_us=B
// (msgs_per_s counts both legs). With --pin on (the default) loop/thread 0 runs on the
// first CPU the process may use and loop/thread 1 on the second. Exit status 3: the
// backend is not available here.
#include <weft/weft.hpp>

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "args.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

struct figures {
    double seconds = 0;
    std::vector<std::uint32_t> ns;  ///< each round trip, in nanoseconds
};

void print(const std::string& backend, const std::string& wake, std::uint64_t n, figures& f) {
    std::sort(f.ns.begin(), f.ns.end());
    auto pct = [&](double p) {
        return f.ns.empty() ? 0.0 : f.ns[static_cast<std::size_t>(p * (f.ns.size() - 1))] / 1000.0;
    };
    std::printf(
        "pingpong backend=%s wake=%s round_trips=%llu seconds=%.3f round_trips_per_s=%.0f msgs_per_s=%.0f "
        "p50_us=%.2f p99_us=%.2f\n",
        backend.c_str(), wake.c_str(), static_cast<unsigned long long>(n), f.seconds, n / f.seconds,
        2.0 * n / f.seconds, pct(0.50), pct(0.99));
}

template <class B>
int run(std::uint64_t n, bool msg_ring, bool pin) {
    if (!B::available()) {
        std::fprintf(stderr, "error: backend %s is not available here\n", std::string(B::name).c_str());
        return 3;
    }
    weft::channel<std::uint64_t> ping(64), pong(64);
    figures f;
    f.ns.resize(n);
    {
        weft::runtime<B> rt({.threads = 2, .pin = pin, .msg_ring_wakeups = msg_ring});
        auto echo = [](weft::channel<std::uint64_t>& in, weft::channel<std::uint64_t>& out,
                       std::uint64_t n) -> weft::task<void> {
            for (std::uint64_t i = 0; i < n; ++i) {
                auto v = co_await in.receive();
                if (!v || !co_await out.send(*v)) co_return;
            }
        };
        auto drive = [](weft::channel<std::uint64_t>& out, weft::channel<std::uint64_t>& in, std::uint64_t n,
                        figures& f) -> weft::task<void> {
            const auto start = clock_type::now();
            for (std::uint64_t i = 0; i < n; ++i) {
                const auto t0 = clock_type::now();
                if (!co_await out.send(std::uint64_t{i})) co_return;
                auto v = co_await in.receive();
                if (!v || *v != i) co_return;
                f.ns[i] = static_cast<std::uint32_t>(
                    std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now() - t0).count());
            }
            f.seconds = std::chrono::duration<double>(clock_type::now() - start).count();
        };
        (void)rt.spawn_on(1, echo(ping, pong, n));
        (void)rt.spawn_on(0, drive(ping, pong, n, f));
        rt.run();
    }
    const bool ring = msg_ring && B::kind == weft::backend_kind::proactor;
    print(std::string(B::name), ring ? "msg_ring" : "eventfd", n, f);
    return f.seconds > 0 ? 0 : 1;
}

/// The baseline: the same ping-pong between two threads, over two std::deque queues each
/// guarded by a mutex and a condition variable.
int run_baseline(std::uint64_t n, bool pin) {
    struct queue {
        std::mutex m;
        std::condition_variable cv;
        std::deque<std::uint64_t> q;
        void push(std::uint64_t v) {
            {
                std::lock_guard lock(m);
                q.push_back(v);
            }
            cv.notify_one();
        }
        std::uint64_t pop() {
            std::unique_lock lock(m);
            cv.wait(lock, [&] { return !q.empty(); });
            std::uint64_t v = q.front();
            q.pop_front();
            return v;
        }
    } ping, pong;
    auto pin_to = [pin](std::size_t k) {
        if (!pin) return;
        cpu_set_t allowed;
        if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0) return;
        std::vector<int> cpus;
        for (int c = 0; c < CPU_SETSIZE; ++c)
            if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
        if (cpus.empty()) return;
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpus[k % cpus.size()], &one);
        (void)::pthread_setaffinity_np(::pthread_self(), sizeof one, &one);
    };
    figures f;
    f.ns.resize(n);
    std::thread echo([&] {
        pin_to(1);
        for (std::uint64_t i = 0; i < n; ++i) pong.push(ping.pop());
    });
    std::thread drive([&] {
        pin_to(0);
        const auto start = clock_type::now();
        for (std::uint64_t i = 0; i < n; ++i) {
            const auto t0 = clock_type::now();
            ping.push(i);
            (void)pong.pop();
            f.ns[i] = static_cast<std::uint32_t>(
                std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now() - t0).count());
        }
        f.seconds = std::chrono::duration<double>(clock_type::now() - start).count();
    });
    drive.join();
    echo.join();
    print("threads", "mutex_cv", n, f);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    auto args = example::parse(argc, argv);
    if (args.get("--help")) {
        std::printf(
            "usage: pingpong [--backend NAME] [--wake msg_ring|eventfd] [--round-trips N] [--pin on|off]\n"
            "       pingpong --baseline mutex_cv [--round-trips N] [--pin on|off]\n  backends: %s\n",
            weft::all_backends::names().c_str());
        return 0;
    }
    const std::uint64_t n =
        example::number_or_exit("--round-trips", args.get("--round-trips").value_or("100000"), 1, 100'000'000);
    const bool pin = example::on_off_or_exit("--pin", args.get("--pin").value_or("on"));
    if (auto baseline = args.get("--baseline")) {
        if (*baseline != "mutex_cv") {
            std::fprintf(stderr, "error: --baseline must be mutex_cv, not '%s'\n", baseline->c_str());
            return 2;
        }
        return run_baseline(n, pin);
    }
    const std::string wake = args.get("--wake").value_or("msg_ring");
    if (wake != "msg_ring" && wake != "eventfd") {
        std::fprintf(stderr, "error: --wake must be msg_ring or eventfd, not '%s'\n", wake.c_str());
        return 2;
    }
    const std::string name = args.get("--backend").value_or("uring");
    int rc = 2;
    if (!weft::with_backend(name, [&]<class B>() { rc = run<B>(n, wake == "msg_ring", pin); }))
        std::fprintf(stderr, "error: unknown backend '%s' (choose from: %s)\n", name.c_str(),
                     weft::all_backends::names().c_str());
    return rc;
}

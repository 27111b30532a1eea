// A burst of connections against weft::runtime's two ways of spreading them: one
// SO_REUSEPORT listener per loop (the kernel picks by a hash of the addresses), or
// loop 0 accepting and handing each connection to the least loaded loop.
//
//   spread_burst [--backend NAME] [--spread reuse_port|hand_off] [--connections 10000]
//                [--threads 2] [--clients 4]
//
// --clients threads connect as fast as they can, each connection sending one byte,
// reading its echo and closing, until --connections were served. Prints one line:
//   spread backend=B spread=S threads=N connections=C seconds=T conns_per_s=R
//          per_loop=N0/N1/.. imbalance=X idle_wakeups=W0/W1/.. iterations=I0/I1/..
//          cpu_ms=C0/C1/..
// imbalance is the busiest loop's count over the mean (1.00 is perfect); idle_wakeups
// are loop iterations that resumed nothing (a wake-up that found no work); cpu_ms is
// each loop thread's CPU time over the whole run (RUSAGE_THREAD; on blocking, the loop
// threads only, not the per-connection threads). The clients share the machine's CPUs
// with the server. Exit status 3: the backend is not available here.
#include <weft/weft.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "args.hpp"

namespace {

/// One client connection: connect, one byte there and back, close. False on failure.
bool one_connection(std::uint16_t port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    char c = 'x';
    ok = ok && ::send(fd, &c, 1, MSG_NOSIGNAL) == 1 && ::recv(fd, &c, 1, 0) == 1;
    ::close(fd);
    return ok;
}

template <class B>
int run(weft::spread how, unsigned threads, unsigned connections, unsigned clients) {
    if (!B::available()) {
        std::fprintf(stderr, "error: backend %s is not available here\n", std::string(B::name).c_str());
        return 3;
    }
    weft::runtime<B> rt({.threads = threads});
    auto bound = rt.serve(weft::endpoint::loopback_v4(0),
                          [](weft::tcp_stream<B> s) -> weft::task<void> {
                              char c;
                              auto n = co_await s.read_some(std::span(&c, 1));
                              if (n && *n == 1) (void)co_await s.write_all(std::span(&c, 1));
                              (void)co_await s.read_some(std::span(&c, 1));  // until the client closes
                          },
                          how, {.backlog = 4096});
    if (!bound) {
        std::fprintf(stderr, "error: listen: %s\n", bound.error().message().c_str());
        return 1;
    }
    const std::uint16_t port = bound->port();
    std::atomic<unsigned> next{0}, failed{0};
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> load;
    for (unsigned k = 0; k < clients; ++k)
        load.emplace_back([&] {
            while (next.fetch_add(1) < connections)
                if (!one_connection(port)) failed.fetch_add(1);
        });
    for (auto& t : load) t.join();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    // Each loop's own CPU time, read on its thread.
    std::vector<std::atomic<long>> cpu_us(threads);
    for (unsigned i = 0; i < threads; ++i)
        (void)rt.spawn_on(i, [](std::atomic<long>& out) -> weft::task<void> {
            rusage ru{};
            ::getrusage(RUSAGE_THREAD, &ru);
            out = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1'000'000L + ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
            co_return;
        }(cpu_us[i]));
    while (rt.live_tasks() > threads)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));  // the accept loops stay
    std::vector<weft::loop_stats> st;
    for (unsigned i = 0; i < threads; ++i) st.push_back(rt.stats(i));
    rt.shutdown(std::chrono::milliseconds(1000));
    rt.run();
    std::uint64_t most = 0, total = 0;
    std::string per_loop, idle, iterations, cpu;
    for (unsigned i = 0; i < threads; ++i) {
        most = std::max(most, st[i].connections);
        total += st[i].connections;
        const char* sep = i ? "/" : "";
        per_loop += sep + std::to_string(st[i].connections);
        idle += sep + std::to_string(st[i].idle_wakeups);
        iterations += sep + std::to_string(st[i].iterations);
        cpu += sep + std::to_string(cpu_us[i].load() / 1000);
    }
    std::printf(
        "spread backend=%s spread=%s threads=%u connections=%u seconds=%.3f conns_per_s=%.0f per_loop=%s "
        "imbalance=%.2f idle_wakeups=%s iterations=%s cpu_ms=%s failed=%u\n",
        std::string(B::name).c_str(), how == weft::spread::reuse_port ? "reuse_port" : "hand_off", threads, connections,
        seconds, connections / seconds, per_loop.c_str(), total ? most * threads / static_cast<double>(total) : 0.0,
        idle.c_str(), iterations.c_str(), cpu.c_str(), failed.load());
    return failed.load() == 0 && total == connections ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    auto args = example::parse(argc, argv);
    if (args.get("--help")) {
        std::printf(
            "usage: spread_burst [--backend NAME] [--spread reuse_port|hand_off] [--connections N] [--threads N]\n"
            "                    [--clients N]\n  backends: %s\n",
            weft::all_backends::names().c_str());
        return 0;
    }
    const std::string spread = args.get("--spread").value_or("reuse_port");
    if (spread != "reuse_port" && spread != "hand_off") {
        std::fprintf(stderr, "error: --spread must be reuse_port or hand_off, not '%s'\n", spread.c_str());
        return 2;
    }
    const auto connections = static_cast<unsigned>(
        example::number_or_exit("--connections", args.get("--connections").value_or("10000"), 1, 10'000'000));
    const auto threads =
        static_cast<unsigned>(example::number_or_exit("--threads", args.get("--threads").value_or("2"), 1, 1024));
    const auto clients =
        static_cast<unsigned>(example::number_or_exit("--clients", args.get("--clients").value_or("4"), 1, 1024));
    const std::string name = args.get("--backend").value_or("epoll_et");
    const auto how = spread == "hand_off" ? weft::spread::hand_off : weft::spread::reuse_port;
    int rc = 2;
    if (!weft::with_backend(name, [&]<class B>() { rc = run<B>(how, threads, connections, clients); }))
        std::fprintf(stderr, "error: unknown backend '%s' (choose from: %s)\n", name.c_str(),
                     weft::all_backends::names().c_str());
    return rc;
}

// Echo load generator: N connections, each keeping D messages of S bytes in flight, for
// a fixed time after a warm-up. Plain level-triggered epoll on one thread (pin it to a
// core of its own): cheap enough per message to outrun the servers it measures.
//
//   echo_load --port P [--host 127.0.0.1] [--connections N] [--size S] [--depth D]
//             [--seconds T] [--warmup W] [--messages M] [--idle]
//
// --messages M runs a fixed count instead of a fixed time: exactly M messages are sent
// and echoed (no warm-up; --seconds becomes a time limit, and missing it is an error).
// Two such runs of different M, each against a fresh server, let a caller subtract
// everything that is not per message (start-up, accepts, teardown) from a counter read
// over the server's whole life: instructions under callgrind, syscalls, allocations.
// --idle opens the connections, echoes one message on each (so the server has set up
// each session and read from it), prints "idle connections=N" and then holds the
// connections open, sending nothing, until SIGINT or SIGTERM: the server's memory per
// idle connection is measured meanwhile.
//
// Every echoed byte is checked against what was sent (byte o of connection c's stream is
// a function of c and o); a wrong byte, a reset or an early EOF is an error, and any
// error makes the exit status 1. Only loopback targets are accepted. Prints "window"
// when the measured window opens (after the warm-up; with --messages, before the first
// send; never with --idle), and at its end one line:
//   msgs=M seconds=T msgs_per_s=R mib_per_s=B p50_us=.. p99_us=.. p999_us=..
//   errors=E client_cpu_pct=C total_msgs=A
// where M, R, B and the latencies cover the measured window only, and total_msgs counts
// the warm-up too (a server's CPU time over its whole run divides by it).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <csignal>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "args.hpp"

namespace {

using steady = std::chrono::steady_clock;

/// Byte `o` of connection `c`'s stream: varies with both, so a byte delivered to the
/// wrong connection or at the wrong offset is caught.
inline unsigned char stream_byte(std::uint32_t c, std::uint64_t o) noexcept {
    std::uint64_t x = o * 0x9E3779B97F4A7C15ULL + c * 0xBF58476D1CE4E5B9ULL;
    return static_cast<unsigned char>((x >> 32) ^ (x >> 56));
}

struct connection {
    int fd = -1;
    std::uint32_t id = 0;
    std::uint64_t sent = 0;      ///< stream bytes written
    std::uint64_t queued = 0;    ///< stream bytes the in-flight messages add up to
    std::uint64_t received = 0;  ///< stream bytes echoed back and checked
    std::vector<steady::time_point> started;  ///< send time of each in-flight message (a ring)
    std::size_t first = 0;                    ///< oldest in-flight message in `started`
    std::size_t in_flight = 0;
    bool want_out = false;  ///< EPOLLOUT is registered
};

struct load {
    std::size_t size = 64, depth = 1;
    bool measuring = false;
    std::uint64_t msgs = 0, total_msgs = 0, errors = 0;
    std::uint64_t budget = UINT64_MAX;  ///< messages still to start (--messages, --idle)
    std::vector<std::uint32_t> latencies_ns;  ///< measured window only
    int ep = -1;

    void start_message(connection& c, steady::time_point now) {
        if (budget == 0) return;
        --budget;
        c.started[(c.first + c.in_flight) % depth] = now;
        ++c.in_flight;
        c.queued += size;
    }
    void fail(connection& c, const char* what) {
        if (errors++ < 5) std::fprintf(stderr, "echo_load: connection %u: %s\n", c.id, what);
        ::epoll_ctl(ep, EPOLL_CTL_DEL, c.fd, nullptr);
        ::close(c.fd);
        c.fd = -1;
    }
    /// Writes what is queued; registers EPOLLOUT only while the socket is full.
    void flush(connection& c) {
        unsigned char buf[65536];
        while (c.fd >= 0 && c.sent < c.queued) {
            std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(c.queued - c.sent, sizeof buf));
            for (std::size_t i = 0; i < n; ++i) buf[i] = stream_byte(c.id, c.sent + i);
            ssize_t w = ::send(c.fd, buf, n, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN) break;
                return fail(c, std::strerror(errno));
            }
            c.sent += static_cast<std::uint64_t>(w);
        }
        bool want = c.fd >= 0 && c.sent < c.queued;
        if (c.fd >= 0 && want != c.want_out) {
            epoll_event ev{};
            ev.events = EPOLLIN | (want ? EPOLLOUT : 0u);
            ev.data.ptr = &c;
            ::epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
            c.want_out = want;
        }
    }
    /// Reads and checks the echo; every completed message starts the next one.
    void drain(connection& c, steady::time_point now) {
        unsigned char buf[65536];
        for (;;) {
            ssize_t r = ::recv(c.fd, buf, sizeof buf, 0);
            if (r < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN) break;
                return fail(c, std::strerror(errno));
            }
            if (r == 0) return fail(c, "the server closed the connection");
            auto n = static_cast<std::size_t>(r);
            if (c.received + n > c.sent) return fail(c, "received more than was sent");
            for (std::size_t i = 0; i < n; ++i)
                if (buf[i] != stream_byte(c.id, c.received + i)) return fail(c, "wrong byte in the echo");
            std::uint64_t before = c.received / size;
            c.received += n;
            for (std::uint64_t done = c.received / size - before; done > 0; --done) {
                ++total_msgs;
                if (measuring) {
                    ++msgs;
                    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now - c.started[c.first]).count();
                    latencies_ns.push_back(static_cast<std::uint32_t>(std::min<long long>(ns, UINT32_MAX)));
                }
                c.first = (c.first + 1) % depth;
                --c.in_flight;
                start_message(c, now);
            }
            if (static_cast<std::size_t>(r) < sizeof buf) break;  // short read: drained
        }
        flush(c);
    }
};

bool loopback(const std::string& host) {
    in_addr a4{};
    in6_addr a6{};
    if (::inet_pton(AF_INET, host.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    if (::inet_pton(AF_INET6, host.c_str(), &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
    return false;
}

int connect_to(const std::string& host, std::uint16_t port) {
    sockaddr_storage ss{};
    socklen_t len;
    if (host.find(':') != std::string::npos) {
        auto& a = reinterpret_cast<sockaddr_in6&>(ss);
        a.sin6_family = AF_INET6;
        a.sin6_port = htons(port);
        ::inet_pton(AF_INET6, host.c_str(), &a.sin6_addr);
        len = sizeof a;
    } else {
        auto& a = reinterpret_cast<sockaddr_in&>(ss);
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        ::inet_pton(AF_INET, host.c_str(), &a.sin_addr);
        len = sizeof a;
    }
    int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
        int e = errno;
        ::close(fd);
        return -e;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

double cpu_seconds() {
    rusage u{};
    ::getrusage(RUSAGE_SELF, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

double percentile_us(std::vector<std::uint32_t>& v, double q) {
    if (v.empty()) return 0;
    auto k = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1));
    std::nth_element(v.begin(), v.begin() + static_cast<long>(k), v.end());
    return v[k] / 1000.0;
}

}  // namespace

int main(int argc, char** argv) {
    auto args = example::parse(argc, argv, {"--help", "--idle"});
    std::string host = args.get("--host").value_or("127.0.0.1");
    auto port = example::port_or_exit(args.get("--port").value_or("0"));
    auto conns = example::number_or_exit("--connections", args.get("--connections").value_or("1"), 1, 100000);
    load L;
    L.size = example::number_or_exit("--size", args.get("--size").value_or("64"), 1, 1 << 20);
    L.depth = example::number_or_exit("--depth", args.get("--depth").value_or("1"), 1, 1024);
    auto seconds = example::number_or_exit("--seconds", args.get("--seconds").value_or("5"), 1, 3600);
    auto warmup = example::number_or_exit("--warmup", args.get("--warmup").value_or("1"), 0, 3600);
    auto fixed = example::number_or_exit("--messages", args.get("--messages").value_or("0"), 0, 1ULL << 40);
    const bool idle = args.get("--idle").has_value();
    if (idle && fixed) {
        std::fprintf(stderr, "error: --idle and --messages exclude each other\n");
        return 2;
    }
    if (idle) {  // one message per connection, then hold
        fixed = conns;
        L.depth = 1;
    }
    // The measured window starts: said on stdout at once, so a caller can read the
    // server's CPU counters at the same moment (and again at the result line).
    auto start_window = [] {
        std::printf("window\n");
        std::fflush(stdout);
    };
    if (fixed) {
        L.budget = fixed;
        L.measuring = true;
        warmup = 0;
    }
    if (port == 0) {
        std::fprintf(stderr, "error: --port is required\n");
        return 2;
    }
    if (!loopback(host)) {
        std::fprintf(stderr, "error: --host %s is not a loopback address (127.0.0.0/8 or ::1)\n", host.c_str());
        return 2;
    }
    rlimit nofile{};
    ::getrlimit(RLIMIT_NOFILE, &nofile);
    if (nofile.rlim_cur < conns + 64) {
        nofile.rlim_cur = std::min<rlim_t>(nofile.rlim_max, conns + 64);
        ::setrlimit(RLIMIT_NOFILE, &nofile);
    }
    L.ep = ::epoll_create1(EPOLL_CLOEXEC);
    std::vector<connection> cs(conns);
    auto now = steady::now();
    for (std::uint32_t i = 0; i < conns; ++i) {
        connection& c = cs[i];
        c.id = i;
        c.fd = connect_to(host, port);
        if (c.fd < 0) {
            std::fprintf(stderr, "error: connection %u of %lu to %s:%u: %s\n", i, conns, host.c_str(), port,
                         std::strerror(-c.fd));
            return 1;
        }
        c.started.resize(L.depth);
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.ptr = &c;
        ::epoll_ctl(L.ep, EPOLL_CTL_ADD, c.fd, &ev);
    }
    now = steady::now();
    if (fixed && !idle) start_window();
    for (auto& c : cs) {
        for (std::size_t k = 0; k < L.depth; ++k) L.start_message(c, now);
        L.flush(c);
    }
    const auto measure_from = now + std::chrono::seconds(warmup);
    const auto end = measure_from + std::chrono::seconds(seconds);
    double cpu0 = fixed ? cpu_seconds() : 0;
    std::vector<epoll_event> events(1024);
    while (now < end && L.errors == 0 && !(fixed && L.total_msgs == fixed)) {
        int n = ::epoll_wait(L.ep, events.data(), static_cast<int>(events.size()), 100);
        now = steady::now();
        if (!L.measuring && now >= measure_from) {
            start_window();
            L.measuring = true;
            cpu0 = cpu_seconds();
            L.latencies_ns.reserve(1 << 20);
        }
        for (int i = 0; i < n; ++i) {
            auto& c = *static_cast<connection*>(events[i].data.ptr);
            if (c.fd < 0) continue;
            if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) L.drain(c, now);
            if (c.fd >= 0 && (events[i].events & EPOLLOUT)) L.flush(c);
        }
    }
    if (fixed && L.errors == 0 && L.total_msgs != fixed) {
        std::fprintf(stderr, "error: only %llu of %llu messages were echoed within %lu s\n",
                     static_cast<unsigned long long>(L.total_msgs), static_cast<unsigned long long>(fixed), seconds);
        ++L.errors;
    }
    if (idle && L.errors == 0) {
        // Hold the connections, silent, until told to stop; the signals are blocked and
        // taken with sigwait, so no handler runs and the exit below closes everything.
        sigset_t stop;
        sigemptyset(&stop);
        sigaddset(&stop, SIGINT);
        sigaddset(&stop, SIGTERM);
        ::sigprocmask(SIG_BLOCK, &stop, nullptr);
        std::printf("idle connections=%lu\n", conns);
        std::fflush(stdout);
        int sig = 0;
        ::sigwait(&stop, &sig);
    }
    double window = std::chrono::duration<double>(now - measure_from).count();
    double cpu = L.measuring ? cpu_seconds() - cpu0 : 0;
    if (window <= 0) window = 1e-9;
    std::printf(
        "msgs=%llu seconds=%.3f msgs_per_s=%.0f mib_per_s=%.2f p50_us=%.1f p99_us=%.1f p999_us=%.1f errors=%llu "
        "client_cpu_pct=%.1f total_msgs=%llu\n",
        static_cast<unsigned long long>(L.msgs), window, static_cast<double>(L.msgs) / window,
        static_cast<double>(L.msgs) * static_cast<double>(L.size) / window / (1 << 20),
        percentile_us(L.latencies_ns, 0.50), percentile_us(L.latencies_ns, 0.99),
        percentile_us(L.latencies_ns, 0.999), static_cast<unsigned long long>(L.errors), 100.0 * cpu / window,
        static_cast<unsigned long long>(L.total_msgs));
    for (auto& c : cs)
        if (c.fd >= 0) ::close(c.fd);
    return L.errors == 0 ? 0 : 1;
}

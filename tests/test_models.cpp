// Failure modes particular to one IO model: select's FD_SETSIZE, sigio's queue
// overflow, spin's idle sleep, and the edge-triggered models' draining (run on every
// backend, since a level-triggered one must pass it too).
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <ctime>
#include <string>
#include <thread>

#include "helpers.hpp"

using namespace weft_test;

TEMPLATE_TEST_CASE("data and FIN arriving together are both seen (no second edge needed)", "[models][drain]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        for (int round = 0; round < 50; ++round) {
            auto p = co_await make_pair(loop);
            CO_REQUIRE(co_await p.client.write_all(std::string_view("last words")));
            REQUIRE(p.client.shutdown());
            (void)co_await weft::sleep_for(std::chrono::milliseconds(round % 2));  // both queued, or not yet
            std::array<char, 4096> buf;
            std::string got;
            for (;;) {
                auto n = co_await weft::with_timeout(p.server.read_some(buf), 5s);
                REQUIRE(n);
                if (*n == 0) break;
                got.append(buf.data(), *n);
            }
            REQUIRE(got == "last words");
        }
    }());
}

TEMPLATE_TEST_CASE("a burst far larger than one read is drained in full after one notification",
                   "[models][drain]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        const auto data = pattern(200'000, 11);
        // The whole burst is in the server's receive buffer before it reads once.
        CO_REQUIRE(co_await p.client.write_all(data));
        (void)co_await weft::sleep_for(10ms);
        std::vector<char> got;
        std::array<char, 1000> buf;  // 200 reads for one arrival
        while (got.size() < data.size()) {
            auto n = co_await weft::with_timeout(p.server.read_some(buf), 5s);
            REQUIRE(n);
            REQUIRE(*n > 0);
            got.insert(got.end(), buf.begin(), buf.begin() + static_cast<long>(*n));
        }
        REQUIRE(got == data);
    }());
}

TEST_CASE("select: an fd at or above FD_SETSIZE is refused with fd_too_large; other fds keep working",
          "[models][select]") {
    using B = weft::backend::select;
    weft::loop<B> loop;
    auto listener = weft::tcp_listener<B>::bind(loop, weft::endpoint::loopback_v4(0)).value();
    auto ep = listener.local_endpoint().value();
    rlimit old{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &old) == 0);
    if (old.rlim_max < FD_SETSIZE + 64) {
        WARN("RLIMIT_NOFILE hard limit " << old.rlim_max << " is too low to open fds past FD_SETSIZE: not run");
        return;
    }
    rlimit high = old;
    high.rlim_cur = FD_SETSIZE + 64;
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &high) == 0);
    run_bounded(loop, [&]() -> weft::task<void> {
        auto [c0, s0] = co_await weft::when_all(weft::tcp_stream<B>::connect(loop, ep), listener.accept());
        REQUIRE(c0);
        REQUIRE(s0);
        // Fill every fd below FD_SETSIZE: the next socket gets a number select cannot hold.
        std::vector<int> hog;
        for (int fd; (fd = ::dup(0)) >= 0 && fd < FD_SETSIZE;) hog.push_back(fd);
        if (!hog.empty() && hog.back() >= FD_SETSIZE) FAIL("dup went past FD_SETSIZE unexpectedly");
        auto big = co_await weft::tcp_stream<B>::connect(loop, ep);
        REQUIRE_FALSE(big);
        REQUIRE(big.error() == weft::errc::fd_too_large);
        REQUIRE(big.error().message().find("FD_SETSIZE") != std::string::npos);
        // A raw client still reaches the listener; its accepted fd is too large too, and
        // accept() says so (and closes it) instead of corrupting memory.
        int raw = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        REQUIRE(raw >= FD_SETSIZE);
        REQUIRE(::connect(raw, ep.data(), ep.size()) == 0);
        auto refused = co_await listener.accept();
        REQUIRE_FALSE(refused);
        REQUIRE(refused.error() == weft::errc::fd_too_large);
        char one;
        REQUIRE(::recv(raw, &one, 1, 0) <= 0);  // the server side was closed
        ::close(raw);
        // The connection opened before keeps working.
        CO_REQUIRE(co_await c0->write_all(std::string_view("still here")));
        std::array<char, 10> buf;
        CO_REQUIRE(co_await s0->read_exact(buf));
        REQUIRE(std::string_view(buf.data(), buf.size()) == "still here");
        // With low fds free again, new connections are served.
        for (int fd : hog) ::close(fd);
        auto [c1, s1] = co_await weft::when_all(weft::tcp_stream<B>::connect(loop, ep), listener.accept());
        REQUIRE(c1);
        REQUIRE(s1);
    }());
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &old) == 0);
}

TEST_CASE("sigio: an overflowing real-time signal queue loses no data", "[models][sigio]") {
    using B = weft::backend::sigio;
    weft::loop<B> loop;
    auto listener = weft::tcp_listener<B>::bind(loop, weft::endpoint::loopback_v4(0)).value();
    auto ep = listener.local_endpoint().value();
    constexpr int conns = 64;
    rlimit old{};
    REQUIRE(::getrlimit(RLIMIT_SIGPENDING, &old) == 0);
    run_bounded(loop, [&]() -> weft::task<void> {
        std::vector<weft::tcp_stream<B>> servers;
        std::vector<int> clients;
        for (int i = 0; i < conns; ++i) {
            int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            REQUIRE(::connect(c, ep.data(), ep.size()) == 0);
            clients.push_back(c);
            servers.push_back((co_await listener.accept()).value());
        }
        // Only a handful of signals may be queued now: the rest overflow into SIGIO.
        rlimit low = old;
        low.rlim_cur = 2;
        REQUIRE(::setrlimit(RLIMIT_SIGPENDING, &low) == 0);
        for (int i = 0; i < conns; ++i) {
            std::string msg = "message " + std::to_string(i);
            REQUIRE(::send(clients[static_cast<std::size_t>(i)], msg.data(), msg.size(), MSG_NOSIGNAL) ==
                    static_cast<ssize_t>(msg.size()));
        }
        REQUIRE(::setrlimit(RLIMIT_SIGPENDING, &old) == 0);
        int done = 0;
        for (int i = 0; i < conns; ++i) {
            loop.spawn([](weft::tcp_stream<B>& s, int i, int& done) -> weft::task<void> {
                std::string want = "message " + std::to_string(i);
                std::string got(want.size(), '\0');
                auto r = co_await weft::with_timeout(s.read_exact(std::span(got.data(), got.size())), 5s);
                REQUIRE(r);
                REQUIRE(got == want);
                ++done;
            }(servers[static_cast<std::size_t>(i)], i, done));
        }
        while (done < conns) (void)co_await weft::sleep_for(1ms);
        REQUIRE(loop.backend().demux().overflows() > 0);
        for (int c : clients) ::close(c);
    }());
    ::setrlimit(RLIMIT_SIGPENDING, &old);
}

TEST_CASE("spin: with nothing to retry, the loop sleeps until its timer instead of burning CPU",
          "[models][spin]") {
    using B = weft::backend::spin;
    weft::loop<B> loop;
    auto cpu = [] {
        timespec t{};
        ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
        return std::chrono::seconds(t.tv_sec) + std::chrono::nanoseconds(t.tv_nsec);
    };
    auto before = cpu();
    auto start = weft::clock::now();
    auto slept = loop.run([]() -> weft::task<bool> {
        auto r = co_await weft::sleep_for(200ms);
        co_return static_cast<bool>(r);
    }());
    auto wall = weft::clock::now() - start;
    auto used = cpu() - before;
    REQUIRE(slept);
    REQUIRE(wall >= 200ms);
    // A spinning loop would use ~200 ms of CPU here; a sleeping one next to none.
    REQUIRE(used < 100ms);
}

TEST_CASE("blocking: 1,000 connections are served by 1,000 threads at once", "[models][blocking]") {
    using B = weft::backend::blocking;
    constexpr int conns = 1000;
    rlimit old{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &old) == 0);
    if (old.rlim_max < 2 * conns + 100) {
        WARN("RLIMIT_NOFILE hard limit " << old.rlim_max << " is too low for " << conns << " connections: not run");
        return;
    }
    rlimit high = old;
    high.rlim_cur = std::max<rlim_t>(old.rlim_cur, 2 * conns + 100);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &high) == 0);
    {
        weft::loop<B> loop;
        auto listener = weft::tcp_listener<B>::bind(loop, weft::endpoint::loopback_v4(0), {.backlog = conns}).value();
        auto ep = listener.local_endpoint().value();
        std::atomic<int> alive{0}, peak{0}, echoed{0};
        loop.spawn([](weft::loop<B>& l, weft::tcp_listener<B>& lst, std::atomic<int>& alive, std::atomic<int>& peak,
                      std::atomic<int>& echoed) -> weft::task<void> {
            for (int i = 0; i < conns; ++i) {
                auto s = co_await lst.accept();
                if (!s) co_return;
                // One session per connection, each on a thread of its own.
                l.spawn([](weft::tcp_stream<B> s, std::atomic<int>& alive, std::atomic<int>& peak,
                           std::atomic<int>& echoed) -> weft::task<void> {
                    int now = ++alive;
                    for (int p = peak.load(); now > p && !peak.compare_exchange_weak(p, now);) {
                    }
                    std::array<char, 64> buf;
                    for (;;) {
                        auto n = co_await s.read_some(buf);
                        if (!n || *n == 0) break;
                        if (!co_await s.write_all(std::span(buf.data(), *n))) break;
                        ++echoed;
                    }
                    --alive;
                }(std::move(*s), alive, peak, echoed));
            }
        }(loop, listener, alive, peak, echoed));
        // A plain client thread: every connection opens and gets its echo before any closes.
        int replies = 0;
        std::thread client([&] {
            std::vector<int> fds;
            for (int i = 0; i < conns; ++i) {
                int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0 || ::connect(fd, ep.data(), ep.size()) != 0) break;
                fds.push_back(fd);
                std::string msg = std::to_string(i);
                ::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL);
            }
            for (std::size_t i = 0; i < fds.size(); ++i) {
                std::string want = std::to_string(i);
                std::string got(want.size(), '\0');
                std::size_t have = 0;
                while (have < got.size()) {
                    long r = ::recv(fds[i], got.data() + have, got.size() - have, 0);
                    if (r <= 0) break;
                    have += static_cast<std::size_t>(r);
                }
                replies += got == want;
            }
            for (int fd : fds) ::close(fd);
        });
        loop.run();  // returns when the acceptor and every session thread have finished
        client.join();
        REQUIRE(replies == conns);
        REQUIRE(echoed == conns);
        REQUIRE(peak == conns);  // all sessions were blocked in read at the same time
        REQUIRE(alive == 0);
        REQUIRE(loop.live_tasks() == 0);
    }
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &old) == 0);
}

// Written for ThreadSanitizer (CI runs the [blocking] tests under it): results go into
// atomics and are checked on this thread after the task threads are joined, because
// Catch2 2's assertions are not thread-safe.
TEST_CASE("blocking: timeouts, close() from another task and loop teardown interrupt blocked calls",
          "[models][blocking]") {
    using B = weft::backend::blocking;
    std::atomic<int> timed_out{0}, reused{0}, cancelled_by_close{0}, ended_by_teardown{0};
    const int raw_peer = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(raw_peer >= 0);
    {
        weft::loop<B> loop;
        auto listener = weft::tcp_listener<B>::bind(loop, weft::endpoint::loopback_v4(0)).value();
        auto ep = listener.local_endpoint().value();
        loop.run([&]() -> weft::task<void> {
            // Not a structured binding: clang 14 cannot capture one in the lambdas below.
            auto both = co_await weft::when_all(weft::tcp_stream<B>::connect(loop, ep), listener.accept());
            auto& c = std::get<0>(both);
            auto& s = std::get<1>(both);
            if (!c || !s) co_return;
            std::array<char, 8> buf;
            for (int i = 0; i < 20; ++i) {  // each read is blocked in recv() when its timer fires
                auto r = co_await weft::with_timeout(s->read_some(buf), 5ms);
                if (!r && r.error() == std::errc::timed_out) ++timed_out;
            }
            // Interrupted calls leave the socket usable.
            if (co_await c->write_all(std::string_view("ping"))) {
                auto n = co_await s->read_exact(std::span(buf.data(), 4));
                if (n && std::string_view(buf.data(), 4) == "ping") ++reused;
            }
            // close() from another task completes the blocked read with operation_canceled.
            auto blocked = [&]() -> weft::task<void> {
                std::array<char, 8> b;
                auto r = co_await s->read_some(b);
                if (!r && r.error() == std::errc::operation_canceled) ++cancelled_by_close;
            };
            auto closer = [&]() -> weft::task<void> {
                (void)co_await weft::sleep_for(5ms);
                (void)s->close();
            };
            co_await weft::when_all(blocked(), closer());
            // A task still blocked when the loop dies is interrupted and joined (its peer,
            // a plain socket, stays open until after that).
            if (::connect(raw_peer, ep.data(), ep.size()) != 0) co_return;
            auto quiet = co_await listener.accept();
            if (!quiet) co_return;
            loop.spawn([](weft::tcp_stream<B> st, std::atomic<int>& ended) -> weft::task<void> {
                std::array<char, 8> b;
                (void)co_await st.read_some(b);
                ++ended;
            }(std::move(*quiet), ended_by_teardown));
        }());
        REQUIRE(loop.live_tasks() == 1);
    }
    ::close(raw_peer);
    REQUIRE(timed_out == 20);
    REQUIRE(reused == 1);
    REQUIRE(cancelled_by_close == 1);
    REQUIRE(ended_by_teardown == 1);
}

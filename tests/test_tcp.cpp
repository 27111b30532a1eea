// TCP behaviour on every backend: echo, many clients, partial writes, half-close,
// resets, refused connects, silent peers, cancellation, fairness, fd exhaustion.
#include "helpers.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <thread>

using namespace weft_test;
using tclock = weft::clock;

namespace {
template <class B>
weft::task<void> echo_until_eof(weft::tcp_stream<B> s) {
    std::array<char, 16384> buf;
    for (;;) {
        auto n = co_await s.read_some(buf);
        if (!n || *n == 0) break;
        if (!co_await s.write_all(std::span(buf.data(), *n))) break;
    }
    (void)s.shutdown();
}

/// Reads until EOF, appending to `out`; returns the first error, if any.
template <class B>
weft::task<std::error_code> read_to_eof(weft::tcp_stream<B>& s, std::vector<char>& out) {
    std::array<char, 65536> buf;
    for (;;) {
        auto n = co_await s.read_some(buf);
        if (!n) co_return n.error();
        if (*n == 0) co_return std::error_code{};
        out.insert(out.end(), buf.begin(), buf.begin() + static_cast<long>(*n));
    }
}

void set_linger_reset(int fd) {
    linger lg{1, 0};
    REQUIRE(::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
}
}  // namespace

TEMPLATE_TEST_CASE("echo of 1 MiB in both directions", "[tcp]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        loop.spawn(echo_until_eof(std::move(p.server)));
        const auto data = pattern(1 << 20, 7);
        std::vector<char> back;
        auto writer = [&]() -> weft::task<void> {
            auto w = co_await p.client.write_all(data);
            REQUIRE(w);
            REQUIRE(*w == data.size());
            REQUIRE(p.client.shutdown());
        };
        auto [none, err] = co_await weft::when_all(writer(), read_to_eof(p.client, back));
        REQUIRE_FALSE(err);
        REQUIRE(back.size() == data.size());
        REQUIRE(back == data);
    }());
}

TEMPLATE_TEST_CASE("500 concurrent clients are served", "[tcp]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    constexpr int clients = 500;
    auto listener = weft::tcp_listener<TestType>::bind(loop, weft::endpoint::loopback_v4(0)).value();
    auto ep = listener.local_endpoint().value();
    // Counted, not REQUIREd, inside the tasks: on backend::blocking they run in parallel
    // threads, and Catch2 2's assertions are not thread-safe.
    std::atomic<int> accepted{0}, ok{0};
    loop.spawn([](weft::loop<TestType>& l, weft::tcp_listener<TestType>& lst,
                  std::atomic<int>& accepted) -> weft::task<void> {
        for (int i = 0; i < clients; ++i) {
            auto s = co_await lst.accept();
            if (!s) co_return;
            ++accepted;
            l.spawn(echo_until_eof(std::move(*s)));
        }
    }(loop, listener, accepted));
    for (int id = 0; id < clients; ++id) {
        loop.spawn([](weft::loop<TestType>& l, weft::endpoint ep, int id, std::atomic<int>& ok) -> weft::task<void> {
            auto c = co_await weft::tcp_stream<TestType>::connect(l, ep);
            if (!c) co_return;
            const auto msg = pattern(1000 + static_cast<std::size_t>(id), static_cast<std::uint64_t>(id));
            if (!co_await c->write_all(msg) || !c->shutdown()) co_return;
            std::vector<char> back;
            auto err = co_await read_to_eof(*c, back);
            if (!err && back == msg) ++ok;
        }(loop, ep, id, ok));
    }
    run_until_idle(loop);
    REQUIRE(accepted == clients);
    REQUIRE(ok == clients);
}

TEMPLATE_TEST_CASE("partial writes with a small SO_SNDBUF lose nothing", "[tcp]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    WEFT_NOT_ON_BLOCKING(TestType, "a blocking send() returns only once everything is queued, so write_some never "
                                   "reports the short count this test starts from (it would wait for a reader)");
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        const int small = 4096;
        REQUIRE(::setsockopt(p.server.native_handle(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
        const auto data = pattern(2 << 20, 3);
        // write_some reports how much the kernel took: with a tiny buffer, less than asked.
        auto first = co_await p.server.write_some(data);
        REQUIRE(first);
        REQUIRE(*first > 0);
        REQUIRE(*first < data.size());
        auto slow_reader = [&]() -> weft::task<std::vector<char>> {
            std::vector<char> got;
            std::array<char, 3000> buf;
            while (got.size() < data.size()) {
                auto n = co_await p.client.read_some(buf);
                REQUIRE(n);
                REQUIRE(*n > 0);
                got.insert(got.end(), buf.begin(), buf.begin() + static_cast<long>(*n));
                if (got.size() % 7 == 0) (void)co_await weft::sleep_for(0ms);  // a slow, uneven consumer
            }
            co_return got;
        };
        auto rest = std::span(data).subspan(*first);
        auto [w, got] = co_await weft::when_all(p.server.write_all(rest), slow_reader());
        REQUIRE(w);
        REQUIRE(*w == rest.size());
        REQUIRE(got == data);
    }());
}

TEMPLATE_TEST_CASE("half-close: the peer shuts its write side and we still send", "[tcp]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        CO_REQUIRE(co_await p.client.write_all(std::string_view("question")));
        REQUIRE(p.client.shutdown());  // FIN: client will send no more
        std::vector<char> q;
        CO_REQUIRE_FALSE(co_await read_to_eof(p.server, q));
        REQUIRE(std::string(q.begin(), q.end()) == "question");
        // The server saw EOF, yet its write side is open: answer, then close.
        const auto answer = pattern(256 * 1024, 9);
        CO_REQUIRE(co_await p.server.write_all(answer));
        REQUIRE(p.server.close());
        std::vector<char> a;
        CO_REQUIRE_FALSE(co_await read_to_eof(p.client, a));
        REQUIRE(a == answer);
        // Reading after EOF reports EOF again rather than hanging.
        char extra[8];
        auto again = co_await p.client.read_some(extra);
        REQUIRE(again);
        REQUIRE(*again == 0);
    }());
}

TEMPLATE_TEST_CASE("a peer reset mid-read gives ECONNRESET", "[tcp]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        auto reader = [&]() -> weft::task<weft::result<std::size_t>> {
            char buf[64];
            co_return co_await p.server.read_some(buf);  // parks: nothing sent yet
        };
        auto resetter = [&]() -> weft::task<void> {
            (void)co_await weft::sleep_for(10ms);
            set_linger_reset(p.client.native_handle());
            REQUIRE(p.client.close());  // abortive close: RST instead of FIN
        };
        auto [r, none] = co_await weft::when_all(reader(), resetter());
        REQUIRE_FALSE(r);
        REQUIRE(r.error() == std::errc::connection_reset);
        // Writing to the reset connection is an error value, never SIGPIPE.
        auto w = co_await p.server.write_all(pattern(1 << 20));
        REQUIRE_FALSE(w);
        REQUIRE((w.error() == std::errc::broken_pipe || w.error() == std::errc::connection_reset));
    }());
}

TEMPLATE_TEST_CASE("connect to a closed port is refused", "[tcp]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    weft::endpoint ep;
    {
        auto l = weft::tcp_listener<TestType>::bind(loop, weft::endpoint::loopback_v4(0)).value();
        ep = l.local_endpoint().value();
    }  // closed again: nobody listens on ep now
    auto r = run_bounded(loop, weft::tcp_stream<TestType>::connect(loop, ep));
    REQUIRE_FALSE(r);
    REQUIRE(r.error() == std::errc::connection_refused);
    auto v6 = run_bounded(loop, weft::tcp_stream<TestType>::connect(loop, weft::endpoint::loopback_v6(ep.port())));
    REQUIRE_FALSE(v6);
}

TEMPLATE_TEST_CASE("IPv6 loopback works end to end", "[tcp]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    auto l = weft::tcp_listener<TestType>::bind(loop, weft::endpoint::loopback_v6(0));
    if (!l) {
        WARN("no IPv6 loopback here: " << l.error().message());
        return;
    }
    auto ep = l->local_endpoint().value();
    REQUIRE(ep.is_v6());
    run_bounded(loop, [&]() -> weft::task<void> {
        auto [c, s] = co_await weft::when_all(weft::tcp_stream<TestType>::connect(loop, ep), l->accept());
        REQUIRE(c);
        REQUIRE(s);
        REQUIRE(s->remote_endpoint().value() == c->local_endpoint().value());
        REQUIRE(c->set_nodelay());
        CO_REQUIRE(co_await c->write_all(std::string_view("v6")));
        char buf[2];
        CO_REQUIRE(co_await s->read_exact(buf));
    }());
}

TEMPLATE_TEST_CASE("a silent peer times out", "[tcp][cancel]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        char buf[16];
        auto start = tclock::now();
        auto r = co_await weft::with_timeout(p.server.read_some(buf), 50ms);
        REQUIRE_FALSE(r);
        REQUIRE(r.error() == std::errc::timed_out);
        REQUIRE(tclock::now() - start >= 50ms);
        // The socket is still usable: the timed-out read is gone, a new one works.
        CO_REQUIRE(co_await p.client.write_all(std::string_view("late")));
        auto n = co_await weft::with_timeout(p.server.read_exact(std::span(buf, 4)), 5s);
        REQUIRE(n);
        REQUIRE(std::string_view(buf, 4) == "late");
    }());
}

TEMPLATE_TEST_CASE("cancel a pending read, then reuse the socket", "[tcp][cancel]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        std::stop_source src;
        std::array<char, 32> buf{};
        int completions = 0;
        auto reader = [&]() -> weft::task<weft::result<std::size_t>> {
            auto r = co_await weft::with_stop_token(p.server.read_some(buf), src.get_token());
            ++completions;
            co_return r;
        };
        auto canceller = [&]() -> weft::task<void> {
            (void)co_await weft::sleep_for(5ms);
            src.request_stop();
        };
        auto [r, none] = co_await weft::when_all(reader(), canceller());
        REQUIRE(r.error() == std::errc::operation_canceled);
        REQUIRE(completions == 1);
        // Data sent after the cancel goes to the next read, whole.
        CO_REQUIRE(co_await p.client.write_all(std::string_view("after")));
        auto n = co_await p.server.read_exact(std::span(buf.data(), 5));
        REQUIRE(n);
        REQUIRE(std::string_view(buf.data(), 5) == "after");
    }());
}

TEMPLATE_TEST_CASE("closing a socket completes its pending operations once", "[tcp][cancel]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        int completions = 0;
        auto reader = [&]() -> weft::task<weft::result<std::size_t>> {
            char buf[8];
            auto r = co_await p.server.read_some(buf);
            ++completions;
            co_return r;
        };
        auto closer = [&]() -> weft::task<void> {
            (void)co_await weft::sleep_for(5ms);
            REQUIRE(p.server.close());
        };
        auto [r, none] = co_await weft::when_all(reader(), closer());
        REQUIRE(r.error() == std::errc::operation_canceled);
        REQUIRE(completions == 1);
        // The peer sees the close as EOF.
        char buf[8];
        auto eof = co_await p.client.read_some(buf);
        REQUIRE(eof);
        REQUIRE(*eof == 0);
    }());
}

TEMPLATE_TEST_CASE("a second concurrent read on one socket is refused with EBUSY", "[tcp]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        char a[4], b[4];
        auto r = co_await weft::when_all(weft::with_timeout(p.server.read_some(a), 20ms),
                                         weft::with_timeout(p.server.read_some(b), 20ms));
        // One read waits (and times out), the other is refused. Which is which is fixed on
        // the single-threaded backends (the first started parks first); on blocking the
        // two children are threads and either may reach the socket first.
        const auto e0 = std::get<0>(r).error(), e1 = std::get<1>(r).error();
        const bool one_each = (e0 == std::errc::timed_out && e1 == std::errc::device_or_resource_busy) ||
                              (e1 == std::errc::timed_out && e0 == std::errc::device_or_resource_busy);
        REQUIRE(one_each);
        if constexpr (TestType::kind != weft::backend_kind::blocking) REQUIRE(e0 == std::errc::timed_out);
    }());
}

TEMPLATE_TEST_CASE("a firehose connection cannot starve timers or other sockets", "[tcp][fairness]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    auto p = run_bounded(loop, make_pair(loop));
    // A thread keeps the server's receive queue full, so every read completes at once
    // and never sees EAGAIN: only the cooperative budget makes the reader yield.
    constexpr std::size_t total = 64u << 20;
    const int fd = p.client.native_handle();
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    std::thread firehose([fd] {
        const auto chunk = pattern(1 << 16);
        std::size_t sent = 0;
        while (sent < total) {
            ssize_t n = ::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL);
            if (n <= 0) break;
            sent += static_cast<std::size_t>(n);
        }
    });
    std::this_thread::sleep_for(50ms);  // let the queue fill before the loop reads
    std::atomic<int> ticks_while_reading{0};  // blocking: reader and ticker are threads
    std::atomic<bool> reader_done{false};
    auto reader = [&]() -> weft::task<void> {
        std::array<char, 64> small;  // tiny reads: thousands of synchronous completions
        std::size_t got = 0;
        while (got < total) {
            auto n = co_await p.server.read_some(small);
            REQUIRE(n);
            REQUIRE(*n > 0);
            got += *n;
            if (ticks_while_reading >= 5) break;  // fairness shown; stop early
        }
        reader_done = true;
    };
    auto ticker = [&]() -> weft::task<void> {
        for (int i = 0; i < 5; ++i) {
            (void)co_await weft::sleep_for(1ms);
            if (!reader_done) ++ticks_while_reading;
        }
    };
    run_bounded(loop, weft::when_all(reader(), ticker()), 60000ms);
    REQUIRE(ticks_while_reading == 5);
    ::shutdown(fd, SHUT_RDWR);
    firehose.join();
}

TEMPLATE_TEST_CASE("accept survives fd exhaustion (EMFILE) without spinning", "[tcp][emfile]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    auto listener = weft::tcp_listener<TestType>::bind(loop, weft::endpoint::loopback_v4(0)).value();
    auto ep = listener.local_endpoint().value();
    rlimit old{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &old) == 0);
    run_bounded(loop, [&]() -> weft::task<void> {
        auto victim = co_await weft::tcp_stream<TestType>::connect(loop, ep);  // queued, not yet accepted
        REQUIRE(victim);
        // Use up every fd below a low limit.
        rlimit low = old;
        low.rlim_cur = 128;
        REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
        std::vector<int> hog;
        for (int fd; (fd = ::dup(0)) >= 0;) hog.push_back(fd);
        REQUIRE(errno == EMFILE);
        auto r = co_await listener.accept();
        REQUIRE_FALSE(r);
        REQUIRE(r.error() == std::errc::too_many_files_open);
        // The pending connection was accepted and closed: the client sees EOF or a reset.
        char buf[4];
        auto eof = co_await weft::with_timeout(victim->read_some(buf), 5s);
        REQUIRE((eof ? *eof == 0 : eof.error() == std::errc::connection_reset));
        // Nothing else is pending: accept waits instead of spinning on EMFILE.
        auto idle = co_await weft::with_timeout(listener.accept(), 20ms);
        REQUIRE(idle.error() == std::errc::timed_out);
        for (int fd : hog) ::close(fd);
        REQUIRE(::setrlimit(RLIMIT_NOFILE, &old) == 0);
        // With fds back, connections are accepted again.
        auto [c, s] = co_await weft::when_all(weft::tcp_stream<TestType>::connect(loop, ep), listener.accept());
        REQUIRE(c);
        REQUIRE(s);
    }());
}

TEMPLATE_TEST_CASE("SO_REUSEPORT shares a port; without it the port is in use", "[tcp]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    weft::listen_options shared{.reuse_port = true};
    auto a = weft::tcp_listener<TestType>::bind(loop, weft::endpoint::loopback_v4(0), shared);
    REQUIRE(a);
    auto port = a->local_endpoint().value().port();
    REQUIRE(port != 0);
    auto b = weft::tcp_listener<TestType>::bind(loop, weft::endpoint::loopback_v4(port), shared);
    REQUIRE(b);
    auto c = weft::tcp_listener<TestType>::bind(loop, weft::endpoint::loopback_v4(port));
    REQUIRE_FALSE(c);
    REQUIRE(c.error() == std::errc::address_in_use);
}

TEMPLATE_TEST_CASE("1,000 connections arriving in a burst are all accepted", "[tcp][accept]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    constexpr int clients = 1000;
    auto listener = weft::tcp_listener<TestType>::bind(loop, weft::endpoint::loopback_v4(0), {.backlog = 4096}).value();
    const auto port = listener.local_endpoint().value().port();
    std::vector<int> seen(clients, 0);
    run_bounded(
        loop,
        [&]() -> weft::task<void> {
            // The first accept starts waiting (on io_uring: arms the multishot accept) ...
            auto first = [&]() -> weft::task<weft::result<weft::tcp_stream<TestType>>> {
                co_return co_await listener.accept();
            };
            // ... then every client connects at once from another thread and sends its id,
            // while the loop is busy elsewhere: connections pile up unclaimed.
            std::thread burst([port] {
                std::vector<int> fds;
                for (int i = 0; i < clients; ++i) {
                    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                    sockaddr_in a{};
                    a.sin_family = AF_INET;
                    a.sin_port = htons(port);
                    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) break;
                    std::uint16_t id = static_cast<std::uint16_t>(i);
                    if (::send(fd, &id, sizeof id, MSG_NOSIGNAL) != sizeof id) break;
                    fds.push_back(fd);
                }
                std::this_thread::sleep_for(std::chrono::seconds(2));  // keep them open until read
                for (int fd : fds) ::close(fd);
            });
            auto take = [&](weft::tcp_stream<TestType> s) -> weft::task<void> {
                std::uint16_t id = 0;
                auto r = co_await s.read_exact(std::span(reinterpret_cast<char*>(&id), sizeof id));
                if (r && id < clients) ++seen[id];
            };
            auto s0 = co_await first();
            if (!s0) FAIL("accept: " << s0.error().message());
            co_await take(std::move(*s0));
            (void)co_await weft::sleep_for(200ms);  // nobody accepts while most of the burst lands
            for (int i = 1; i < clients; ++i) {
                auto s = co_await listener.accept();
                if (!s) FAIL("accept " << i << ": " << s.error().message());
                co_await take(std::move(*s));
            }
            burst.join();
        }(),
        60000ms);
    REQUIRE(std::count(seen.begin(), seen.end(), 1) == clients);
}

TEMPLATE_TEST_CASE("vectored writes and reads keep every byte in order", "[tcp][vectored]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        const int small = 4096;
        REQUIRE(::setsockopt(p.client.native_handle(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
        // A header, a 1 MiB body and 2,048 one-byte entries (more than IOV_MAX).
        std::string header = "HEADER";
        auto body = pattern(1 << 20, 21);
        std::string tail(2048, 'x');
        for (std::size_t i = 0; i < tail.size(); ++i) tail[i] = static_cast<char>('a' + i % 26);
        std::vector<iovec> iov{{header.data(), header.size()}, {body.data(), body.size()}};
        for (char& c : tail) iov.push_back({&c, 1});
        const std::size_t total = header.size() + body.size() + tail.size();
        auto writer = [&]() -> weft::task<void> {
            auto w = co_await p.client.write_all(std::span(iov));
            REQUIRE(w);
            REQUIRE(*w == total);
            REQUIRE(p.client.shutdown());
        };
        auto reader = [&]() -> weft::task<std::string> {
            std::string got;
            std::array<char, 7> a;
            std::array<char, 4093> b;
            for (;;) {
                iovec parts[2] = {{a.data(), a.size()}, {b.data(), b.size()}};
                auto n = co_await p.server.read_some(std::span(parts));
                REQUIRE(n);
                if (*n == 0) break;
                std::size_t first = std::min(*n, a.size());
                got.append(a.data(), first);
                got.append(b.data(), *n - first);
            }
            co_return got;
        };
        auto [none, got] = co_await weft::when_all(writer(), reader());
        REQUIRE(got.size() == total);
        REQUIRE(got == header + std::string(body.begin(), body.end()) + tail);
    }());
}

// Found by the operation fuzzer: on the reactors, wait_readable()/wait_writable() on a
// closed stream polled fd -1 (poll ignores it: "not ready") and parking it failed with
// ENOMEM instead of EBADF.
TEMPLATE_TEST_CASE("an operation started after close() fails with EBADF", "[tcp]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    auto p = run_bounded(loop, make_pair(loop));
    REQUIRE(p.client.close());
    run_bounded(loop, [&]() -> weft::task<void> {
        auto w = co_await weft::with_timeout(p.client.wait_writable(), 1s);
        REQUIRE(w.error() == std::errc::bad_file_descriptor);
        auto r = co_await weft::with_timeout(p.client.wait_readable(), 1s);
        REQUIRE(r.error() == std::errc::bad_file_descriptor);
        char b[4];
        auto n = co_await weft::with_timeout(p.client.read_some(b), 1s);
        REQUIRE(n.error() == std::errc::bad_file_descriptor);
        auto l = co_await weft::with_timeout(p.client.receive(), 1s);
        REQUIRE(l.error() == std::errc::bad_file_descriptor);
    }());
}

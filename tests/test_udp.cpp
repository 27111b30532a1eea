// UDP on every backend: datagram boundaries and sizes, truncation, connected sockets and
// ICMP errors, batched receives, a paced flood counted exactly while timers fire, and the
// lifetime rules (cancel, close, fd reuse) the stream sockets follow. Also the TCP socket
// options (keep-alive, linger and reset, buffer sizes).
#include "helpers.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>
#include <vector>

using namespace weft_test;

namespace {
template <class B>
weft::udp_socket<B> bound(weft::loop<B>& loop) {
    auto s = weft::udp_socket<B>::bind(loop, weft::endpoint::loopback_v4(0));
    REQUIRE(s);
    return std::move(*s);
}

/// CPU time this process used, in milliseconds (user + system).
double cpu_ms() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}
}  // namespace

TEMPLATE_TEST_CASE("udp: datagrams keep their boundaries and their sender", "[udp]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto a = bound(loop);
        auto b = bound(loop);
        auto b_ep = b.local_endpoint().value();
        auto a_ep = a.local_endpoint().value();
        for (std::string_view m : {"one", "two!", "three"}) {
            auto n = co_await a.send_to(m, b_ep);
            REQUIRE(n);
            REQUIRE(*n == m.size());
        }
        std::array<char, 64> buf{};
        for (std::string_view m : {"one", "two!", "three"}) {
            auto d = co_await b.receive_from(buf);
            REQUIRE(d);
            REQUIRE(d->size == m.size());
            REQUIRE(std::string_view(buf.data(), d->size) == m);
            REQUIRE(d->from == a_ep);
        }
        // A 0-byte datagram is a datagram (size 0, with its sender), not EOF.
        auto z = co_await a.send_to(std::string_view(), b_ep);
        REQUIRE(z);
        REQUIRE(*z == 0);
        auto d = co_await b.receive_from(buf);
        REQUIRE(d);
        REQUIRE(d->size == 0);
        REQUIRE(d->from == a_ep);
        // ... also into an empty buffer, which fits it exactly.
        CO_REQUIRE(co_await a.send_to(std::string_view(), b_ep));
        std::span<char> none;
        auto e = co_await b.receive_from(none);
        REQUIRE(e);
        REQUIRE(e->size == 0);
    }());
}

TEMPLATE_TEST_CASE(
    "udp: size edges: 65,507 bytes pass, 65,508 fail with EMSGSIZE, a short buffer is reported truncated", "[udp]",
    WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto a = bound(loop);
        auto b = bound(loop);
        REQUIRE(b.set_receive_buffer_size(1 << 20));
        auto to = b.local_endpoint().value();
        auto big = pattern(65507, 7);
        auto n = co_await a.send_to(big, to);
        REQUIRE(n);
        REQUIRE(*n == 65507);
        std::vector<char> in(70000);
        auto d = co_await b.receive_from(in);
        REQUIRE(d);
        REQUIRE(d->size == 65507);
        REQUIRE(std::equal(big.begin(), big.end(), in.begin()));

        auto too_big = pattern(65508, 8);
        auto t = co_await a.send_to(too_big, to);
        REQUIRE_FALSE(t);
        REQUIRE(t.error() == std::errc::message_size);

        // Larger than the buffer: an error, with the first bytes delivered, and the next
        // datagram is whole.
        CO_REQUIRE(co_await a.send_to(std::string_view("0123456789"), to));
        CO_REQUIRE(co_await a.send_to(std::string_view("ok"), to));
        std::array<char, 4> small{};
        auto tr = co_await b.receive_from(small);
        REQUIRE_FALSE(tr);
        REQUIRE(tr.error() == weft::errc::datagram_truncated);
        REQUIRE(std::string_view(small.data(), 4) == "0123");
        auto next = co_await b.receive_from(small);
        REQUIRE(next);
        REQUIRE(std::string_view(small.data(), next->size) == "ok");
    }());
}

TEMPLATE_TEST_CASE("udp: a connected socket to a closed port gets ECONNREFUSED once, without a busy loop", "[udp]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    weft::endpoint closed;
    {
        auto gone = bound(loop);
        closed = gone.local_endpoint().value();
    }
    run_bounded(loop, [&]() -> weft::task<void> {
        auto s = weft::udp_socket<TestType>::open(loop).value();
        REQUIRE(s.connect(closed));
        REQUIRE(s.remote_endpoint().value() == closed);
        CO_REQUIRE(co_await s.send(std::string_view("anyone?")));
        // The ICMP port-unreachable is pending on the socket now. An idle loop must not
        // spin on it (the error is reported once, to the next operation that reads it).
        if constexpr (TestType::name != "spin") {  // spin polls by design
            double before = cpu_ms();
            CO_REQUIRE(co_await weft::sleep_for(300ms));
            REQUIRE(cpu_ms() - before < 150);
        }
        std::array<char, 16> buf{};
        auto r = co_await s.receive(buf);
        REQUIRE_FALSE(r);
        REQUIRE(r.error() == std::errc::connection_refused);
        // Reported once: the socket is usable again (and the next receive just waits).
        auto again = co_await weft::with_timeout(s.receive(buf), 50ms);
        REQUIRE_FALSE(again);
        REQUIRE(again.error() == std::errc::timed_out);
    }());
}

TEMPLATE_TEST_CASE("udp: send and receive on connected sockets, bound by name", "[udp]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto a = weft::udp_socket<TestType>::bind(loop, "127.0.0.1:0");
        REQUIRE(a);
        auto b = weft::udp_socket<TestType>::bind(loop, "localhost:0");
        REQUIRE(b);
        REQUIRE(a->connect(b->local_endpoint().value()));
        REQUIRE(b->connect(a->local_endpoint().value()));
        CO_REQUIRE(co_await a->send(std::string_view("ping")));
        std::array<char, 8> buf{};
        auto n = co_await b->receive(buf);
        REQUIRE(n);
        REQUIRE(std::string_view(buf.data(), *n) == "ping");
        CO_REQUIRE(co_await b->send(std::string_view("pong")));
        n = co_await a->receive(buf);
        REQUIRE(n);
        REQUIRE(std::string_view(buf.data(), *n) == "pong");
        auto bad = weft::udp_socket<TestType>::bind(loop, "127.0.0.1");
        REQUIRE_FALSE(bad);
        REQUIRE(bad.error() == weft::errc::endpoint_missing_port);
    }());
}

TEMPLATE_TEST_CASE("udp: a batched receive takes every queued datagram, in order, and flags truncation", "[udp]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto a = bound(loop);
        auto b = bound(loop);
        auto to = b.local_endpoint().value();
        for (int i = 0; i < 20; ++i) {
            std::string m = i == 5 ? std::string(40, 'x') : "d" + std::to_string(i);
            CO_REQUIRE(co_await a.send_to(m, to));
        }
        std::array<std::array<char, 16>, 8> bufs{};
        std::array<weft::datagram_slot, 8> slots{};
        for (std::size_t i = 0; i < slots.size(); ++i) slots[i].buffer = std::as_writable_bytes(std::span(bufs[i]));
        int next = 0;
        while (next < 20) {
            auto n = co_await b.receive_batch(slots);
            REQUIRE(n);
            REQUIRE(*n >= 1);
            REQUIRE(*n <= slots.size());
            for (std::size_t i = 0; i < *n; ++i, ++next) {
                REQUIRE(slots[i].from == a.local_endpoint().value());
                if (next == 5) {
                    REQUIRE(slots[i].truncated);
                    REQUIRE(slots[i].size == 16);
                } else {
                    REQUIRE_FALSE(slots[i].truncated);
                    REQUIRE(std::string_view(bufs[i].data(), slots[i].size) == "d" + std::to_string(next));
                }
            }
        }
        REQUIRE(next == 20);
        auto empty = co_await b.receive_batch({});
        REQUIRE_FALSE(empty);
        REQUIRE(empty.error() == std::errc::invalid_argument);
    }());
}

TEMPLATE_TEST_CASE("udp: a flood of 10 x 10,000 datagrams arrives exactly while timers keep firing", "[udp]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    constexpr int senders = 10, per_sender = 10'000, window = 64;
    weft::loop<TestType> loop;
    auto rx = bound(loop);
    REQUIRE(rx.set_receive_buffer_size(1 << 20));
    auto to = rx.local_endpoint().value();
    std::atomic<long> sent{0}, received{0}, ticks{0};
    std::atomic<bool> done{false};
    std::vector<int> next_seq(senders, 0);
    bool in_order = true;
    auto sender = [&](int id) -> weft::task<void> {
        auto s = weft::udp_socket<TestType>::open(loop).value();
        for (int i = 0; i < per_sender; ++i) {
            // Paced: at most `window` datagrams in flight in all, so the kernel's
            // receive buffer never overflows and every datagram must arrive.
            while (sent.load() - received.load() >= window)
                (void)co_await weft::sleep_for(std::chrono::microseconds(200));
            std::array<char, 2 * sizeof(int)> msg{};
            std::memcpy(msg.data(), &id, sizeof id);
            std::memcpy(msg.data() + sizeof id, &i, sizeof i);
            auto n = co_await s.send_to(msg, to);
            if (!n) FAIL("send_to: " << n.error().message());
            sent.fetch_add(1);
        }
    };
    auto receiver = [&]() -> weft::task<void> {
        std::array<std::array<char, 2 * sizeof(int)>, 16> bufs{};
        std::array<weft::datagram_slot, 16> slots{};
        for (std::size_t i = 0; i < slots.size(); ++i) slots[i].buffer = std::as_writable_bytes(std::span(bufs[i]));
        while (received.load() < long(senders) * per_sender) {
            auto n = co_await rx.receive_batch(slots);
            if (!n) FAIL("receive_batch: " << n.error().message());
            for (std::size_t i = 0; i < *n; ++i) {
                if (slots[i].size != sizeof(int) * 2 || slots[i].truncated) in_order = false;
                int id = -1, seq = -1;
                std::memcpy(&id, bufs[i].data(), sizeof id);
                std::memcpy(&seq, bufs[i].data() + sizeof id, sizeof seq);
                if (id < 0 || id >= senders || next_seq[std::size_t(id)] != seq)
                    in_order = false;
                else
                    ++next_seq[std::size_t(id)];
            }
            received.fetch_add(long(*n));
        }
        done = true;
    };
    auto ticker = [&]() -> weft::task<void> {
        while (!done.load()) {
            (void)co_await weft::sleep_for(1ms);
            ticks.fetch_add(1);
        }
    };
    run_bounded(
        loop,
        [&]() -> weft::task<void> {
            loop.spawn(ticker());
            for (int i = 0; i < senders; ++i) loop.spawn(sender(i));
            co_await receiver();
        }(),
        50000ms);
    run_until_idle(loop);
    REQUIRE(received.load() == long(senders) * per_sender);
    REQUIRE(in_order);
    REQUIRE(ticks.load() >= 10);  // the 1 ms ticker kept running through the flood
}

TEMPLATE_TEST_CASE(
    "udp: a receive cancelled or closed completes once and never takes a datagram of the fd's next owner",
    "[udp][lifetime]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto tx = weft::udp_socket<TestType>::open(loop).value();
        // Cancelled by a timeout: timed_out, and the socket still receives afterwards.
        auto a = bound(loop);
        std::array<char, 16> buf{};
        auto t = co_await weft::with_timeout(a.receive_from(buf), 30ms);
        REQUIRE_FALSE(t);
        REQUIRE(t.error() == std::errc::timed_out);
        CO_REQUIRE(co_await tx.send_to(std::string_view("later"), a.local_endpoint().value()));
        auto l = co_await a.receive_from(buf);
        REQUIRE(l);
        REQUIRE(std::string_view(buf.data(), l->size) == "later");

        // Closed while a receive waits; a new socket takes the same fd number at once.
        int old_fd = a.native_handle();
        std::array<char, 16> old_buf{};
        weft::udp_socket<TestType> b;
        auto waiter = [&]() -> weft::task<weft::result<weft::datagram>> { co_return co_await a.receive_from(old_buf); };
        auto closer = [&]() -> weft::task<void> {
            (void)co_await weft::sleep_for(20ms);
            REQUIRE(a.close());
            b = bound(loop);  // lowest free number: the one just closed
        };
        auto [r, none] = co_await weft::when_all(waiter(), closer());
        REQUIRE_FALSE(r);
        REQUIRE(r.error() == std::errc::operation_canceled);
        REQUIRE(b.native_handle() == old_fd);
        CO_REQUIRE(co_await tx.send_to(std::string_view("new owner"), b.local_endpoint().value()));
        auto got = co_await b.receive_from(buf);
        REQUIRE(got);
        REQUIRE(std::string_view(buf.data(), got->size) == "new owner");
        REQUIRE(old_buf == std::array<char, 16>{});  // the old receive wrote nothing
    }());
}

TEMPLATE_TEST_CASE("tcp socket options: keep-alive, buffer sizes, linger, and reset() sends RST", "[tcp][options]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        int fd = p.client.native_handle();
        REQUIRE(p.client.set_keepalive(true, std::chrono::seconds(30), std::chrono::seconds(5), 4));
        int v = 0;
        socklen_t len = sizeof v;
        REQUIRE(getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &v, &len) == 0);
        REQUIRE(v == 1);
        REQUIRE(getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, &len) == 0);
        REQUIRE(v == 30);
        REQUIRE(getsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &v, &len) == 0);
        REQUIRE(v == 5);
        REQUIRE(getsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &v, &len) == 0);
        REQUIRE(v == 4);
        REQUIRE(p.client.set_keepalive(false));
        REQUIRE(getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &v, &len) == 0);
        REQUIRE(v == 0);

        REQUIRE(p.client.set_send_buffer_size(64 * 1024));
        REQUIRE(p.client.set_receive_buffer_size(64 * 1024));
        REQUIRE(p.client.send_buffer_size().value() >= 64 * 1024);  // the kernel doubles it
        REQUIRE(p.client.receive_buffer_size().value() >= 64 * 1024);

        REQUIRE(p.client.set_linger(std::chrono::seconds(3)));
        linger l{};
        len = sizeof l;
        REQUIRE(getsockopt(fd, SOL_SOCKET, SO_LINGER, &l, &len) == 0);
        REQUIRE(l.l_onoff == 1);
        REQUIRE(l.l_linger == 3);
        REQUIRE(p.client.set_linger(std::nullopt));

        // reset(): the peer's next read fails with ECONNRESET instead of seeing EOF.
        REQUIRE(p.client.reset());
        REQUIRE_FALSE(p.client.is_open());
        std::array<char, 8> buf{};
        auto r = co_await p.server.read_some(buf);
        REQUIRE_FALSE(r);
        REQUIRE(r.error() == std::errc::connection_reset);
    }());
}

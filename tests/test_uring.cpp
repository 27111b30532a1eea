// io_uring-specific behaviour: a full submission queue, ring setup failures, features.
#include <optional>
#include <thread>

#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.hpp"
#include "receive_scenarios.hpp"

#if WEFT_HAS_URING

using namespace weft_test;
using uring = weft::backend::uring;

TEST_CASE("uring: 1,000 concurrent operations through a queue depth of 8", "[uring]") {
    WEFT_REQUIRE_BACKEND(uring);
    weft::loop<uring> loop(uring::options{.queue_depth = 8});
    REQUIRE(loop.backend().features().sq_entries == 8);
    constexpr int pairs = 500;  // a pending read on each end: 1,000 operations in flight
    int done = 0;
    run_bounded(loop, [&]() -> weft::task<void> {
        std::vector<tcp_pair<uring>> conns;
        for (int i = 0; i < pairs; ++i) conns.push_back(co_await make_pair(loop));
        for (auto& c : conns) {
            for (auto* s : {&c.client, &c.server}) {
                loop.spawn([](weft::tcp_stream<uring>& s, int& done) -> weft::task<void> {
                    char b[1];
                    auto r = co_await s.read_some(b);
                    if (r && *r == 1) ++done;
                }(*s, done));
            }
        }
        (void)co_await weft::sleep_for(10ms);  // every read is submitted and waiting now
        for (auto& c : conns) {
            CO_REQUIRE(co_await c.client.write_all(std::string_view("x")));
            CO_REQUIRE(co_await c.server.write_all(std::string_view("y")));
        }
        while (done < 2 * pairs) (void)co_await weft::sleep_for(1ms);
    }());
    REQUIRE(done == 2 * pairs);
}

TEST_CASE("uring: a ring that cannot be created is a clear error, not a crash", "[uring]") {
    WEFT_REQUIRE_BACKEND(uring);
    try {
        weft::loop<uring> loop(uring::options{.queue_depth = 1u << 20});  // above the kernel's maximum
        FAIL("an absurd queue depth was accepted");
    } catch (const std::system_error& e) {
        std::string what = e.what();
        INFO(what);
        REQUIRE(what.find("queue depth") != std::string::npos);
        REQUIRE(what.find("epoll_et") != std::string::npos);  // it suggests a backend that works
    }
}

TEST_CASE("uring: features are probed and can be switched off", "[uring]") {
    WEFT_REQUIRE_BACKEND(uring);
    weft::loop<uring> fast;
    auto f = fast.backend().features();
    REQUIRE(f.nodrop);
    WARN("uring features: defer_taskrun="
         << f.defer_taskrun << " coop_taskrun=" << f.coop_taskrun << " registered_ring_fd=" << f.registered_ring_fd
         << " sq=" << f.sq_entries << " cq=" << f.cq_entries << " multishot_accept=" << f.multishot_accept
         << " multishot_recv=" << f.multishot_recv << " fixed_file_slots=" << f.fixed_file_slots);
    weft::loop<uring> plain(uring::options{.defer_taskrun = false,
                                           .coop_taskrun = false,
                                           .register_ring_fd = false,
                                           .multishot_accept = false,
                                           .multishot_recv = false,
                                           .fixed_files = false});
    auto g = plain.backend().features();
    REQUIRE_FALSE(g.defer_taskrun);
    REQUIRE_FALSE(g.coop_taskrun);
    REQUIRE_FALSE(g.registered_ring_fd);
    REQUIRE_FALSE(g.multishot_accept);
    REQUIRE_FALSE(g.multishot_recv);
    REQUIRE(g.fixed_file_slots == 0);
    REQUIRE(f.fixed_file_slots == 0);      // off by default (it did not pay: see uring::options)
    REQUIRE_FALSE(f.incremental_buffers);  // known once the buffer ring exists (first receive())
    weft::loop<uring> fixed(uring::options{.fixed_files = true});
    WARN("registered file table: " << fixed.backend().features().fixed_file_slots << " slots");
    // Both still work.
    auto ok = plain.run([]() -> weft::task<bool> {
        auto r = co_await weft::sleep_for(1ms);
        co_return static_cast<bool>(r);
    }());
    REQUIRE(ok);
}

// The registered file table holds a reference to each socket in it: a close that left
// the slot filled would keep the connection open (no FIN) and the old socket reachable
// through the slot. Each check below failed before detach emptied the slot.
TEST_CASE("uring: sockets in the registered file table close at once, and a reused number is the new socket",
          "[uring][lifetime]") {
    WEFT_REQUIRE_BACKEND(uring);
    for (bool multishot : {true, false}) {
        INFO("multishot " << multishot);
        weft::loop<uring> loop(
            uring::options{.multishot_accept = multishot, .multishot_recv = multishot, .fixed_files = true});
        if (loop.backend().features().fixed_file_slots == 0) {
            WARN("no registered file table on this kernel");
            return;
        }
        run_bounded(loop, [&]() -> weft::task<void> {
            auto a = co_await make_pair(loop);
            REQUIRE(loop.backend().fixed_file(a.server.native_handle()));
            REQUIRE(loop.backend().fixed_file(a.client.native_handle()));
            // Traffic both ways, through read_some and receive().
            CO_REQUIRE(co_await a.client.write_all(std::string_view("ping")));
            char b[8];
            CO_REQUIRE(co_await a.server.read_exact(std::span(b, 4)));
            CO_REQUIRE(co_await a.server.write_all(std::string_view("pong")));
            auto lease = co_await a.client.receive();
            CO_REQUIRE(lease);
            REQUIRE(std::string_view(reinterpret_cast<const char*>(lease->bytes().data()), lease->size()) == "pong");
            // A read in flight, then close: the read ends cancelled, the peer sees the FIN
            // now (not when the slot is next reused), and the slot is empty.
            const int number = a.server.native_handle();
            auto reader = [](weft::tcp_stream<uring>& s) -> weft::task<int> {
                char c[1];
                auto r = co_await s.read_some(c);
                co_return r ? 1 : (r.error() == std::errc::operation_canceled ? 2 : 3);
            }(a.server);
            auto closer = [](weft::tcp_stream<uring>& s) -> weft::task<bool> {
                (void)co_await weft::sleep_for(5ms);
                co_return static_cast<bool>(s.close());
            }(a.server);
            auto [read, closed] = co_await weft::when_all(std::move(reader), std::move(closer));
            REQUIRE(closed);
            REQUIRE(read == 2);
            REQUIRE_FALSE(loop.backend().fixed_file(number));
            auto eof = co_await weft::with_timeout(a.client.read_some(std::span(b, 1)), 2s);
            CO_REQUIRE(eof);
            REQUIRE(*eof == 0);
            // The next socket takes the number and the slot; its bytes are its own.
            auto c = co_await make_pair(loop);
            const bool reused = c.server.native_handle() == number || c.client.native_handle() == number;
            REQUIRE(reused);
            REQUIRE(loop.backend().fixed_file(number));
            CO_REQUIRE(co_await c.client.write_all(std::string_view("abc")));
            CO_REQUIRE(co_await c.server.read_exact(std::span(b, 3)));
            REQUIRE(std::string_view(b, 3) == "abc");
        }());
    }
}

TEST_CASE("uring: a socket past the registered file table works through its fd", "[uring]") {
    WEFT_REQUIRE_BACKEND(uring);
    rlimit old{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &old) == 0);
    if (old.rlim_cur < 128) {
        WARN("needs an fd limit of at least 128");
        return;
    }
    std::optional<weft::loop<uring>> loop;
    {  // the table is sized by the soft limit when the ring is created
        rlimit low = old;
        low.rlim_cur = 64;
        REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
        loop.emplace(uring::options{.fixed_files = true});
        REQUIRE(::setrlimit(RLIMIT_NOFILE, &old) == 0);
    }
    if (loop->backend().features().fixed_file_slots == 0) {
        WARN("no registered file table on this kernel");
        return;
    }
    REQUIRE(loop->backend().features().fixed_file_slots == 64);
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    REQUIRE(::dup2(sv[0], 100) == 100);  // past the table
    ::close(sv[0]);
    auto s = weft::unix_stream<uring>::adopt(loop->backend(), 100).value();
    REQUIRE_FALSE(loop->backend().fixed_file(100));
    REQUIRE(::write(sv[1], "hi", 2) == 2);
    run_bounded(*loop, [&]() -> weft::task<void> {
        char b[2];
        CO_REQUIRE(co_await s.read_exact(std::span(b, 2)));
        REQUIRE(std::string_view(b, 2) == "hi");
        CO_REQUIRE(co_await s.write_all(std::string_view("ok")));
    }());
    char b[2];
    REQUIRE(::read(sv[1], b, 2) == 2);
    REQUIRE(s.close());
    ::close(sv[1]);
}

#endif

#if WEFT_HAS_URING
TEST_CASE("uring: the multishot accept queues connections while nobody awaits", "[uring][accept]") {
    WEFT_REQUIRE_BACKEND(uring);
    weft::loop<uring> loop;
    auto listener = weft::tcp_listener<uring>::bind(loop, weft::endpoint::loopback_v4(0)).value();
    auto ep = listener.local_endpoint().value();
    run_bounded(loop, [&]() -> weft::task<void> {
        auto [c0, s0] = co_await weft::when_all(weft::tcp_stream<uring>::connect(loop, ep), listener.accept());
        REQUIRE(s0);  // the multishot accept is armed now and stays armed
        std::vector<weft::tcp_stream<uring>> clients;
        for (int i = 0; i < 5; ++i) clients.push_back((co_await weft::tcp_stream<uring>::connect(loop, ep)).value());
        (void)co_await weft::sleep_for(20ms);
        // Nobody awaits accept(), yet the kernel has handed the connections over.
        REQUIRE(loop.backend().queued_connections(listener.native_handle()) == 5);
        for (int i = 0; i < 5; ++i) {
            auto s = co_await listener.accept();  // served from the queue, no submission
            REQUIRE(s);
        }
        REQUIRE(loop.backend().queued_connections(listener.native_handle()) == 0);
        // Closing the listener with connections still queued closes them (no fd leak).
        auto extra = (co_await weft::tcp_stream<uring>::connect(loop, ep)).value();
        (void)co_await weft::sleep_for(20ms);
        REQUIRE(loop.backend().queued_connections(listener.native_handle()) == 1);
        REQUIRE(listener.close());
        char b[1];
        auto eof = co_await weft::with_timeout(extra.read_some(b), 5s);
        REQUIRE((eof ? *eof == 0 : eof.error() == std::errc::connection_reset));
    }());
}
TEST_CASE("uring: single-shot accept and recv (multishot off) pass the receive() scenarios", "[uring][receive]") {
    WEFT_REQUIRE_BACKEND(uring);
    const uring::options single{.multishot_accept = false, .multishot_recv = false};
    receive_1mib<uring>(single);
    receive_mixed<uring>(single);
    receive_cancel_race<uring>(single);
}

// Incremental consumption (IOU_PBUF_RING_INC): the kernel fills a buffer front to back
// across receives, and weft works out where each receive's bytes start. A wrong offset
// shows as wrong bytes; a buffer given back while a piece of it is out would be
// overwritten under a lease; one never given back would run the ring dry.
TEST_CASE(
    "uring: incremental buffers: small receives share a buffer, which goes back once full and every piece is back",
    "[uring][receive]") {
    WEFT_REQUIRE_BACKEND(uring);
    for (bool multishot : {true, false}) {
        INFO("multishot " << multishot);
        weft::loop<uring> loop(uring::options{
            .buffer_count = 4, .buffer_size = 256, .multishot_recv = multishot, .incremental_buffers = true});
        run_bounded(loop, [&]() -> weft::task<void> {
            auto p = co_await make_pair(loop);
            std::vector<weft::buffer_lease> leases;
            for (char c : {'a', 'b', 'c'}) {
                CO_REQUIRE(co_await p.client.write_all(std::string(10, c)));
                auto l = co_await p.server.receive();
                CO_REQUIRE(l);
                REQUIRE(l->text() == std::string(10, c));
                leases.push_back(std::move(*l));
            }
            if (!loop.backend().features().incremental_buffers) {
                WARN("no incremental buffer consumption on this kernel (6.12 and later)");
                co_return;
            }
            // One buffer, three pieces, back to back; it is still in the ring.
            REQUIRE(leases[1].data() == leases[0].data() + 10);
            REQUIRE(leases[2].data() == leases[1].data() + 10);
            REQUIRE(loop.backend().free_buffers() == 4);
            // The rest of the buffer: now the kernel is done with it, but pieces are out.
            CO_REQUIRE(co_await p.client.write_all(std::string(256 - 30, 'd')));
            std::size_t rest = 0;
            while (rest < 256 - 30) {
                auto l = co_await p.server.receive();
                CO_REQUIRE(l);
                REQUIRE(l->text() == std::string(l->size(), 'd'));
                rest += l->size();
                leases.push_back(std::move(*l));
            }
            REQUIRE(leases[3].data() == leases[2].data() + 10);
            REQUIRE(loop.backend().free_buffers() == 3);
            // Giving back all but one piece keeps it out; the last one returns it.
            const std::byte* first = leases[0].data();
            leases.erase(leases.begin(), leases.end() - 1);
            REQUIRE(loop.backend().free_buffers() == 3);
            leases.clear();
            REQUIRE(loop.backend().free_buffers() == 4);
            // Bytes keep arriving intact through the other buffers and back into this one.
            bool reused = false;
            for (int i = 0; i < 64; ++i) {
                const std::string msg(1 + i % 50, static_cast<char>('A' + i % 26));
                CO_REQUIRE(co_await p.client.write_all(msg));
                std::string got;
                while (got.size() < msg.size()) {
                    auto l = co_await p.server.receive();
                    CO_REQUIRE(l);
                    reused = reused || l->data() == first;
                    got += l->text();
                }
                REQUIRE(got == msg);
            }
            REQUIRE(reused);
            REQUIRE(loop.backend().free_buffers() == 4);
        }());
    }
}

// What incremental consumption buys: capacity. With whole buffers, four held leases of a
// few bytes each take a four-buffer ring; here sixteen fit in one buffer.
TEST_CASE("uring: incremental buffers: more small leases held at once than the ring has buffers", "[uring][receive]") {
    WEFT_REQUIRE_BACKEND(uring);
    weft::loop<uring> loop(uring::options{.buffer_count = 4, .buffer_size = 256, .incremental_buffers = true});
    run_bounded(loop, [&]() -> weft::task<void> {
        std::vector<tcp_pair<uring>> pairs;
        std::vector<weft::buffer_lease> held;
        for (int i = 0; i < 16; ++i) {
            pairs.push_back(co_await make_pair(loop));
            const std::string msg(10, static_cast<char>('a' + i));
            CO_REQUIRE(co_await pairs.back().client.write_all(msg));
            auto l = co_await weft::with_timeout(pairs.back().server.receive(), 2s);
            CO_REQUIRE(l);
            REQUIRE(l->text() == msg);
            held.push_back(std::move(*l));
        }
        if (!loop.backend().features().incremental_buffers) {
            WARN("no incremental buffer consumption on this kernel (6.12 and later)");
            co_return;
        }
        REQUIRE(loop.backend().free_buffers() == 4);  // 160 bytes of one buffer
        for (std::size_t i = 0; i < held.size(); ++i)
            REQUIRE(held[i].text() == std::string(10, static_cast<char>('a' + i)));
    }());
}

TEST_CASE(
    "uring: incremental buffers (and with multishot, bundles) pass the receive() scenarios, with pieces that wrap the "
    "ring",
    "[uring][receive]") {
    WEFT_REQUIRE_BACKEND(uring);
    for (bool multishot : {true, false}) {
        INFO("multishot " << multishot);
        const uring::options small{.buffer_count = 8,
                                   .buffer_size = 1000,
                                   .multishot_accept = multishot,
                                   .multishot_recv = multishot,
                                   .incremental_buffers = true,
                                   .bundles = multishot};  // (bundles are off by default: covered here)
        receive_1mib<uring>(small);
        receive_mixed<uring>(small);
        receive_cancel_race<uring>(small);
    }
}

namespace {
/// Appends a lease's bytes to `out`.
void append(std::vector<char>& out, const weft::buffer_lease& l) {
    out.insert(out.end(), l.text().begin(), l.text().end());
}
}  // namespace

// Receive bundles (IORING_RECVSEND_BUNDLE): one completion for bytes spread over several
// provided buffers, which weft hands out one lease per buffer. A wrong chain of buffers
// shows as bytes out of order; a buffer left out of the count never comes back.
TEST_CASE(
    "uring: receive bundles: a burst over several buffers arrives in order, one lease per buffer, and "
    "every buffer comes back",
    "[uring][receive]") {
    WEFT_REQUIRE_BACKEND(uring);
    for (bool incremental : {false, true}) {
        for (bool bundles : {true, false}) {
            INFO("incremental buffers " << incremental << ", bundles " << bundles);
            weft::loop<uring> loop(uring::options{
                .buffer_count = 8, .buffer_size = 256, .incremental_buffers = incremental, .bundles = bundles});
            if (bundles && !loop.backend().features().bundles) {
                WARN("no receive bundles on this kernel (6.10 and later)");
                continue;
            }
            REQUIRE(loop.backend().features().bundles == bundles);
            run_bounded(loop, [&]() -> weft::task<void> {
                auto p = co_await make_pair(loop);
                const auto data = pattern(16 * 1000, 7);
                std::vector<char> got;
                // Receives all of `n` bytes, one lease at a time, each within one buffer.
                auto receive_all = [&](std::size_t n) -> weft::task<bool> {
                    const std::size_t want = got.size() + n;
                    while (got.size() < want) {
                        auto l = co_await p.server.receive();
                        if (!l || l->empty() || l->size() > 256) co_return false;
                        append(got, *l);
                    }
                    co_return got.size() == want;
                };
                // Bursts of 1,000 bytes (one write, one segment on loopback) reach a
                // receive that waits on the multishot recv: the kernel's recv finds them all.
                std::size_t sent = 0;
                for (int burst = 0; burst < 8; ++burst) {
                    auto writer = [&]() -> weft::task<bool> {
                        (void)co_await weft::sleep_for(2ms);
                        auto w = co_await p.client.write_all(std::span(data.data() + sent, 1000));
                        co_return static_cast<bool>(w);
                    };
                    auto [received, written] = co_await weft::when_all(receive_all(1000), writer());
                    REQUIRE(written);
                    REQUIRE(received);
                    sent += 1000;
                }
                // A burst that arrives while nobody receives (the waiting receive timed
                // out, the multishot stays armed) is read ahead whole, and nothing is lost.
                for (int burst = 0; burst < 8; ++burst) {
                    auto late = co_await weft::with_timeout(p.server.receive(), 1ms);
                    REQUIRE_FALSE(late);
                    CO_REQUIRE(co_await p.client.write_all(std::span(data.data() + sent, 1000)));
                    sent += 1000;
                    (void)co_await weft::sleep_for(5ms);
                    const bool received = co_await receive_all(1000);
                    REQUIRE(received);
                }
                REQUIRE(got.size() == data.size());
                REQUIRE(std::equal(got.begin(), got.end(), data.begin()));
                if (bundles)
                    REQUIRE(loop.backend().bundles_received() > 0);
                else
                    REQUIRE(loop.backend().bundles_received() == 0);
                REQUIRE(loop.backend().read_ahead(p.server.native_handle()) == 0);
                REQUIRE(loop.backend().free_buffers() == 8);
            }());
            WARN("bundles received: " << loop.backend().bundles_received());
        }
    }
}

// Closing a stream whose bundle is partly handed out: the pieces read ahead go back to
// the ring, a held lease keeps its bytes until it is dropped, and the next socket with
// the same number gets only its own bytes.
TEST_CASE(
    "uring: receive bundles: closing a stream with pieces read ahead gives their buffers back, and a reused "
    "number is the new socket",
    "[uring][receive][lifetime]") {
    WEFT_REQUIRE_BACKEND(uring);
    for (bool incremental : {false, true}) {
        INFO("incremental buffers " << incremental);
        weft::loop<uring> loop(
            uring::options{.buffer_count = 8, .buffer_size = 256, .incremental_buffers = incremental, .bundles = true});
        if (!loop.backend().features().bundles) {
            WARN("no receive bundles on this kernel (6.10 and later)");
            return;
        }
        run_bounded(loop, [&]() -> weft::task<void> {
            auto a = co_await make_pair(loop);
            const int number = a.server.native_handle();
            const auto data = pattern(1000, 11);
            auto writer = [&]() -> weft::task<bool> {
                (void)co_await weft::sleep_for(2ms);
                co_return static_cast<bool>(co_await a.client.write_all(std::span(data.data(), data.size())));
            };
            auto [first, written] = co_await weft::when_all(a.server.receive(), writer());
            REQUIRE(written);
            CO_REQUIRE(first);
            REQUIRE(first->size() == 256);  // the first buffer of the bundle
            REQUIRE(loop.backend().bundles_received() == 1);
            REQUIRE(loop.backend().read_ahead(number) == 3);  // the other three, in order
            // Four buffers out (incremental: the last one, part filled, is still in the ring).
            REQUIRE(loop.backend().free_buffers() == (incremental ? 5u : 4u));
            REQUIRE(a.server.close());
            REQUIRE(loop.backend().free_buffers() == 7);  // all but the held lease's
            // The number's next socket: none of the old bytes reach it.
            auto b = co_await make_pair(loop);
            REQUIRE((b.server.native_handle() == number || b.client.native_handle() == number));
            CO_REQUIRE(co_await b.client.write_all(std::string_view("fresh")));
            auto l = co_await b.server.receive();
            CO_REQUIRE(l);
            REQUIRE(l->text() == "fresh");
            CO_REQUIRE(co_await b.server.write_all(std::string_view("back")));
            auto r = co_await b.client.receive();
            CO_REQUIRE(r);
            REQUIRE(r->text() == "back");
            // The held lease's bytes were never overwritten.
            REQUIRE(std::equal(first->text().begin(), first->text().end(), data.begin()));
            first->release();
        }());
        REQUIRE(loop.backend().free_buffers() == 8);
    }
}

TEST_CASE("uring: the multishot recv reads ahead a bounded amount and gives it back on close", "[uring][receive]") {
    WEFT_REQUIRE_BACKEND(uring);
    for (bool incremental : {false, true}) {
        INFO("incremental buffers " << incremental);
        weft::loop<uring> loop(
            uring::options{.buffer_count = 64, .buffer_size = 1024, .incremental_buffers = incremental});
        REQUIRE(loop.backend().features().multishot_recv);
        run_bounded(loop, [&]() -> weft::task<void> {
            auto p = co_await make_pair(loop);
            const int fd = p.server.native_handle();
            const auto data = pattern(40 * 1024, 3);
            CO_REQUIRE(co_await p.client.write_all(std::span(data.data(), 1)));
            std::vector<char> got;
            {
                auto first = co_await p.server.receive();  // arms the multishot recv
                REQUIRE(first);
                got.insert(got.end(), first->text().begin(), first->text().end());
            }
            // Nobody receives now: the kernel keeps filling buffers, up to the cap.
            for (std::size_t off = 1; off < data.size(); off += 1024) {
                CO_REQUIRE(co_await p.client.write_all(
                    std::span(data.data() + off, std::min<std::size_t>(1024, data.size() - off))));
                (void)co_await weft::sleep_for(1ms);
            }
            (void)co_await weft::sleep_for(20ms);
            const std::size_t ahead = loop.backend().read_ahead(fd);
            REQUIRE(ahead > 0);
            REQUIRE(ahead <= uring::max_read_ahead + 1);  // a completion may race the cap's cancel
            // A completion takes a whole buffer, or (incremental) a piece of one.
            if (incremental)
                REQUIRE(loop.backend().free_buffers() >= 64 - ahead);
            else
                REQUIRE(loop.backend().free_buffers() == 64 - ahead);
            // The rest waits in the socket; every byte arrives, in order.
            while (got.size() < data.size() / 2) {
                auto lease = co_await p.server.receive();
                REQUIRE(lease);
                REQUIRE_FALSE(lease->empty());
                got.insert(got.end(), lease->text().begin(), lease->text().end());
            }
            REQUIRE(std::equal(got.begin(), got.end(), data.begin()));
            (void)co_await weft::sleep_for(20ms);
            REQUIRE(loop.backend().read_ahead(fd) > 0);
            // Closing with bytes read ahead gives their buffers back.
            REQUIRE(p.server.close());
            REQUIRE(loop.backend().free_buffers() == 64);
        }());
    }
}

TEST_CASE("uring: idle streams' read-ahead never starves a stream that receives (scenario 10)",
          "[uring][receive][lifetime]") {
    WEFT_REQUIRE_BACKEND(uring);
    constexpr std::uint16_t buffers = 16;
    for (bool incremental : {false, true}) {
        INFO("incremental buffers " << incremental);
        weft::loop<uring> loop(
            uring::options{.buffer_count = buffers, .buffer_size = 1024, .incremental_buffers = incremental});
        REQUIRE(loop.backend().features().multishot_recv);
        // More idle-but-readable streams than buffers / max_read_ahead: each has armed its
        // multishot recv with one receive(), then its peer sends 8 buffers' worth.
        constexpr int idle = 6;
        static_assert(idle > buffers / uring::max_read_ahead);
        run_bounded(loop, [&]() -> weft::task<void> {
            std::vector<tcp_pair<uring>> conns;
            std::vector<std::vector<char>> sent(idle), got(idle);
            for (int i = 0; i < idle; ++i) {
                conns.push_back(co_await make_pair(loop));
                sent[static_cast<std::size_t>(i)] = pattern(8 * 1024, 100 + static_cast<std::uint64_t>(i));
                auto& s = sent[static_cast<std::size_t>(i)];
                CO_REQUIRE(co_await conns.back().client.write_all(std::span(s.data(), 1)));
                auto first = co_await conns.back().server.receive();
                REQUIRE(first);
                append(got[static_cast<std::size_t>(i)], *first);
            }
            for (int i = 0; i < idle; ++i) {
                auto& s = sent[static_cast<std::size_t>(i)];
                for (std::size_t off = 1; off < s.size(); off += 1024) {
                    CO_REQUIRE(co_await conns[static_cast<std::size_t>(i)].client.write_all(
                        std::span(s.data() + off, std::min<std::size_t>(1024, s.size() - off))));
                    (void)co_await weft::sleep_for(1ms);
                }
            }
            (void)co_await weft::sleep_for(20ms);
            std::size_t ahead = 0;
            for (auto& c : conns) ahead += loop.backend().read_ahead(c.server.native_handle());
            INFO("read ahead: " << ahead << " completions, free buffers: " << loop.backend().free_buffers());
            // An active stream still gets a buffer, at once.
            auto active = co_await make_pair(loop);
            CO_REQUIRE(co_await active.client.write_all(std::string_view("active")));
            auto r = co_await weft::with_timeout(active.server.receive(), 2s);
            REQUIRE(r);
            REQUIRE(r->text() == "active");
            // Read-ahead stopped at half the ring (plus what was on its way when it stopped;
            // incremental: a write can straddle two buffers, as two completions).
            REQUIRE(ahead <= buffers / 2 + (incremental ? 2 : 1) * idle);
            // And every idle stream's bytes arrive later, in order, none lost or repeated.
            for (int i = 0; i < idle; ++i) {
                auto& g = got[static_cast<std::size_t>(i)];
                while (g.size() < sent[static_cast<std::size_t>(i)].size()) {
                    auto l = co_await weft::with_timeout(conns[static_cast<std::size_t>(i)].server.receive(), 2s);
                    REQUIRE(l);
                    REQUIRE_FALSE(l->empty());
                    append(g, *l);
                }
                REQUIRE(g == sent[static_cast<std::size_t>(i)]);
            }
        }());
        REQUIRE(loop.backend().free_buffers() == buffers);
    }
}

TEST_CASE("uring: a cancelled receive's read-ahead never keeps the last buffer from a waiting stream (scenario 10)",
          "[uring][receive][lifetime]") {
    WEFT_REQUIRE_BACKEND(uring);
    for (bool incremental : {false, true}) {
        INFO("incremental buffers " << incremental);
        weft::loop<uring> loop(
            uring::options{.buffer_count = 2, .buffer_size = 1024, .incremental_buffers = incremental});
        REQUIRE(loop.backend().features().multishot_recv);
        run_bounded(loop, [&]() -> weft::task<void> {
            auto held = co_await make_pair(loop);
            auto a = co_await make_pair(loop);
            auto b = co_await make_pair(loop);
            // One buffer stays on loan all along: one is left. (A whole buffer's worth: a
            // buffer consumed incrementally leaves the ring only once it is full.)
            const std::string whole(1024, 'h');
            CO_REQUIRE(co_await held.client.write_all(whole));
            auto lease = co_await held.server.receive();
            REQUIRE(lease);
            REQUIRE(lease->size() == whole.size());
            REQUIRE(loop.backend().free_buffers() == 1);
            // a's receive arms its multishot and is cancelled before data comes: the request
            // stays armed, and a's next bytes take the last free buffer as read-ahead.
            auto cancelled = co_await weft::with_timeout(a.server.receive(), 10ms);
            REQUIRE(cancelled.error() == std::errc::timed_out);
            CO_REQUIRE(co_await a.client.write_all(std::string_view("for a")));
            (void)co_await weft::sleep_for(20ms);
            // b waits for a buffer: the one in a's read-ahead is copied out and handed over.
            CO_REQUIRE(co_await b.client.write_all(std::string_view("for b")));
            auto rb = co_await weft::with_timeout(b.server.receive(), 2s);
            REQUIRE(rb);
            REQUIRE(rb->text() == "for b");
            rb->release();
            // a's bytes are still a's, in order.
            auto ra = co_await weft::with_timeout(a.server.receive(), 2s);
            REQUIRE(ra);
            REQUIRE(ra->text() == "for a");
        }());
        REQUIRE(loop.backend().free_buffers() == 2);
    }
}

TEST_CASE("uring: a receive cancelled while the kernel reports an empty buffer ring completes cancelled (scenario 9)",
          "[uring][receive][lifetime]") {
    WEFT_REQUIRE_BACKEND(uring);
    // Single-shot recv with buffer select and one buffer. Without deferred task running,
    // the kernel completes a request on its own: here in the test thread's next syscall.
    for (bool incremental : {false, true}) {
        INFO("incremental buffers " << incremental);
        weft::loop<uring> loop(uring::options{.defer_taskrun = false,
                                              .coop_taskrun = false,
                                              .buffer_count = 1,
                                              .buffer_size = 1024,
                                              .multishot_recv = false,
                                              .incremental_buffers = incremental});
        auto a = run_bounded(loop, make_pair(loop));
        auto b = run_bounded(loop, make_pair(loop));
        // b's receive goes to the kernel while the buffer is free (no data yet: it waits).
        std::stop_source stop;
        std::optional<weft::result<weft::buffer_lease>> got;
        loop.spawn(
            [](weft::tcp_stream<uring>& s, std::optional<weft::result<weft::buffer_lease>>& got) -> weft::task<void> {
                got.emplace(co_await s.receive());
            }(b.server, got),
            stop.get_token());
        for (int i = 0; i < 3; ++i) loop.run_once(5ms);
        REQUIRE_FALSE(got);
        // a takes the only buffer and keeps it (a whole buffer's worth: a buffer consumed
        // incrementally leaves the ring only once it is full).
        auto lease = run_bounded(loop, [&]() -> weft::task<weft::buffer_lease> {
            CO_REQUIRE(co_await a.client.write_all(std::string(1024, 'a')));
            auto l = co_await a.server.receive();
            REQUIRE(l);
            co_return std::move(*l);
        }());
        REQUIRE(loop.backend().free_buffers() == 0);
        // Data for b: the kernel retries b's recv, finds the ring empty and completes it
        // with ENOBUFS; in the same turn, before the loop has seen that, b is cancelled.
        REQUIRE(::send(b.client.native_handle(), "data", 4, MSG_NOSIGNAL) == 4);
        std::this_thread::sleep_for(20ms);
        stop.request_stop();
        for (int i = 0; i < 100 && !got; ++i) loop.run_once(10ms);
        REQUIRE(got);  // (before: it waited for a buffer, as if nobody had cancelled it)
        REQUIRE_FALSE(*got);
        REQUIRE(got->error() == std::errc::operation_canceled);
        lease = {};
        REQUIRE(loop.backend().free_buffers() == 1);
        run_until_idle(loop);
    }
}

#endif

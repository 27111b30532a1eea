// Cancellation racing completion, and the allocation-free steady state, on every backend.
#include "alloc_counter.hpp"
#include "helpers.hpp"

using namespace weft_test;

TEMPLATE_TEST_CASE("cancelling a read as its data arrives loses and duplicates nothing (10,000 rounds)",
                   "[stress][cancel]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    constexpr int rounds = 10'000;
    std::vector<unsigned char> received;
    int resumptions = 0, reads = 0, cancelled = 0;
    run_bounded(
        loop,
        [&]() -> weft::task<void> {
            auto p = co_await make_pair(loop);
            bool was_cancelled = false;
            auto read_one = [&](std::stop_token token) -> weft::task<void> {
                std::array<unsigned char, 16> buf;
                ++reads;
                auto r = co_await weft::with_stop_token(p.server.read_some(buf), token);
                ++resumptions;
                was_cancelled = !r && r.error() == std::errc::operation_canceled;
                if (r)
                    received.insert(received.end(), buf.begin(), buf.begin() + static_cast<long>(*r));
                else if (was_cancelled)
                    ++cancelled;
                else
                    FAIL("read failed: " << r.error().message());
            };
            for (int i = 0; i < rounds; ++i) {
                const unsigned char byte = static_cast<unsigned char>(i);
                std::stop_source src;
                // Four orderings of "data arrives" against "the read is cancelled":
                // 0: data, then read and cancel at once; 1: read, data, cancel in one turn;
                // 2: read, one loop turn, data, cancel; 3: read, one loop turn, cancel, data.
                auto send_and_cancel = [&, byte]() -> weft::task<void> {
                    if (i % 4 >= 2) (void)co_await weft::sleep_for(std::chrono::nanoseconds(0));
                    if (i % 4 == 3) src.request_stop();
                    auto w = co_await p.client.write_all(std::span(&byte, 1));
                    if (!w) FAIL("write failed");
                    src.request_stop();
                };
                if (i % 4 == 0) {
                    auto w = co_await p.client.write_all(std::span(&byte, 1));  // data first
                    if (!w) FAIL("write failed");
                    co_await weft::when_all(read_one(src.get_token()), [&]() -> weft::task<void> {
                        src.request_stop();
                        co_return;
                    }());
                } else {
                    co_await weft::when_all(read_one(src.get_token()), send_and_cancel());
                }
                if (was_cancelled) {
                    // The cancelled read took nothing: this round's byte is still queued, and
                    // the next round must start with an empty socket to race again.
                    unsigned char left;
                    auto r = co_await p.server.read_exact(std::span(&left, 1));
                    if (!r) FAIL("the byte of a cancelled read is missing");
                    received.push_back(left);
                }
            }
            // Whatever the cancelled reads left behind is still in the socket, in order.
            (void)p.client.shutdown();
            std::array<unsigned char, 4096> rest;
            for (;;) {
                auto n = co_await p.server.read_some(rest);
                if (!n || *n == 0) break;
                received.insert(received.end(), rest.begin(), rest.begin() + static_cast<long>(*n));
            }
        }(),
        120000ms);
    REQUIRE(resumptions == reads);  // every awaiter resumed exactly once
    REQUIRE(received.size() == static_cast<std::size_t>(rounds));
    for (int i = 0; i < rounds; ++i) {
        if (received[static_cast<std::size_t>(i)] != static_cast<unsigned char>(i))
            FAIL("byte " << i << " out of order or duplicated");
    }
    REQUIRE(cancelled > 0);  // the cancellation path really ran
    WARN(std::string(TestType::name) << ": " << cancelled << " of " << reads << " reads were cancelled");
}

TEMPLATE_TEST_CASE("an echo of 10,000 messages allocates nothing after the first 1,000", "[stress][alloc]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    REQUIRE(echo_allocations<TestType>([](weft::tcp_stream<TestType> s) -> weft::task<void> {
                std::array<char, 256> buf;
                for (;;) {
                    auto n = co_await s.read_some(buf);
                    if (!n || *n == 0) co_return;
                    if (!co_await s.write_all(std::span(buf.data(), *n))) co_return;
                }
            }) == 0);
}

// The common server pattern, a read with a deadline, must not allocate per operation
// either: the combinators' frames come from the thread's frame cache and their stop
// sources live in those frames (stop.hpp), so once warm nothing is allocated.
// (backend::blocking runs a combinator's children on threads of their own: each
// operation starts a thread, which allocates; that model pays a thread per wait.)
TEMPLATE_TEST_CASE("an echo whose reads run under with_timeout, when_any or with_stop_token allocates nothing",
                   "[stress][alloc][cancel]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    WEFT_NOT_ON_BLOCKING(TestType, "a combinator's children run on threads of their own");
    SECTION("with_timeout") {
        REQUIRE(echo_allocations<TestType>([](weft::tcp_stream<TestType> s) -> weft::task<void> {
                    std::array<char, 256> buf;
                    for (;;) {
                        auto n = co_await weft::with_timeout(s.read_some(buf), 10s);
                        if (!n || *n == 0) co_return;
                        if (!co_await s.write_all(std::span(buf.data(), *n))) co_return;
                    }
                }) == 0);
    }
    SECTION("when_any with a timer") {
        REQUIRE(echo_allocations<TestType>([](weft::tcp_stream<TestType> s) -> weft::task<void> {
                    std::array<char, 256> buf;
                    for (;;) {
                        auto v = co_await weft::when_any(s.read_some(buf), weft::sleep_for(10s));
                        if (v.index() != 0) co_return;
                        auto n = std::get<0>(v);
                        if (!n || *n == 0) co_return;
                        if (!co_await s.write_all(std::span(buf.data(), *n))) co_return;
                    }
                }) == 0);
    }
    SECTION("with_stop_token") {
        REQUIRE(echo_allocations<TestType>([](weft::tcp_stream<TestType> s) -> weft::task<void> {
                    std::stop_source stop;  // the user's: made once, not per read
                    std::array<char, 256> buf;
                    for (;;) {
                        auto n = co_await weft::with_stop_token(s.read_some(buf), stop.get_token());
                        if (!n || *n == 0) co_return;
                        if (!co_await s.write_all(std::span(buf.data(), *n))) co_return;
                    }
                }) == 0);
    }
}

// poll's and spin's fd table: the wait's ready list was reserved to the table's exact
// size at every add, so each new high-water mark of watched fds reallocated it. With
// thousands of connections whose interest comes and goes, the mark creeps up during a
// run: the benchmark counted 0.01-0.03 allocations per message for spin at 10,000
// connections. Before the fix this test counted one allocation per added fd.
TEST_CASE("the pollfd table grows geometrically: a new high-water mark of watched fds rarely allocates",
          "[poll][alloc]") {
    weft::detail::pollfd_table table;
    int failed = 0;
    const auto before = weft_test::alloc_snapshot();
    for (int fd = 0; fd < 4096; ++fd) failed += table.add(fd, POLLIN) != 0;
    // Interest that comes and goes: each round removes a few and adds them back plus one.
    for (int round = 0; round < 256; ++round) {
        for (int fd = 0; fd < 8; ++fd) failed += table.remove(fd * 97) != 0;
        for (int fd = 0; fd < 8; ++fd) failed += table.add(fd * 97, POLLIN) != 0;
        failed += table.add(4096 + round, POLLIN) != 0;
    }
    const auto after = weft_test::alloc_snapshot();
    REQUIRE(failed == 0);
    REQUIRE(table.fds().size() == 4096 + 256);
    // Geometric growth of the array, its index and the ready list: a few dozen at most.
    REQUIRE(after.allocs - before.allocs < 64);
}

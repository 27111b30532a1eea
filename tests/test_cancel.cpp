// Combinators: when_any, when_all, with_timeout, with_stop_token, spawn with a token.
#include <atomic>

#include "helpers.hpp"

using namespace weft_test;
using tclock = weft::clock;

TEMPLATE_TEST_CASE("when_all runs children concurrently", "[cancel]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    auto start = tclock::now();
    auto [a, b, c] = run_bounded(
        loop, weft::when_all(weft::sleep_for(30ms), weft::sleep_for(30ms), []() -> weft::task<int> { co_return 7; }()));
    REQUIRE(a);
    REQUIRE(b);
    REQUIRE(c == 7);
    REQUIRE(tclock::now() - start < 55ms + 200ms);  // not 60 ms of sequential sleeps... with slack for noise
}

TEMPLATE_TEST_CASE("when_any returns the first and waits for the cancelled loser", "[cancel]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        char buf[8];
        bool loser_finished = false;
        auto loser = [&]() -> weft::task<weft::result<std::size_t>> {
            auto r = co_await p.server.read_some(buf);
            loser_finished = true;
            co_return r;
        };
        auto v = co_await weft::when_any(loser(), weft::sleep_for(5ms));
        REQUIRE(v.index() == 1);
        REQUIRE(loser_finished);  // cancelled and completed before when_any returned
        // The read slot is free again: a new read on the same socket is accepted.
        CO_REQUIRE(co_await p.client.write_all(std::string_view("ok")));
        auto n = co_await p.server.read_exact(std::span(buf, 2));
        REQUIRE(n);
    }());
}

TEMPLATE_TEST_CASE("with_timeout keeps data that won the race", "[cancel]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        CO_REQUIRE(co_await p.client.write_all(std::string_view("ready")));
        (void)co_await weft::sleep_for(5ms);
        char buf[8];
        // Already readable: the read completes even with a zero timeout.
        auto r = co_await weft::with_timeout(p.server.read_some(buf), 0ms);
        REQUIRE(r);
        REQUIRE(*r == 5);
    }());
}

TEMPLATE_TEST_CASE("cancellation propagates from an outer token to nested tasks", "[cancel]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    std::stop_source src;
    std::atomic<int> cancelled{0};  // blocking: the children are threads
    auto inner = [&]() -> weft::task<void> {
        auto r = co_await weft::sleep_for(std::chrono::hours(1));
        if (r.error() == std::errc::operation_canceled) ++cancelled;
    };
    auto outer = [&]() -> weft::task<void> {
        co_await weft::when_all(inner(), inner());  // children inherit the spawn token
    };
    loop.spawn(outer(), src.get_token());
    loop.spawn([](std::stop_source& s) -> weft::task<void> {
        (void)co_await weft::sleep_for(5ms);
        s.request_stop();
    }(src));
    run_until_idle(loop);
    REQUIRE(cancelled == 2);
}

TEMPLATE_TEST_CASE("connect can be cancelled by a timeout", "[cancel]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    // A listener with a full backlog never completes new handshakes on Linux (the SYN is
    // dropped), so the connect stays pending until the timeout cancels it.
    auto l = weft::tcp_listener<TestType>::bind(loop, weft::endpoint::loopback_v4(0), {.backlog = 0}).value();
    auto ep = l.local_endpoint().value();
    run_bounded(loop, [&]() -> weft::task<void> {
        std::vector<weft::tcp_stream<TestType>> filled;
        for (int i = 0; i < 8; ++i) {
            auto c = co_await weft::with_timeout(weft::tcp_stream<TestType>::connect(loop, ep), 100ms);
            if (!c) {
                REQUIRE(c.error() == std::errc::timed_out);
                co_return;
            }
            filled.push_back(std::move(*c));
        }
        FAIL("the backlog never filled up");
    }());
}

TEMPLATE_TEST_CASE("a child that throws cancels its siblings at once", "[cancel]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    auto thrower = []() -> weft::task<weft::result<void>> {
        (void)co_await weft::sleep_for(5ms);
        throw std::runtime_error("child failed");
    };
    auto start = tclock::now();
    REQUIRE_THROWS_AS(run_bounded(loop, weft::with_timeout(thrower(), std::chrono::hours(1))), std::runtime_error);
    REQUIRE_THROWS_AS(run_bounded(loop, weft::when_all(thrower(), weft::sleep_for(std::chrono::hours(1)))),
                      std::runtime_error);
    REQUIRE_THROWS_AS(run_bounded(loop, weft::when_any(thrower(), weft::sleep_for(std::chrono::hours(1)))),
                      std::runtime_error);
    REQUIRE(tclock::now() - start < 10s);  // not an hour: the sleepers were cancelled
}

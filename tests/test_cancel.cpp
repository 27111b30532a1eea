// Combinators: when_any, when_all, with_timeout, with_stop_token, spawn with a token.
#include <atomic>
#include <optional>
#include <thread>

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

// weft's own stop source (stop.hpp): what every task environment carries. It must keep
// std::stop_source's guarantees without allocating: each callback runs at most once, one
// registered after the request runs at once, and a callback's destructor returns only
// when no run of it is in progress on any thread.

TEST_CASE("stop source: callbacks run once, late ones at once, removed ones never", "[cancel][stop]") {
    weft::detail::stop_source src;
    int a = 0, b = 0, c = 0;
    auto inc = [](int* n) {
        struct f {
            int* n;
            void operator()() const noexcept { ++*n; }
        };
        return f{n};
    };
    REQUIRE(src.get_token().stop_possible());
    REQUIRE_FALSE(weft::detail::stop_token{}.stop_possible());
    {
        weft::detail::stop_callback cb_a(src.get_token(), inc(&a));
        {
            weft::detail::stop_callback cb_b(src.get_token(), inc(&b));
        }  // removed before the request: never runs
        REQUIRE_FALSE(src.get_token().stop_requested());
        REQUIRE(src.request_stop());
        REQUIRE_FALSE(src.request_stop());  // only the first request counts
        REQUIRE(src.get_token().stop_requested());
        weft::detail::stop_callback cb_c(src.get_token(), inc(&c));  // after the request: runs now
        REQUIRE(c == 1);
    }
    REQUIRE(a == 1);
    REQUIRE(b == 0);
    REQUIRE(c == 1);
}

TEST_CASE("stop source: a callback may destroy itself while it runs", "[cancel][stop]") {
    weft::detail::stop_source src;
    struct self_destroying {
        std::optional<weft::detail::stop_callback<self_destroying>>* slot;
        int* runs;
        void operator()() const noexcept {
            ++*runs;
            slot->reset();  // the awaiter's usual move: its completion drops the callback
        }
    };
    int runs = 0;
    std::optional<weft::detail::stop_callback<self_destroying>> slot;
    slot.emplace(src.get_token(), self_destroying{&slot, &runs});
    int other = 0;
    struct count {
        int* n;
        void operator()() const noexcept { ++*n; }
    };
    weft::detail::stop_callback<count> after(src.get_token(), count{&other});
    src.request_stop();
    REQUIRE(runs == 1);
    REQUIRE(other == 1);  // the list went on after the self-removal
    REQUIRE_FALSE(slot.has_value());
}

TEST_CASE("stop source: requests racing registration and removal on two threads", "[cancel][stop][threads]") {
    // Under TSan this is the check that the list's lock and the wait for a running
    // callback are sound; everywhere it checks exactly-once and "not after removal".
    for (int round = 0; round < 2000; ++round) {
        weft::detail::stop_source src;
        std::atomic<int> runs{0};
        std::atomic<bool> removed{false};
        std::atomic<bool> ran_after_removal{false};
        struct probe {
            std::atomic<int>* runs;
            std::atomic<bool>* removed;
            std::atomic<bool>* late;
            void operator()() const noexcept {
                if (removed->load()) late->store(true);
                runs->fetch_add(1);
            }
        };
        std::thread stopper([&] { src.request_stop(); });
        {
            weft::detail::stop_callback<probe> cb(src.get_token(), probe{&runs, &removed, &ran_after_removal});
        }
        removed.store(true);
        stopper.join();
        REQUIRE(runs.load() <= 1);
        REQUIRE_FALSE(ran_after_removal.load());
        // A callback made after the request always runs, at once.
        std::atomic<int> late_runs{0};
        std::atomic<bool> not_removed{false}, unused{false};
        weft::detail::stop_callback<probe> late(src.get_token(), probe{&late_runs, &not_removed, &unused});
        REQUIRE(late_runs.load() == 1);
    }
}

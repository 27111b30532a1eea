// loop<Backend>: timers, spawn, post from other threads, stop, teardown with suspended tasks.
#include "helpers.hpp"

#include <algorithm>
#include <atomic>
#include <random>
#include <thread>

using namespace weft_test;
using tclock = weft::clock;

TEMPLATE_TEST_CASE("timers fire in deadline order, ties first-in first-out", "[timer]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    WEFT_NOT_ON_BLOCKING(TestType, "each timer is its own sleeping thread: threads woken together run in no "
                                   "defined order, so there is no first-in first-out to check");
    weft::loop<TestType> loop;
    std::vector<int> order;
    auto base = tclock::now() + 20ms;
    const int offsets[] = {30, 10, 20, 10, 0, 30, 5};
    for (int i = 0; i < 7; ++i) {
        loop.spawn([](std::vector<int>& out, tclock::time_point at, int id) -> weft::task<void> {
            auto r = co_await weft::sleep_until(at);
            REQUIRE(r);
            REQUIRE(tclock::now() >= at);  // never early by the monotonic clock
            out.push_back(id);
        }(order, base + std::chrono::milliseconds(offsets[i]), i));
    }
    loop.run();
    REQUIRE(order == std::vector<int>{4, 6, 1, 3, 2, 0, 5});
}

TEMPLATE_TEST_CASE("100,000 pending timers all fire, in order", "[timer]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    WEFT_NOT_ON_BLOCKING(TestType, "each pending timer is a sleeping thread: 100,000 threads exceed the limits");
    weft::loop<TestType> loop;
    constexpr int n = 100'000;
    std::mt19937 rng(42);
    std::uniform_int_distribution<int> us(0, 200'000);
    std::vector<tclock::time_point> fired_deadlines;
    fired_deadlines.reserve(n);
    auto base = tclock::now();
    for (int i = 0; i < n; ++i) {
        auto at = base + std::chrono::microseconds(us(rng));
        loop.spawn([](std::vector<tclock::time_point>& out, tclock::time_point at) -> weft::task<void> {
            (void)co_await weft::sleep_until(at);
            out.push_back(at);
        }(fired_deadlines, at));
    }
    loop.run();
    REQUIRE(fired_deadlines.size() == n);
    REQUIRE(std::is_sorted(fired_deadlines.begin(), fired_deadlines.end()));
}

TEMPLATE_TEST_CASE("a huge sleep neither overflows nor fires", "[timer]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    auto r = run_bounded(loop, weft::with_timeout(weft::sleep_for(std::chrono::hours::max()), 20ms));
    REQUIRE(r.error() == std::errc::timed_out);
    auto z = run_bounded(loop, [&]() -> weft::task<weft::result<void>> { co_return co_await loop.sleep_for(0ms); }());
    REQUIRE(z);
}

TEMPLATE_TEST_CASE("post() from another thread wakes a sleeping loop", "[loop][thread]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    std::stop_source stop;
    std::atomic<int> ran{0};
    std::thread poster([&] {
        std::this_thread::sleep_for(20ms);
        loop.post([&] {
            ran.fetch_add(1);
            stop.request_stop();  // on the loop thread, as cancellation requires
        });
    });
    auto start = tclock::now();
    // Without a wake-up the loop would sleep for an hour here.
    auto r = run_bounded(loop, weft::with_stop_token(weft::sleep_for(std::chrono::hours(1)), stop.get_token()));
    poster.join();
    REQUIRE(r.error() == std::errc::operation_canceled);
    REQUIRE(ran.load() == 1);
    REQUIRE(tclock::now() - start < 10s);
}

TEMPLATE_TEST_CASE("many posts from two threads all run exactly once", "[loop][thread]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    constexpr int per_thread = 20'000;
    std::atomic<int> ran{0};  // run on the loop thread; read by the task (a thread of its own on blocking)
    auto producer = [&] {
        for (int i = 0; i < per_thread; ++i) loop.post([&] { ++ran; });
    };
    std::thread a(producer), b(producer);
    run_bounded(loop, [&]() -> weft::task<void> {
        while (ran < 2 * per_thread) (void)co_await weft::sleep_for(1ms);
    }());
    a.join();
    b.join();
    REQUIRE(ran == 2 * per_thread);
}

TEMPLATE_TEST_CASE("stop() from another thread ends run()", "[loop][thread]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    loop.spawn([]() -> weft::task<void> { (void)co_await weft::sleep_for(std::chrono::hours(1)); }());
    std::thread stopper([&] {
        std::this_thread::sleep_for(20ms);
        loop.stop();
    });
    loop.run();
    stopper.join();
    REQUIRE(loop.live_tasks() == 1);  // still suspended; the loop's destructor frees it
}

TEMPLATE_TEST_CASE("a loop destroyed with suspended tasks frees their frames without resuming them", "[loop]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    WEFT_NOT_ON_BLOCKING(TestType, "its tasks are threads blocked in calls: the loop cancels them, and a cancelled "
                                   "task resumes to finish; frames cannot be freed from under a running thread");
    int destroyed = 0;
    int resumed = 0;
    struct probe {
        int* n;
        ~probe() { ++*n; }
    };
    {
        weft::loop<TestType> loop;
        auto pair = run_bounded(loop, make_pair(loop));
        auto listener = weft::tcp_listener<TestType>::bind(loop, weft::endpoint::loopback_v4(0)).value();
        static char buf[64];
        // Parked in a read, a timer, an accept, and a when_any of both kinds.
        // The frames own their sockets, so the operations are still parked in the
        // backend when the loop dies (not completed by a close first).
        loop.spawn([](weft::tcp_stream<TestType> s, int* d, int* r) -> weft::task<void> {
            probe p{d};
            (void)co_await s.read_some(buf);
            ++*r;
        }(std::move(pair.server), &destroyed, &resumed));
        loop.spawn([](int* d, int* r) -> weft::task<void> {
            probe p{d};
            (void)co_await weft::sleep_for(std::chrono::hours(1));
            ++*r;
        }(&destroyed, &resumed));
        loop.spawn([](weft::tcp_listener<TestType> l, int* d, int* r) -> weft::task<void> {
            probe p{d};
            (void)co_await l.accept();
            ++*r;
        }(std::move(listener), &destroyed, &resumed));
        loop.spawn([](weft::tcp_stream<TestType> s, int* d, int* r) -> weft::task<void> {
            probe p{d};
            (void)co_await weft::when_any(s.wait_writable(), weft::sleep_for(std::chrono::hours(1)));
            (void)co_await weft::when_any(s.read_some(buf), weft::sleep_for(std::chrono::hours(1)));
            ++*r;
        }(std::move(pair.client), &destroyed, &resumed));
        // Let all four reach their suspension points, then tear down mid-flight.
        loop.run_once(0ms);
        loop.run_once(0ms);
        loop.run_once(0ms);
        REQUIRE(loop.live_tasks() == 4);
    }
    REQUIRE(destroyed == 4);
    REQUIRE(resumed == 0);
}

TEMPLATE_TEST_CASE("an exception escaping a spawned task reaches the handler", "[loop]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    std::string seen;
    loop.set_exception_handler([&](std::exception_ptr e) {
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& ex) {
            seen = ex.what();
        }
    });
    loop.spawn([]() -> weft::task<void> {
        (void)co_await weft::sleep_for(1ms);
        throw std::runtime_error("escaped");
    }());
    loop.run();
    REQUIRE(seen == "escaped");
    REQUIRE(loop.live_tasks() == 0);
}

TEMPLATE_TEST_CASE("a timer cancelled through a stop token completes once, cancelled", "[timer][cancel]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    std::stop_source src;
    int completions = 0;
    auto sleeper = [&]() -> weft::task<weft::result<void>> {
        auto r = co_await weft::with_stop_token(weft::sleep_for(std::chrono::hours(1)), src.get_token());
        ++completions;
        co_return r;
    };
    auto canceller = [&]() -> weft::task<void> {
        (void)co_await weft::sleep_for(5ms);
        src.request_stop();
        src.request_stop();  // a second request is a no-op
    };
    auto [r, none] = run_bounded(loop, weft::when_all(sleeper(), canceller()));
    REQUIRE(r.error() == std::errc::operation_canceled);
    REQUIRE(completions == 1);
    REQUIRE(loop.pending_timers() == 0);
}

TEMPLATE_TEST_CASE("a frame destroyed while its completion is queued is unlinked from the loop", "[loop]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    auto p = run_bounded(loop, make_pair(loop));
    // The main task waits in a read; a spawned task stops the loop and then closes the
    // socket, which completes the read (queued, not yet resumed). run() throws and the
    // main task's frame dies with its completion still in the ready queue.
    auto reader = [](weft::tcp_stream<TestType>& s) -> weft::task<int> {
        char buf[8];
        (void)co_await s.read_some(buf);
        co_return 1;
    };
    loop.spawn([](weft::loop<TestType>& l, weft::tcp_stream<TestType>& s) -> weft::task<void> {
        (void)co_await weft::sleep_for(1ms);
        l.stop();
        (void)s.close();
    }(loop, p.server));
    REQUIRE_THROWS_AS(loop.run(reader(p.server)), std::system_error);
    // The loop is still usable and holds no dangling completion.
    auto ok = loop.run([]() -> weft::task<int> {
        (void)co_await weft::sleep_for(1ms);
        co_return 7;
    }());
    REQUIRE(ok == 7);
}

TEMPLATE_TEST_CASE("an exception from one resumption loses no other ready task", "[loop]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    loop.set_exception_handler([](std::exception_ptr e) { std::rethrow_exception(e); });
    int b_ran = 0;
    loop.spawn([]() -> weft::task<void> {
        throw std::runtime_error("a");
        co_return;
    }());
    loop.spawn([](int& ran) -> weft::task<void> {
        ++ran;
        co_return;
    }(b_ran));
    REQUIRE_THROWS_AS(loop.run(), std::runtime_error);
    loop.run();  // the second task was still queued and runs now
    REQUIRE(b_ran == 1);
    REQUIRE(loop.live_tasks() == 0);
}

TEMPLATE_TEST_CASE("a deadline in the far past fires at once", "[timer]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    auto r = run_bounded(
        loop,
        [](weft::loop<TestType>& l) -> weft::task<weft::result<void>> {
            (void)co_await l.sleep_for(1ms);  // make the next wait a real one
            co_return co_await weft::sleep_until(tclock::time_point::min());
        }(loop),
        5000ms);
    REQUIRE(r);
}

TEMPLATE_TEST_CASE("operations on a closed stream fail with EBADF", "[tcp]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    weft::tcp_stream<TestType> closed;
    REQUIRE_FALSE(closed.is_open());
    auto r = run_bounded(loop, [](weft::tcp_stream<TestType>& s) -> weft::task<weft::result<std::size_t>> {
        char buf[4];
        co_return co_await s.read_some(buf);
    }(closed));
    REQUIRE(r.error() == std::errc::bad_file_descriptor);
}

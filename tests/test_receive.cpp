// receive(): provided buffers on every backend (io_uring's buffer ring, the reactors' pool).
// The scenarios are templates over the loop options too, so the uring tests can run them
// again with multishot recv switched off.
#include <atomic>

#include "alloc_counter.hpp"
#include "helpers.hpp"
#include "receive_scenarios.hpp"

using namespace weft_test;

TEMPLATE_TEST_CASE("receive() echoes 1 MiB through leased buffers", "[receive]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    receive_1mib<TestType>({});
}

TEMPLATE_TEST_CASE("receive() holds no buffer while idle and waits when all are on loan", "[receive]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    typename TestType::options opts;
    opts.buffer_count = 4;
    opts.buffer_size = 1024;
    weft::loop<TestType> loop(opts);
    constexpr int conns = 8;
    run_bounded(loop, [&]() -> weft::task<void> {
        std::vector<tcp_pair<TestType>> pairs;
        for (int i = 0; i < conns; ++i) pairs.push_back(co_await make_pair(loop));
        // One slot per task, and an atomic count: on backend::blocking the tasks are threads.
        std::vector<weft::buffer_lease> held(conns);
        std::vector<std::string> got(conns);
        std::atomic<int> finished{0};
        for (int i = 0; i < conns; ++i) {
            const auto k = static_cast<std::size_t>(i);
            loop.spawn([](weft::tcp_stream<TestType>& s, weft::buffer_lease& held, std::string& out,
                          std::atomic<int>& finished) -> weft::task<void> {
                auto lease = co_await s.receive();
                if (lease && !lease->empty()) {
                    out.assign(lease->text());
                    held = std::move(*lease);  // keep it on loan
                }
                ++finished;
            }(pairs[k].server, held[k], got[k], finished));
        }
        (void)co_await weft::sleep_for(20ms);
        // Eight receives wait on idle sockets, and not one buffer is taken.
        REQUIRE(loop.backend().free_buffers() == 4);
        // Each message fills a buffer: a buffer consumed incrementally (uring) leaves the
        // ring only once it is full.
        auto message = [](int i) {
            std::string m = "message from connection " + std::to_string(i);
            m.resize(1024, '.');
            return m;
        };
        for (int i = 0; i < conns; ++i)
            CO_REQUIRE(co_await pairs[static_cast<std::size_t>(i)].client.write_all(message(i)));
        while (finished < 4) (void)co_await weft::sleep_for(1ms);
        (void)co_await weft::sleep_for(20ms);
        // Four got a buffer and keep it; four wait for one (ENOBUFS), losing nothing.
        REQUIRE(finished == 4);
        REQUIRE(loop.backend().free_buffers() == 0);
        for (auto& h : held) h = {};  // give the buffers back: the waiting receives go on
        while (finished < conns) (void)co_await weft::sleep_for(1ms);
        for (int i = 0; i < conns; ++i) REQUIRE(got[static_cast<std::size_t>(i)] == message(i));
        for (auto& h : held) h = {};
        REQUIRE(loop.backend().free_buffers() == 4);
    }());
}

TEMPLATE_TEST_CASE("receive() mixed with read_some, read_exact, readv and wait_readable keeps byte order",
                   "[receive]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    receive_mixed<TestType>({});
}

TEMPLATE_TEST_CASE("cancelling receive() as its data arrives loses and duplicates nothing (2,000 rounds)",
                   "[receive][cancel][stress]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    receive_cancel_race<TestType>({});
}

TEMPLATE_TEST_CASE("an echo of 10,000 messages through receive() allocates nothing after the first 1,000",
                   "[receive][alloc]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    REQUIRE(echo_allocations<TestType>([](weft::tcp_stream<TestType> s) -> weft::task<void> {
                for (;;) {
                    auto lease = co_await s.receive();
                    if (!lease || lease->empty()) co_return;
                    if (!co_await s.write_all(lease->bytes())) co_return;
                }
            }) == 0);
}

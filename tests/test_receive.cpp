// receive(): provided buffers on every backend (io_uring's buffer ring, the reactors' pool).
#include "helpers.hpp"

using namespace weft_test;

TEMPLATE_TEST_CASE("receive() echoes 1 MiB through leased buffers", "[receive]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        const auto data = pattern(1 << 20, 5);
        auto writer = [&]() -> weft::task<void> {
            CO_REQUIRE(co_await p.client.write_all(data));
            REQUIRE(p.client.shutdown());
        };
        auto reader = [&]() -> weft::task<std::vector<char>> {
            std::vector<char> got;
            for (;;) {
                auto lease = co_await p.server.receive();
                REQUIRE(lease);
                if (lease->empty()) break;  // EOF
                auto t = lease->text();
                got.insert(got.end(), t.begin(), t.end());
            }
            co_return got;
        };
        auto [none, got] = co_await weft::when_all(writer(), reader());
        REQUIRE(got == data);
    }());
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
        std::vector<weft::buffer_lease> held;
        std::vector<std::string> got(conns);
        int finished = 0;
        for (int i = 0; i < conns; ++i) {
            loop.spawn([](weft::tcp_stream<TestType>& s, std::vector<weft::buffer_lease>& held, std::string& out,
                          int& finished) -> weft::task<void> {
                auto lease = co_await s.receive();
                if (lease && !lease->empty()) {
                    out.assign(lease->text());
                    held.push_back(std::move(*lease));  // keep it on loan
                }
                ++finished;
            }(pairs[static_cast<std::size_t>(i)].server, held, got[static_cast<std::size_t>(i)], finished));
        }
        (void)co_await weft::sleep_for(20ms);
        // Eight receives wait on idle sockets, and not one buffer is taken.
        REQUIRE(loop.backend().free_buffers() == 4);
        for (int i = 0; i < conns; ++i) {
            const std::string msg = "message from connection " + std::to_string(i);
            CO_REQUIRE(co_await pairs[static_cast<std::size_t>(i)].client.write_all(msg));
        }
        while (finished < 4) (void)co_await weft::sleep_for(1ms);
        (void)co_await weft::sleep_for(20ms);
        // Four got a buffer and keep it; four wait for one (ENOBUFS), losing nothing.
        REQUIRE(finished == 4);
        REQUIRE(loop.backend().free_buffers() == 0);
        held.clear();  // give the buffers back: the waiting receives go on
        while (finished < conns) (void)co_await weft::sleep_for(1ms);
        for (int i = 0; i < conns; ++i)
            REQUIRE(got[static_cast<std::size_t>(i)] == "message from connection " + std::to_string(i));
        held.clear();
        REQUIRE(loop.backend().free_buffers() == 4);
    }());
}

// receive() scenarios shared by test_receive.cpp (every backend, default options) and
// test_uring.cpp (again with multishot recv off): each takes the loop's options.
#pragma once

#include "helpers.hpp"

namespace weft_test {

/// 1 MiB through receive() leases, then EOF as an empty lease.
template <class B>
void receive_1mib(typename B::options opts) {
    weft::loop<B> loop(opts);
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

/// Every read API in turn on one stream, while the peer keeps sending: a backend that
/// reads ahead for receive() (uring's multishot recv) must hand those bytes to the plain
/// reads first, and report readiness for them.
template <class B>
void receive_mixed(typename B::options opts) {
    weft::loop<B> loop(opts);
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        const auto data = pattern(256 << 10, 9);
        auto writer = [&]() -> weft::task<void> {
            std::size_t off = 0;
            for (std::size_t i = 0; off < data.size(); ++i) {
                std::size_t n = std::min<std::size_t>(data.size() - off, 700 + (i * 97) % 1500);
                CO_REQUIRE(co_await p.client.write_all(std::span(data.data() + off, n)));
                off += n;
                if (i % 3 == 0) (void)co_await weft::sleep_for(std::chrono::nanoseconds(0));
            }
            REQUIRE(p.client.shutdown());
        };
        auto reader = [&]() -> weft::task<std::vector<char>> {
            std::vector<char> got;
            auto append = [&](const char* b, std::size_t n) { got.insert(got.end(), b, b + n); };
            for (std::size_t step = 0; got.size() < data.size(); ++step) {
                if (step % 11 == 0) (void)co_await weft::sleep_for(1ms);  // let a read-ahead build up
                switch (step % 5) {
                    case 0: {
                        auto lease = co_await p.server.receive();
                        REQUIRE(lease);
                        REQUIRE_FALSE(lease->empty());  // not at EOF yet
                        append(lease->text().data(), lease->size());
                        break;
                    }
                    case 1: {
                        std::array<char, 37> buf;
                        auto n = co_await p.server.read_some(buf);
                        REQUIRE(n);
                        REQUIRE(*n > 0);
                        append(buf.data(), *n);
                        break;
                    }
                    case 2: {
                        std::array<char, 10> a;
                        std::array<char, 20> b;
                        std::array<iovec, 2> iov{{{a.data(), a.size()}, {b.data(), b.size()}}};
                        auto n = co_await p.server.read_some(std::span(iov));
                        REQUIRE(n);
                        REQUIRE(*n > 0);
                        append(a.data(), std::min(*n, a.size()));
                        if (*n > a.size()) append(b.data(), *n - a.size());
                        break;
                    }
                    case 3: {
                        CO_REQUIRE(co_await weft::with_timeout(p.server.wait_readable(), 5s));
                        std::array<char, 500> buf;
                        auto n = co_await p.server.read_some(buf);
                        REQUIRE(n);
                        REQUIRE(*n > 0);
                        append(buf.data(), *n);
                        break;
                    }
                    default: {
                        std::array<char, 50> buf;
                        std::size_t want = std::min(buf.size(), data.size() - got.size());
                        CO_REQUIRE(co_await p.server.read_exact(std::span(buf.data(), want)));
                        append(buf.data(), want);
                        break;
                    }
                }
            }
            auto eof = co_await p.server.receive();
            REQUIRE(eof);
            REQUIRE(eof->empty());
            co_return got;
        };
        auto [none, got] = co_await weft::when_all(writer(), reader());
        REQUIRE(got.size() == data.size());
        REQUIRE(got == data);
    }());
}

/// A receive() cancelled in every ordering against its data's arrival: nothing lost or
/// duplicated, every awaiter resumed once, and a cancelled receive's byte is still there
/// for the next read (in the socket, or in the backend's read-ahead).
template <class B>
void receive_cancel_race(typename B::options opts) {
    weft::loop<B> loop(opts);
    constexpr int rounds = 2'000;
    std::vector<unsigned char> received;
    int resumptions = 0, receives = 0, cancelled = 0;
    run_bounded(
        loop,
        [&]() -> weft::task<void> {
            auto p = co_await make_pair(loop);
            bool was_cancelled = false;
            auto receive_one = [&](std::stop_token token) -> weft::task<void> {
                ++receives;
                auto r = co_await weft::with_stop_token(p.server.receive(), token);
                ++resumptions;
                was_cancelled = !r && r.error() == std::errc::operation_canceled;
                if (r) {
                    for (std::byte b : r->bytes()) received.push_back(static_cast<unsigned char>(b));
                } else if (was_cancelled) {
                    ++cancelled;
                } else {
                    FAIL("receive failed: " << r.error().message());
                }
            };
            for (int i = 0; i < rounds; ++i) {
                const auto byte = static_cast<unsigned char>(i);
                std::stop_source src;
                auto send_and_cancel = [&, byte]() -> weft::task<void> {
                    if (i % 3 >= 1) (void)co_await weft::sleep_for(std::chrono::nanoseconds(0));
                    if (i % 3 == 2) src.request_stop();
                    if (!co_await p.client.write_all(std::span(&byte, 1))) FAIL("write failed");
                    src.request_stop();
                };
                co_await weft::when_all(receive_one(src.get_token()), send_and_cancel());
                if (was_cancelled) {
                    unsigned char left;
                    if (!co_await weft::with_timeout(p.server.read_exact(std::span(&left, 1)), 5s))
                        FAIL("the byte of a cancelled receive is missing");
                    received.push_back(left);
                }
            }
            (void)p.client.shutdown();
            for (;;) {
                auto lease = co_await p.server.receive();
                if (!lease || lease->empty()) break;
                for (std::byte b : lease->bytes()) received.push_back(static_cast<unsigned char>(b));
            }
        }(),
        120000ms);
    REQUIRE(resumptions == receives);
    REQUIRE(received.size() == static_cast<std::size_t>(rounds));
    for (int i = 0; i < rounds; ++i)
        if (received[static_cast<std::size_t>(i)] != static_cast<unsigned char>(i))
            FAIL("byte " << i << " out of order or duplicated");
    REQUIRE(cancelled > 0);
}

}  // namespace weft_test

// Shared test helpers: the backend list, bounded runs, connected socket pairs.
#pragma once

#include <catch2/catch.hpp>
#include <weft/weft.hpp>

#include <chrono>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

/// WEFT_TEST_BACKENDS, the backend types every behaviour test runs over, comes from
/// the one list in tests/CMakeLists.txt (WEFT_TEST_BACKEND_NAMES).
#ifndef WEFT_TEST_BACKENDS
#error "WEFT_TEST_BACKENDS is defined by tests/CMakeLists.txt"
#endif

/// Catch2 2 has no SKIP: a backend this process cannot use warns and returns.
#define WEFT_REQUIRE_BACKEND(B)                                                  \
    do {                                                                         \
        if (!B::available()) {                                                   \
            WARN(std::string(B::name) + " is not available here: test not run"); \
            return;                                                              \
        }                                                                        \
    } while (0)

/// The documented subset for `backend::blocking` (docs/io-models.md lists every test that
/// uses this): a test whose premise the thread-per-task model cannot meet says why and
/// returns on that backend.
#define WEFT_NOT_ON_BLOCKING(B, why)                                                          \
    do {                                                                                      \
        if constexpr (B::kind == weft::backend_kind::blocking) {                              \
            WARN("not run on " << B::name << ": " << why);                                    \
            return;                                                                           \
        }                                                                                     \
    } while (0)

/// Catch2 2's REQUIRE expands its argument twice (once in dead code), and g++ 12
/// mis-compiles a `co_await` there (it ran the operation again). Await first, then check.
#define CO_REQUIRE(...)                       \
    do {                                      \
        auto&& weft_awaited_ = (__VA_ARGS__); \
        REQUIRE(weft_awaited_);               \
    } while (0)
/// `REQUIRE_FALSE` for an awaited expression (see `CO_REQUIRE`).
#define CO_REQUIRE_FALSE(...)                 \
    do {                                      \
        auto&& weft_awaited_ = (__VA_ARGS__); \
        REQUIRE_FALSE(weft_awaited_);         \
    } while (0)

namespace weft_test {

using namespace std::chrono_literals;

/// Runs `t` on `loop`, failing the test (instead of hanging) if it takes longer than
/// `limit`. The task is cancelled through its stop token when the limit passes.
template <class B, class T>
T run_bounded(weft::loop<B>& loop, weft::task<T> t, std::chrono::milliseconds limit = 20000ms) {
    auto r = loop.run(weft::when_any(std::move(t), weft::sleep_for(limit)));
    if (r.index() != 0) FAIL("test exceeded its deadline of " << limit.count() << " ms");
    if constexpr (!std::is_void_v<T>) return std::get<0>(std::move(r));
}

/// Runs the loop until every spawned task has finished, failing the test after `limit`.
template <class B>
void run_until_idle(weft::loop<B>& loop, std::chrono::milliseconds limit = 20000ms) {
    auto deadline = weft::clock::now() + limit;
    while (loop.live_tasks() > 0) {
        if (weft::clock::now() > deadline) FAIL("spawned tasks still running after " << limit.count() << " ms");
        loop.run_once(100ms);
    }
}

/// A connected client/server pair over loopback TCP.
template <class B>
struct tcp_pair {
    weft::tcp_stream<B> client;
    weft::tcp_stream<B> server;
};

/// Connects a client to a fresh listener on 127.0.0.1 and accepts it.
template <class B>
weft::task<tcp_pair<B>> make_pair(weft::loop<B>& loop) {
    auto listener = weft::tcp_listener<B>::bind(loop, weft::endpoint::loopback_v4(0));
    REQUIRE(listener);
    auto ep = listener->local_endpoint();
    REQUIRE(ep);
    auto [client, server] = co_await weft::when_all(weft::tcp_stream<B>::connect(loop, *ep), listener->accept());
    REQUIRE(client);
    REQUIRE(server);
    co_return tcp_pair<B>{std::move(*client), std::move(*server)};
}

/// Deterministic pseudo-random bytes (a 64-bit LCG) so a failure can be replayed.
inline std::vector<char> pattern(std::size_t n, std::uint64_t seed = 1) {
    std::vector<char> v(n);
    for (auto& c : v) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        c = static_cast<char>(seed >> 56);
    }
    return v;
}

}  // namespace weft_test

// Counts heap allocations in this test binary (the global operator new is replaced in
// test_task.cpp), so tests can prove frames are freed once and hot paths allocate nothing.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>

#include "helpers.hpp"

namespace weft_test {
/// Allocations and deallocations made through the global operator new/delete.
struct alloc_counts {
    std::size_t allocs;
    std::size_t frees;
};
extern std::atomic<std::size_t> g_allocs;
extern std::atomic<std::size_t> g_frees;
inline alloc_counts alloc_snapshot() noexcept { return {g_allocs.load(), g_frees.load()}; }

/// Echoes 10,000 messages of 64 bytes through a server session `serve` (a capture-less
/// coroutine lambda taking the server's `tcp_stream<B>`), requires every echo to be
/// exact, and returns the heap allocations made after the first 1,000 messages: the hot
/// path's steady state, which should allocate nothing. Not after the first one: on
/// `backend::blocking` the harness's own deadline (`run_bounded`'s `sleep_for`) is a
/// thread whose start-up allocates (`condition_variable_any` takes a shared mutex), and
/// under load it can start several messages into the echo.
template <class B, class Serve>
std::size_t echo_allocations(Serve serve) {
    weft::loop<B> loop;
    std::size_t steady_allocs = 0;
    bool ok = true;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        loop.spawn(serve(std::move(p.server)));
        std::array<char, 64> out{}, in{};
        alloc_counts first{};
        for (int i = 0; i < 10'000; ++i) {
            out[0] = static_cast<char>(i);
            auto w = co_await p.client.write_all(out);
            auto r = co_await p.client.read_exact(in);
            ok = ok && w && r && in == out;
            if (i == 999) first = alloc_snapshot();  // after the first 1,000 messages
        }
        steady_allocs = alloc_snapshot().allocs - first.allocs;
    }());
    REQUIRE(ok);
    return steady_allocs;
}
}  // namespace weft_test

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
/// exact, and returns the heap allocations made after the first ten messages: the hot
/// path's steady state, which should allocate nothing. Ten, not one: on
/// `backend::blocking` the session is a thread of its own, which can still be finishing
/// its first round (a one-time registration after its first send) when the client has
/// the first echo; by the tenth echo it has long been through its loop.
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
            if (i == 9) first = alloc_snapshot();  // after the first ten messages
        }
        steady_allocs = alloc_snapshot().allocs - first.allocs;
    }());
    REQUIRE(ok);
    return steady_allocs;
}
}  // namespace weft_test

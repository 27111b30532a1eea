// Counts heap allocations in this test binary (the global operator new is replaced in
// test_task.cpp), so tests can prove frames are freed once and hot paths allocate nothing.
#pragma once

#include <atomic>
#include <cstddef>

namespace weft_test {
/// Allocations and deallocations made through the global operator new/delete.
struct alloc_counts {
    std::size_t allocs;
    std::size_t frees;
};
extern std::atomic<std::size_t> g_allocs;
extern std::atomic<std::size_t> g_frees;
inline alloc_counts alloc_snapshot() noexcept { return {g_allocs.load(), g_frees.load()}; }
}  // namespace weft_test

// Linked into echo_server_counting: replaces the global operator new with one that
// counts, and prints the count of the whole run as "allocations=N" when the program
// exits. The runner serves two fixed message counts, each from a fresh server, and
// divides the difference of the counts by the difference of the messages, so start-up,
// accepts and teardown cancel and what is left is allocations per message.
//
// A translation unit of its own: when the replacement is visible where a `new` is
// inlined, g++ 12 takes its malloc/free for a mismatched pair (-Wmismatched-new-delete).
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <new>

namespace {
/// Every allocation through operator new in the process: weft's and the library's.
std::atomic<unsigned long long> g_allocations{0};

/// Prints the count after main() returns (static destruction of this TU's object).
struct report_at_exit {
    ~report_at_exit() {
        std::printf("allocations=%llu\n", g_allocations.load());
        std::fflush(stdout);
    }
} g_report;
}  // namespace

void* operator new(std::size_t n) {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return ::operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
    return std::malloc(n ? n : 1);
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return ::operator new(n, t); }
void* operator new(std::size_t n, std::align_val_t a) {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
    auto al = static_cast<std::size_t>(a);
    if (void* p = std::aligned_alloc(al, (n + al - 1) / al * al)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) { return ::operator new(n, a); }
// Every form of delete ends in the plain one: all the news above take from malloc.
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { ::operator delete(p); }
void operator delete(void* p, std::size_t) noexcept { ::operator delete(p); }
void operator delete[](void* p, std::size_t) noexcept { ::operator delete(p); }
void operator delete(void* p, std::align_val_t) noexcept { ::operator delete(p); }
void operator delete[](void* p, std::align_val_t) noexcept { ::operator delete(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { ::operator delete(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { ::operator delete(p); }

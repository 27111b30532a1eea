// SPDX-License-Identifier: MIT
/// @file
/// @brief Trace mode: what each backend does for each `co_await`, as lines of text.
///
/// Compiled in only when the whole program is built with `WEFT_TRACE=1` (define it for
/// every translation unit, or inline functions would differ between them). Off, the
/// default, every trace point is a macro that expands to nothing: no code, no strings,
/// no branch (tests/examples/trace_check.py checks that an ordinary build's binary has
/// none of the trace's text).
///
/// On, each backend reports its model's steps. The readiness backends: the syscalls
/// (`recv(fd 7, 16384) -> EAGAIN`), parking (`park fd 7 read`), registration
/// (`epoll_ctl ADD fd 7 in`), the wait (`epoll_pwait2 -> 1 ready`) and the readiness that
/// resumes a task (`ready fd 7 read`); `sigio` the signal it dequeued; `spin` its
/// passes. `uring`: each submission (`sqe recv fd 7 len 16384`), the submit-and-wait
/// (`submit_and_wait -> 1`) and each completion (`cqe res 64`). `blocking`: the same
/// syscalls, each line tagged with the thread that made it (`[t2]`). Every line starts
/// with the thread's tag: `[t1]` is the first thread that traced.
///
/// Lines go to the sink set with `weft::trace::set_sink` (from any thread: it must be
/// thread-safe, `blocking` traces from its task threads), or to stderr.
/// `examples/trace_models` runs one request and answer on every backend and prints the
/// traces side by side; `docs/io-models.md` quotes them.
#pragma once

#ifndef WEFT_TRACE
/// 1 compiles trace mode in (see `trace.hpp`); 0, the default, compiles it away.
#define WEFT_TRACE 0
#endif

#include <string_view>

#if WEFT_TRACE
#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#endif

namespace weft::trace {

/// True when the program is built with `WEFT_TRACE=1`.
inline constexpr bool enabled = WEFT_TRACE != 0;

/// Receives one trace line (no newline) and the context given to `set_sink`.
using sink_fn = void (*)(void* context, std::string_view line) noexcept;

#if WEFT_TRACE
namespace detail {
inline std::atomic<sink_fn> sink{nullptr};
inline std::atomic<void*> sink_context{nullptr};
inline std::atomic<unsigned> next_thread{1};

/// This thread's tag number, given on its first trace line.
inline unsigned thread_number() noexcept {
    thread_local unsigned n = next_thread.fetch_add(1, std::memory_order_relaxed);
    return n;
}

/// Formats one line (printf-style) with the thread's tag and hands it to the sink.
[[gnu::format(printf, 1, 2)]] inline void emit(const char* format, ...) noexcept {
    char line[256];
    int used = std::snprintf(line, sizeof line, "[t%u] ", thread_number());
    va_list args;
    va_start(args, format);
    int n = std::vsnprintf(line + used, sizeof line - static_cast<std::size_t>(used), format, args);
    va_end(args);
    std::size_t len = static_cast<std::size_t>(used + (n < 0 ? 0 : n));
    if (len > sizeof line - 1) len = sizeof line - 1;  // truncated
    if (sink_fn s = sink.load(std::memory_order_acquire))
        s(sink_context.load(std::memory_order_acquire), std::string_view(line, len));
    else
        std::fprintf(stderr, "weft: %.*s\n", static_cast<int>(len), line);
}

/// A syscall's result as trace text: the number, or the errno's name (`EAGAIN`).
struct result_text {
    char text[32];
    explicit result_text(long r) noexcept {
        if (r >= 0) {
            std::snprintf(text, sizeof text, "%ld", r);
        } else if (const char* name = ::strerrorname_np(static_cast<int>(-r))) {
            std::snprintf(text, sizeof text, "%s", name);
        } else {
            std::snprintf(text, sizeof text, "errno %ld", -r);
        }
    }
};

/// A wait's timeout as trace text: "forever", or milliseconds.
struct timeout_text {
    char text[32];
    template <class Rep, class Period>
    explicit timeout_text(std::chrono::duration<Rep, Period> d) noexcept {
        if (d == std::chrono::duration<Rep, Period>::max())
            std::snprintf(text, sizeof text, "forever");
        else
            std::snprintf(text, sizeof text, "%.3g ms", std::chrono::duration<double, std::milli>(d).count());
    }
};
}  // namespace detail

/// Sends every later trace line to `sink` (with `context`), or to stderr with nullptr.
/// Threads that trace for the first time after this call are numbered from the
/// caller's tag + 1, so runs traced one after another number their new threads alike.
inline void set_sink(sink_fn sink, void* context = nullptr) noexcept {
    detail::sink_context.store(context, std::memory_order_release);
    detail::sink.store(sink, std::memory_order_release);
    unsigned mine = detail::thread_number();
    detail::next_thread.store(mine + 1, std::memory_order_relaxed);
}
#else
/// Trace mode is compiled out (`WEFT_TRACE` is 0): nothing to send anywhere.
inline void set_sink(sink_fn, void* = nullptr) noexcept {}
#endif

}  // namespace weft::trace

#if WEFT_TRACE
/// One trace line, printf-style (compiled away unless `WEFT_TRACE` is 1).
#define WEFT_TRACE_LINE(...) ::weft::trace::detail::emit(__VA_ARGS__)
/// A syscall's result as a `const char*` for a trace line: the number or the errno's name.
#define WEFT_TRACE_RES(r) (::weft::trace::detail::result_text(static_cast<long>(r)).text)
/// A wait's timeout (a `std::chrono::duration`; `max()` = none) for a trace line.
#define WEFT_TRACE_TIMEOUT(d) (::weft::trace::detail::timeout_text(d).text)
#else
/// Trace mode off: a trace line is nothing (its arguments are not even evaluated).
#define WEFT_TRACE_LINE(...) ((void)0)
/// Trace mode off: no result text.
#define WEFT_TRACE_RES(r) ""
/// Trace mode off: no timeout text.
#define WEFT_TRACE_TIMEOUT(d) ""
#endif

// SPDX-License-Identifier: MIT
/// @file
/// @brief `task<T>`: the lazy, move-only coroutine type of weft.
#pragma once

#include <cassert>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <new>
#include <type_traits>
#include <utility>
#include <variant>

#include "core.hpp"

/// @def WEFT_ASAN
/// 1 when compiled with AddressSanitizer (g++ or clang), else 0: the frame cache then
/// poisons the blocks it keeps, so a use of a destroyed frame is still reported.
#if defined(__SANITIZE_ADDRESS__)
#define WEFT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WEFT_ASAN 1
#endif
#endif
#ifndef WEFT_ASAN
#define WEFT_ASAN 0
#endif
#if WEFT_ASAN
#include <sanitizer/asan_interface.h>
#endif

namespace weft {

template <class T = void>
class task;

namespace detail {

/// A one-block recycler for task frames, so that a call made over and over (a reader's
/// `read_line`) allocates its frame once instead of once per call.
///
/// A coroutine opts in by taking a `frame_arena&` as its first parameter after the
/// object: for a member coroutine, its first parameter; for a free one, its second.
/// Its frame then comes from that arena's block when the block is free and big enough;
/// a free block that is too small is replaced by a bigger one (never shrunk, so
/// alternating calls of different frame sizes settle after one round); when the block
/// is in use (two calls in flight) the frame comes from the global heap. Opting in is
/// explicit, not "whatever owns an arena", so that a user coroutine taking the owner by
/// reference (`task<void> serve(buffered_reader<S>& r)`) does not occupy the block for
/// its whole life and push every call it makes onto the heap.
///
/// The arena must outlive every frame it handed out. Not thread-safe: an arena serves
/// one task at a time (a stream allows one reader at a time anyway).
///
/// g++ 12 reports a frame from the arena overload as "mismatched" with the promise's
/// `operator delete` (-Wmismatched-new-delete, a false positive for templated
/// `operator new`, PR 109224, fixed in g++ 13): opting-in coroutines are defined with
/// that warning switched off (see `net/buffered.hpp`).
class frame_arena {
public:
    /// An arena with no block yet (the first frame allocates it).
    frame_arena() noexcept = default;
    /// Takes over `o`'s block; `o` must have no frame out.
    frame_arena(frame_arena&& o) noexcept : block_(std::exchange(o.block_, nullptr)), size_(std::exchange(o.size_, 0)) {
        assert(!o.busy_);
    }
    /// Frees the current block and takes over `o`'s; neither may have a frame out.
    frame_arena& operator=(frame_arena&& o) noexcept {
        if (this != &o) {
            assert(!busy_ && !o.busy_);
            free_block();
            block_ = std::exchange(o.block_, nullptr);
            size_ = std::exchange(o.size_, 0);
        }
        return *this;
    }
    frame_arena(const frame_arena&) = delete;
    frame_arena& operator=(const frame_arena&) = delete;
    /// Frees the block (no frame may be out).
    ~frame_arena() {
        assert(!busy_);
        free_block();
    }

    /// `n` bytes from the block, or nullptr when the block is in use; throws
    /// `std::bad_alloc` when a bigger block cannot be had.
    void* allocate(std::size_t n) {
        if (busy_) return nullptr;
        if (n > size_) {
            void* bigger = ::operator new(n);
            free_block();
            block_ = bigger;
            size_ = n;
        }
        busy_ = true;
        return block_;
    }
    /// Takes back the block `allocate` handed out.
    void deallocate([[maybe_unused]] void* p) noexcept {
        assert(busy_ && p == block_);
        busy_ = false;
    }

private:
    void free_block() noexcept {
        if (!block_) return;
#if __cpp_sized_deallocation
        ::operator delete(block_, size_);
#else
        ::operator delete(block_);
#endif
    }
    void* block_ = nullptr;
    std::size_t size_ = 0;
    bool busy_ = false;
};

/// Recycled coroutine-frame blocks, one cache per thread, so that a combinator or a
/// task called per request (`with_timeout`, `when_any`, a handler coroutine) allocates
/// its frames only until the cache holds enough blocks of their sizes: the steady state
/// of a server allocates nothing per operation.
///
/// Blocks are grouped in size classes of 64 bytes up to 1 KiB; each class keeps at most
/// 64 free blocks, so a thread holds at most 544 KiB (a burst's excess goes back to the
/// heap). A block freed on another thread than the one that allocated it (thread per
/// task) joins that thread's cache: the blocks are plain `operator new` memory. Under
/// AddressSanitizer a cached block is poisoned, so a use after a frame's destruction is
/// still reported.
class frame_cache {
public:
    /// Block granularity and the largest cached size.
    static constexpr std::size_t granule = 64;
    static constexpr std::size_t classes = 16;
    static constexpr std::size_t max_per_class = 64;

    /// Blocks handed out and taken back on this thread, and blocks cached here (tests
    /// check frames are freed exactly once with these: cached frees do not reach the heap).
    struct stats {
        std::size_t handed_out, taken_back, cached;
    };
    /// This thread's counts.
    static stats thread_stats() noexcept {
        const frame_cache& self = local();
        std::size_t cached = 0;
        for (std::size_t c = 0; c < classes; ++c) cached += self.count_[c];
        return {self.handed_out_, self.taken_back_, cached};
    }

    /// A block of at least `n` bytes.
    static void* allocate(std::size_t n) {
        const std::size_t c = class_of(n);
        frame_cache& self = local();
        ++self.handed_out_;
        if (c < classes) {
            if (!self.closed_) {
                if (node* b = self.free_[c]) {
                    unpoison(b, (c + 1) * granule);
                    self.free_[c] = b->next;
                    --self.count_[c];
                    return b;
                }
            }
            return ::operator new((c + 1) * granule);
        }
        return ::operator new(n);
    }
    /// Takes back a block `allocate(n)` returned.
    static void deallocate(void* p, std::size_t n) noexcept {
        const std::size_t c = class_of(n);
        frame_cache& self = local();
        ++self.taken_back_;
        if (c < classes) {
            if (!self.closed_ && self.count_[c] < max_per_class) {
                node* b = ::new (p) node{self.free_[c]};
                self.free_[c] = b;
                ++self.count_[c];
                poison(b, (c + 1) * granule);
                return;
            }
            sized_delete(p, (c + 1) * granule);
            return;
        }
        sized_delete(p, n);
    }

    /// Frees the thread's cached blocks (at thread exit); later frees go to the heap.
    ~frame_cache() {
        closed_ = true;
        for (std::size_t c = 0; c < classes; ++c) {
            while (node* b = free_[c]) {
                unpoison(b, (c + 1) * granule);
                free_[c] = b->next;
                sized_delete(b, (c + 1) * granule);
            }
        }
    }

private:
    struct node {
        node* next;
    };
    constexpr frame_cache() noexcept = default;
    static std::size_t class_of(std::size_t n) noexcept { return (n - 1) / granule; }
    static frame_cache& local() noexcept {
        static thread_local frame_cache cache;
        return cache;
    }
    static void sized_delete(void* p, [[maybe_unused]] std::size_t n) noexcept {
#if __cpp_sized_deallocation
        ::operator delete(p, n);
#else
        ::operator delete(p);
#endif
    }
    static void poison([[maybe_unused]] void* p, [[maybe_unused]] std::size_t n) noexcept {
#if WEFT_ASAN
        // The link stays readable; the rest of the block is off limits until reused.
        __asan_poison_memory_region(static_cast<std::byte*>(p) + sizeof(node), n - sizeof(node));
#endif
    }
    static void unpoison([[maybe_unused]] void* p, [[maybe_unused]] std::size_t n) noexcept {
#if WEFT_ASAN
        __asan_unpoison_memory_region(p, n);
#endif
    }

    node* free_[classes] = {};
    std::uint8_t count_[classes] = {};
    bool closed_ = false;
    std::size_t handed_out_ = 0;
    std::size_t taken_back_ = 0;
};

/// A base for the promises of weft's internal coroutines (spawn frames, combinator
/// children): their frames come from the thread's `frame_cache`, so none is allocated
/// per use once warm. (Tasks add a header for `frame_arena`: `task_promise_base`.)
struct frame_cached {
    /// A frame from the cache.
    [[gnu::always_inline]] static void* operator new(std::size_t n) { return frame_cache::allocate(n); }
    /// Back to the cache.
    [[gnu::always_inline]] static void operator delete(void* p, std::size_t n) noexcept {
        frame_cache::deallocate(p, n);
    }
};

/// The part of a task's promise that does not depend on `T`.
class task_promise_base {
public:
    /// A frame of a coroutine that opts into `arena` (see `frame_arena`): from the
    /// arena's block, or from the global heap when the block is in use.
    template <class Self, class... Rest>
    static void* operator new(std::size_t n, Self&, frame_arena& arena, Rest&...) {
        if (void* block = arena.allocate(header_size + n)) return with_header(block, &arena);
        return operator new(n);
    }
    /// A frame from the global heap (every other coroutine).
    ///
    /// Both this and `operator delete` are always inlined: g++ 12 tracks the pointer from
    /// the global `operator new` and calls it "mismatched" (-Wmismatched-new-delete) when
    /// only one of the pair is inlined, which its heuristics decide per call site.
    [[gnu::always_inline]] static void* operator new(std::size_t n) {
        return with_header(frame_cache::allocate(header_size + n), nullptr);
    }
    /// Gives a frame back to where it came from, which its header records: the global
    /// `operator delete` sees exactly the pointer and size that `operator new` returned.
    [[gnu::always_inline]] static void operator delete(void* frame, std::size_t n) noexcept {
        void* block = static_cast<std::byte*>(frame) - header_size;
        if (frame_arena* arena = std::launder(static_cast<frame_header*>(block))->arena) {
            arena->deallocate(block);
            return;
        }
        frame_cache::deallocate(block, header_size + n);
    }

    /// What this task inherits from its awaiter: its loop and stop token.
    task_env env;

    /// Lazy: the body starts only when the task is awaited (or run/spawned).
    std::suspend_always initial_suspend() const noexcept { return {}; }

    /// At the end: a task that finished while its awaiter was still starting it returns
    /// to that awaiter's `await_suspend` (which then lets the awaiter continue without
    /// suspending); a task that had suspended transfers control to its awaiter
    /// (symmetric transfer).
    struct final_awaiter {
        bool await_ready() const noexcept { return false; }
        template <class P>
        std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) const noexcept {
            task_promise_base& p = h.promise();
            if (p.start_ == start_state::inline_running) {
                p.start_ = start_state::inline_done;
                return std::noop_coroutine();
            }
            if (p.away_) [[unlikely]]  // moved to another loop (switch_to): the awaiter is at home
                return p.go_home();
            return p.continuation_ ? p.continuation_ : std::noop_coroutine();
        }
        void await_resume() const noexcept {}
    };
    final_awaiter final_suspend() const noexcept { return {}; }

    void set_continuation(std::coroutine_handle<> c) noexcept { continuation_ = c; }

    task_promise_base() noexcept = default;
    task_promise_base(const task_promise_base&) = delete;
    task_promise_base& operator=(const task_promise_base&) = delete;
    ~task_promise_base() {
        if (away_) {  // a frame destroyed while its way home is queued there takes it out
            // (Still in home's inbox: only at a runtime's teardown, when every loop is
            // stopped and frames are destroyed one loop at a time, so home is idle.)
            if (away_->sent && !away_->delivered) away_->home->collect_inbox();
            away_->home->unqueue(*away_);
            delete away_;
        }
    }

    /// `switch_to` moves this task to `target`: its later operations run there, and when
    /// it ends its awaiter is resumed back on the loop it started on. Its stop token is
    /// dropped, since the source that backs it is requested on the old loop's thread,
    /// whose callbacks must not touch the new loop. Throws `std::bad_alloc` (the first
    /// move allocates the record of the way home).
    void moved_to(loop_core* target) {
        if (!away_) {
            away_ = new homeward;
            away_->home = env.loop;
        }
        env.loop = target;
        env.token = {};
    }

private:
    /// Final suspension of a task that moved: its awaiter is resumed on the home loop.
    /// The hand-over is left to the loop running this task, once this resumption has
    /// returned (`loop_core::send_later`): sent from here, the home loop could resume the
    /// awaiter, and destroy this frame, while this thread is still suspending it. (If
    /// home refuses it, home is torn down, and its teardown destroys the awaiter.)
    std::coroutine_handle<> go_home() noexcept {
        if (env.loop == away_->home || !continuation_) return continuation_ ? continuation_ : std::noop_coroutine();
        away_->continuation = continuation_;
        away_->res = 0;
        away_->send = {away_, away_->home, nullptr, nullptr, nullptr};
        away_->sent = true;
        away_->delivered = false;
        env.loop->send_later(away_->send);
        return std::noop_coroutine();
    }

public:
    /// Runs the body until it first suspends or ends; true if it ended.
    ///
    /// Why not only symmetric transfer: g++ turns the transfer into a tail call only at
    /// -O2 and never under ASan, so a loop over synchronously completing tasks would
    /// grow the stack by two frames per iteration in debug and sanitizer builds. Running
    /// the child inline and continuing the awaiter without suspending keeps such loops
    /// flat with every compiler and flag.
    bool start_inline(std::coroutine_handle<> self) noexcept {
        start_ = start_state::inline_running;
        self.resume();
        if (start_ == start_state::inline_done) return true;
        start_ = start_state::suspended;
        return false;
    }

private:
    /// In front of every frame: where it came from (nullptr: the global heap). Padded to
    /// the default new alignment so that the frame keeps that alignment.
    struct frame_header {
        frame_arena* arena;
    };
    static constexpr std::size_t header_size = __STDCPP_DEFAULT_NEW_ALIGNMENT__;
    static_assert(sizeof(frame_header) <= header_size);
    static void* with_header(void* block, frame_arena* arena) noexcept {
        ::new (block) frame_header{arena};
        return static_cast<std::byte*>(block) + header_size;
    }

    enum class start_state : std::uint8_t { lazy, inline_running, inline_done, suspended };
    std::coroutine_handle<> continuation_{};
    homeward* away_ = nullptr;  ///< set once the task has moved to another loop (switch_to)
    start_state start_ = start_state::lazy;
};

/// Promise of `task<T>`: stores the value or the exception for the awaiter.
template <class T>
class task_promise : public task_promise_base {
public:
    task<T> get_return_object() noexcept;
    template <class U>
    requires std::is_convertible_v<U&&, T>
    void return_value(U&& v) noexcept(std::is_nothrow_constructible_v<T, U&&>) {
        value_.template emplace<1>(std::forward<U>(v));
    }
    void unhandled_exception() noexcept { value_.template emplace<2>(std::current_exception()); }
    T take() {
        if (value_.index() == 2) std::rethrow_exception(std::get<2>(value_));
        assert(value_.index() == 1);
        return std::move(std::get<1>(value_));
    }

private:
    std::variant<std::monostate, T, std::exception_ptr> value_;
};

/// Promise of `task<void>`.
template <>
class task_promise<void> : public task_promise_base {
public:
    task<void> get_return_object() noexcept;
    void return_void() const noexcept {}
    void unhandled_exception() noexcept { error_ = std::current_exception(); }
    void take() {
        if (error_) std::rethrow_exception(error_);
    }

private:
    std::exception_ptr error_;
};

}  // namespace detail

/// A lazily started coroutine that produces a `T` (or throws) when awaited.
///
/// Move-only; owns its frame and destroys it exactly once. Awaiting a task starts
/// it and hands it the awaiter's loop and stop token. A task that completes
/// synchronously lets its awaiter continue without suspending, so a loop over such
/// tasks never grows the stack (in any build mode); one that suspended resumes its
/// awaiter through symmetric transfer. An exception escaping the body is rethrown to
/// the awaiter.
template <class T>
class [[nodiscard("a task does nothing until it is awaited: is a co_await missing?")]] task {
public:
    static_assert(!std::is_reference_v<T>, "task<T&> is not supported; return a pointer or std::reference_wrapper");
    /// The coroutine promise type (used by the compiler).
    using promise_type = detail::task_promise<T>;
    /// The type `co_await` yields.
    using value_type = T;

    /// An empty task (not awaitable).
    task() noexcept = default;
    /// Takes ownership of `h`'s frame.
    explicit task(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
    /// Moves the frame ownership; `o` becomes empty.
    task(task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
    /// Destroys the current frame (if any) and takes `o`'s.
    task& operator=(task&& o) noexcept {
        if (this != &o) {
            if (h_) h_.destroy();
            h_ = std::exchange(o.h_, {});
        }
        return *this;
    }
    task(const task&) = delete;
    task& operator=(const task&) = delete;
    /// Destroys the frame, if this task still owns one.
    ~task() {
        if (h_) h_.destroy();
    }

    /// True if this task owns a frame. Deliberately not `operator bool`: with one,
    /// `auto c = connect(...); if (!c)` (a forgotten `co_await`) would compile and test
    /// the task instead of the connection's result.
    bool valid() const noexcept { return static_cast<bool>(h_); }
    /// A task is not a truth value (see `valid()`): testing one is a missing `co_await`.
    explicit operator bool() const = delete;
    /// True once the body has finished (returned or thrown).
    bool done() const noexcept { return h_ && h_.done(); }

    /// The awaiter returned by `co_await task`.
    struct awaiter {
        std::coroutine_handle<promise_type> h;  ///< the awaited task's frame
        /// A finished (or empty) task needs no suspension.
        bool await_ready() const noexcept { return !h || h.done(); }
        /// Starts the task, passing down the awaiter's loop and stop token; does not
        /// suspend the awaiter if the task completes synchronously.
        template <class P>
        bool await_suspend(std::coroutine_handle<P> parent) noexcept {
            h.promise().set_continuation(parent);
            if constexpr (detail::has_env<P>) h.promise().env = parent.promise().env;
            return !h.promise().start_inline(h);
        }
        /// The task's value, or its exception rethrown.
        T await_resume() { return h.promise().take(); }
    };
    /// Starts the task and waits for its value.
    awaiter operator co_await() & noexcept { return {h_}; }
    /// Starts the task and waits for its value.
    awaiter operator co_await() && noexcept { return {h_}; }

    /// The frame handle, still owned by this task (for loops and combinators).
    std::coroutine_handle<promise_type> handle() const noexcept { return h_; }
    /// Gives up ownership of the frame.
    std::coroutine_handle<promise_type> release() noexcept { return std::exchange(h_, {}); }

private:
    std::coroutine_handle<promise_type> h_{};
};

namespace detail {
template <class T>
task<T> task_promise<T>::get_return_object() noexcept {
    return task<T>(std::coroutine_handle<task_promise<T>>::from_promise(*this));
}
inline task<void> task_promise<void>::get_return_object() noexcept {
    return task<void>(std::coroutine_handle<task_promise<void>>::from_promise(*this));
}

/// Awaitable that copies the current task's environment into `out` without suspending.
///
/// It writes through a reference so that the awaiter stays trivially destructible:
/// g++ 12 can destroy an aggregate `co_await` operand with non-trivial members twice
/// (see `join_awaiter`).
struct read_env {
    task_env& out;
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        out = env_of(h);
        return false;
    }
    void await_resume() const noexcept {}
};

template <class A>
concept has_member_co_await = requires(A&& a) {
    std::forward<A>(a).operator co_await();
};

template <class A>
decltype(auto) get_awaiter(A&& a) {
    if constexpr (has_member_co_await<A>)
        return std::forward<A>(a).operator co_await();
    else
        return std::forward<A>(a);
}

/// The type `co_await a` produces for an awaitable `A` (awaiter or awaitable).
template <class A>
using awaited_t = decltype(get_awaiter(std::declval<A>()).await_resume());

}  // namespace detail
}  // namespace weft

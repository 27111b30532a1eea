// SPDX-License-Identifier: MIT
/// @file
/// @brief `task<T>`: the lazy, move-only coroutine type of weft.
#pragma once

#include <cassert>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <type_traits>
#include <utility>
#include <variant>

#include "core.hpp"

namespace weft {

template <class T = void>
class task;

namespace detail {

/// The part of a task's promise that does not depend on `T`.
class task_promise_base {
public:
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
            return p.continuation_ ? p.continuation_ : std::noop_coroutine();
        }
        void await_resume() const noexcept {}
    };
    final_awaiter final_suspend() const noexcept { return {}; }

    void set_continuation(std::coroutine_handle<> c) noexcept { continuation_ = c; }

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
    enum class start_state : std::uint8_t { lazy, inline_running, inline_done, suspended };
    std::coroutine_handle<> continuation_{};
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
class [[nodiscard]] task {
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

    /// True if this task owns a frame.
    explicit operator bool() const noexcept { return static_cast<bool>(h_); }
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

// SPDX-License-Identifier: MIT
/// @file
/// @brief Cancellation and combinators: `with_stop_token`, `with_timeout`, `when_any`, `when_all`.
///
/// Cancellation travels with the task environment: every task inherits the stop token of
/// whoever awaits it, and every IO operation and timer it awaits watches that token. A
/// cancelled operation completes once, with `std::errc::operation_canceled`, and never
/// touches its buffer after that. Stop requests must be made on the loop's thread (from
/// another thread, `post()` the `request_stop()`): the callbacks they run touch the loop.
#pragma once

#include <array>
#include <cstddef>
#include <exception>
#include <optional>
#include <stop_token>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>

#include "core.hpp"
#include "result.hpp"
#include "task.hpp"
#include "timer.hpp"

namespace weft {
namespace detail {

/// Counts the children of a join; the last one to finish resumes the parent.
struct join_counter {
    std::size_t remaining = 0;
    std::coroutine_handle<> parent;
};

/// A child coroutine of a join: runs with the join's environment and reports to its counter.
struct join_child {
    struct promise_type : frame_cached {
        task_env env;
        join_counter* counter = nullptr;
        stop_source* stop_on_error = nullptr;  ///< siblings are cancelled when this child throws
        std::exception_ptr error;

        join_child get_return_object() noexcept { return {std::coroutine_handle<promise_type>::from_promise(*this)}; }
        std::suspend_always initial_suspend() const noexcept { return {}; }
        struct final_awaiter {
            bool await_ready() const noexcept { return false; }
            std::coroutine_handle<> await_suspend(std::coroutine_handle<promise_type> h) const noexcept {
                join_counter* c = h.promise().counter;
                if (!c) return std::noop_coroutine();  // thread per task: the parent joins the thread
                return --c->remaining == 0 ? c->parent : std::noop_coroutine();
            }
            void await_resume() const noexcept {}
        };
        final_awaiter final_suspend() const noexcept { return {}; }
        void return_void() const noexcept {}
        void unhandled_exception() noexcept {
            error = std::current_exception();
            if (stop_on_error) stop_on_error->request_stop();
        }
    };

    join_child(std::coroutine_handle<promise_type> h) noexcept : h(h) {}
    join_child(join_child&& o) noexcept : h(std::exchange(o.h, {})) {}
    join_child& operator=(join_child&&) = delete;
    ~join_child() {
        if (h) h.destroy();
    }
    std::coroutine_handle<promise_type> h;
};

/// Awaits `a` and hands its value (std::monostate for void) to `sink`.
template <class A, class Sink>
join_child make_child(A a, Sink sink) {
    if constexpr (std::is_void_v<awaited_t<A>>) {
        co_await std::move(a);
        sink(std::monostate{});
    } else {
        sink(co_await std::move(a));
    }
}

/// Starts every child with environment `env` and resumes the awaiter when all have finished.
///
/// Holds the environment by pointer: g++ 12 destroyed an aggregate `co_await` operand
/// holding a `std::stop_token` twice (ASan: the stop state released twice), so the
/// awaiters built inline in combinators stay trivially destructible.
/// If a child throws, `stop` (when given) is requested so the siblings end promptly.
template <std::size_t N>
struct join_awaiter {
    join_child* children;
    const task_env* env;
    stop_source* stop = nullptr;
    join_counter counter{};

    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> parent) noexcept {
        if (env->loop && env->loop->threaded()) {
            run_on_threads();
            return false;
        }
        counter.parent = parent;
        counter.remaining = N + 1;  // our own reference: no child can resume the parent early
        for (std::size_t i = 0; i < N; ++i) {
            auto& p = children[i].h.promise();
            p.env = *env;
            p.counter = &counter;
            p.stop_on_error = stop;
            children[i].h.resume();
        }
        return --counter.remaining != 0;
    }
    void await_resume() const {
        for (std::size_t i = 0; i < N; ++i)
            if (children[i].h.promise().error) std::rethrow_exception(children[i].h.promise().error);
    }

private:
    /// Thread per task (`backend::blocking`): operations block, so concurrency takes
    /// threads. The first child runs on this thread, each other one on a thread of its
    /// own; all are joined before the parent goes on (on this thread). A thread that
    /// cannot be created counts as that child throwing: the siblings are stopped.
    void run_on_threads() noexcept {
        std::array<std::thread, N> threads;
        for (std::size_t i = 0; i < N; ++i) {
            auto& p = children[i].h.promise();
            p.env = *env;
            p.counter = nullptr;
            p.stop_on_error = stop;
        }
        for (std::size_t i = 1; i < N; ++i) {
            try {
                threads[i] = std::thread([h = children[i].h] { h.resume(); });
            } catch (...) {
                children[i].h.promise().error = std::current_exception();
                if (stop) stop->request_stop();
            }
        }
        children[0].h.resume();
        for (auto& t : threads)
            if (t.joinable()) t.join();
    }
};

/// The value type a child produces inside a combinator's result.
template <class A>
using child_value_t = std::conditional_t<std::is_void_v<awaited_t<A>>, std::monostate, awaited_t<A>>;

/// A stop source that follows `parent`: stopping the parent stops it too. In place, like
/// its callback: a combinator allocates nothing for its cancellation.
struct linked_stop_source {
    stop_source source;
    stop_callback<request_stop_on> link;
    explicit linked_stop_source(const stop_token& parent) noexcept : link(parent, request_stop_on{&source}) {}
};

}  // namespace detail

/// Something `co_await` accepts: an awaiter, or a type with `operator co_await` (a
/// `task`, an IO operation, a timer).
template <class A>
concept awaitable = requires {
    typename detail::awaited_t<A>;
};

namespace detail {
template <class T>
struct is_result : std::false_type {};
template <class T>
struct is_result<result<T>> : std::true_type {};
}  // namespace detail

/// An awaitable whose value is a `result<T>` (every IO operation, timer and lookup):
/// what `with_timeout` can turn into `timed_out`.
template <class A>
concept result_awaitable = awaitable<A> && detail::is_result<std::remove_cvref_t<detail::awaited_t<A>>>::value;

/// Awaits `a` with `token` (in addition to the current task's own token) as its stop token.
template <awaitable A>
task<detail::awaited_t<A>> with_stop_token(A a, std::stop_token token) {
    detail::task_env env;
    co_await detail::read_env{env};
    detail::linked_stop_source outer(env.token);
    std::stop_callback<detail::request_stop_on> inner(std::move(token), detail::request_stop_on{&outer.source});
    std::optional<detail::child_value_t<A>> value;
    detail::join_child child = detail::make_child(std::move(a), [&](auto&& v) { value.emplace(std::move(v)); });
    detail::task_env child_env{env.loop, outer.source.get_token()};
    co_await detail::join_awaiter<1>{&child, &child_env};
    if constexpr (!std::is_void_v<detail::awaited_t<A>>) co_return std::move(*value);
}

/// Runs all of `as` concurrently on the current loop and returns their values in order
/// (`std::monostate` for void ones). If one throws, the others are cancelled; all are
/// waited for, then the first exception is rethrown.
template <awaitable... As>
task<std::tuple<detail::child_value_t<As>...>> when_all(As... as) {
    detail::task_env env;
    co_await detail::read_env{env};
    detail::linked_stop_source stop(env.token);
    std::tuple<std::optional<detail::child_value_t<As>>...> values;
    auto make = [&]<std::size_t... I>(std::index_sequence<I...>) {
        return std::array<detail::join_child, sizeof...(As)>{
            detail::make_child(std::move(as), [&values](auto&& v) { std::get<I>(values).emplace(std::move(v)); })...};
    };
    auto children = make(std::index_sequence_for<As...>{});
    detail::task_env child_env{env.loop, stop.source.get_token()};
    co_await detail::join_awaiter<sizeof...(As)>{children.data(), &child_env, &stop.source};
    co_return std::apply([](auto&... v) { return std::tuple<detail::child_value_t<As>...>(std::move(*v)...); }, values);
}

/// Runs all of `as` concurrently and returns the value of the first to finish (its
/// index is the variant's `index()`). The others are cancelled through their stop
/// token, and `when_any` waits for them to complete before it returns, so no operation
/// outlives it.
template <awaitable... As>
task<std::variant<detail::child_value_t<As>...>> when_any(As... as) {
    detail::task_env env;
    co_await detail::read_env{env};
    detail::linked_stop_source stop(env.token);
    std::optional<std::variant<detail::child_value_t<As>...>> winner;
    auto make = [&]<std::size_t... I>(std::index_sequence<I...>) {
        return std::array<detail::join_child, sizeof...(As)>{
            detail::make_child(std::move(as), [&winner, &stop](auto&& v) {
                if (winner) return;
                winner.emplace(std::in_place_index<I>, std::move(v));
                stop.source.request_stop();
            })...};
    };
    auto children = make(std::index_sequence_for<As...>{});
    detail::task_env child_env{env.loop, stop.source.get_token()};
    co_await detail::join_awaiter<sizeof...(As)>{children.data(), &child_env, &stop.source};
    co_return std::move(*winner);
}

/// Awaits `a` (whose value is a `result<T>`) for at most `d`.
///
/// Yields `a`'s result, or `std::errc::timed_out` if the time ran out first and `a`
/// ended cancelled. If `a` had already completed when the timer fired, its real result
/// is returned: data that arrived is never dropped.
template <result_awaitable A, class Rep, class Period>
task<detail::awaited_t<A>> with_timeout(A a, std::chrono::duration<Rep, Period> d) {
    detail::task_env env;
    co_await detail::read_env{env};
    detail::linked_stop_source stop(env.token);
    std::optional<detail::awaited_t<A>> value;
    bool timed_out = false;
    std::array<detail::join_child, 2> children{detail::make_child(std::move(a),
                                                                  [&](auto&& v) {
                                                                      value.emplace(std::move(v));
                                                                      stop.source.request_stop();
                                                                  }),
                                               detail::make_child(sleep_for(d), [&](result<void> r) {
                                                   if (r) {
                                                       timed_out = true;
                                                       stop.source.request_stop();
                                                   }
                                               })};
    detail::task_env child_env{env.loop, stop.source.get_token()};
    co_await detail::join_awaiter<2>{children.data(), &child_env, &stop.source};
    if (timed_out && !*value && value->error() == std::errc::operation_canceled && !env.token.stop_requested())
        co_return std::make_error_code(std::errc::timed_out);
    co_return std::move(*value);
}

}  // namespace weft

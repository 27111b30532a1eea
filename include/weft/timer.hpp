// SPDX-License-Identifier: MIT
/// @file
/// @brief Timers: `sleep_for` and `sleep_until`, entries in the loop's timer heap.
#pragma once

#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <optional>

#include "core.hpp"
#include "result.hpp"

namespace weft {

namespace detail {
/// A timer of a thread-per-task loop: sleeps on the calling thread until `deadline`
/// (0) or until `token` is stopped first (`-ECANCELED`).
inline int sleep_on_this_thread(clock::time_point deadline, const stop_token& token) {
    std::mutex m;
    std::condition_variable cv;
    bool stopped = false;
    struct waker {
        std::mutex* m;
        std::condition_variable* cv;
        bool* stopped;
        void operator()() const noexcept {
            std::lock_guard lk(*m);
            *stopped = true;
            cv->notify_all();
        }
    };
    stop_callback<waker> wake(token, waker{&m, &cv, &stopped});  // before the lock: it takes it
    std::unique_lock lk(m);
    if (deadline == clock::time_point::max()) {
        cv.wait(lk, [&] { return stopped; });
        return -ECANCELED;
    }
    cv.wait_until(lk, deadline, [&] { return stopped; });
    return clock::now() >= deadline ? 0 : -ECANCELED;  // a fired timer stays fired
}
}  // namespace detail

/// Awaitable that completes at a deadline; `co_await` yields `result<void>`.
///
/// Success means the deadline passed; `std::errc::operation_canceled` means the
/// awaiting task's stop token fired first. A timer that has already fired when the
/// stop arrives still reports success. The awaiter is pinned once awaited.
class [[nodiscard("a timer does nothing until it is awaited: is a co_await missing?")]] sleep_awaiter
    : private detail::timer_op {
public:
    /// A timer for `deadline` on `loop` (or, when null, on the awaiting task's loop).
    sleep_awaiter(detail::loop_core * loop, clock::time_point deadline) noexcept : loop_(loop) {
        this->deadline = deadline;
    }
    /// Moves a not-yet-awaited timer.
    sleep_awaiter(sleep_awaiter && o) noexcept : detail::timer_op(), loop_(o.loop_) {
        assert(o.state == detail::op_state::idle);
        this->deadline = o.deadline;
    }
    sleep_awaiter& operator=(sleep_awaiter&&) = delete;
    /// Unlinks a still-pending or fired-but-not-resumed timer (its frame is being destroyed).
    ~sleep_awaiter() {
        stop_.reset();
        if (this->state == detail::op_state::parked)
            loop_->forget_timer(*this);
        else if (this->state == detail::op_state::ready)
            loop_->unqueue(*this);
    }

    /// Always suspends: even an expired deadline goes through the loop, so
    /// `sleep_for(0s)` is a fair yield.
    bool await_ready() const noexcept { return false; }

    /// Arms the timer on the loop of the awaiting task.
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) {
        detail::task_env env = detail::env_of(h);
        if (!loop_) loop_ = env.loop;
        if (!loop_) {
            no_loop_ = true;
            return false;
        }
        if (env.token.stop_requested()) {
            this->res = -ECANCELED;
            return false;
        }
        if (loop_->threaded()) {  // thread per task: this thread sleeps
            this->res = detail::sleep_on_this_thread(this->deadline, env.token);
            return false;
        }
        this->continuation = h;
        loop_->add_timer(*this);
        if (env.token.stop_possible()) stop_.emplace(env.token, canceller{this});
        return true;
    }

    /// Success at the deadline; `operation_canceled` if stopped first.
    result<void> await_resume() noexcept {
        stop_.reset();
        if (no_loop_) return errc::no_loop;
        return detail::to_result(this->res);
    }

private:
    struct canceller {
        sleep_awaiter* self;
        void operator()() const noexcept { self->loop_->cancel_timer(*self); }
    };
    detail::loop_core* loop_;
    std::optional<detail::stop_callback<canceller>> stop_;
    bool no_loop_ = false;
};

/// Suspends the current task until `deadline` (on the loop running it).
inline sleep_awaiter sleep_until(clock::time_point deadline) noexcept { return {nullptr, deadline}; }

namespace detail {
/// `now + d`, rounded up to the clock's tick and saturated: a huge `d` means "never".
template <class Rep, class Period>
clock::time_point deadline_after(std::chrono::duration<Rep, Period> d) noexcept {
    auto now = clock::now();
    using secs = std::chrono::duration<double>;
    if (secs(d) >= secs(clock::time_point::max() - now)) return clock::time_point::max();
    if (d <= d.zero()) return now;
    return now + std::chrono::ceil<clock::duration>(d);
}
}  // namespace detail

/// Suspends the current task for `d` (on the loop running it).
template <class Rep, class Period>
sleep_awaiter sleep_for(std::chrono::duration<Rep, Period> d) noexcept {
    return {nullptr, detail::deadline_after(d)};
}

}  // namespace weft

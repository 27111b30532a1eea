// SPDX-License-Identifier: MIT
/// @file
/// @brief The stop token that every task environment carries: `std::stop_token`'s
/// semantics without its heap allocation.
///
/// Why not `std::stop_source`: each one allocates its shared state, and weft makes one
/// for every `with_timeout`, `when_any`, `when_all` and `with_stop_token`, and requests
/// stop on it almost every time (the winner of a `when_any` cancels the rest), so the
/// state could not even be recycled. This source lives where it is declared (in the
/// combinator's frame), its tokens are plain pointers, and its callbacks are intrusive
/// nodes that live in the awaiters that register them: cancellation allocates nothing.
/// Public APIs still take `std::stop_token`; `with_stop_token` bridges one to this
/// source with a `std::stop_callback`, which does not allocate either.
///
/// Thread-safe like the standard one: `backend::blocking` runs a `when_any`'s children
/// on threads of their own, and a callback may be registered, run and removed on
/// different threads. Deregistering a callback that another thread is running waits
/// until it has returned; a callback that destroys itself while it runs is allowed.
///
/// Unlike the standard source (whose state is reference-counted), this one must outlive
/// its `request_stop()`: a callback may not destroy the source it runs from. weft's
/// callbacks never do: a cancelled operation is completed into the loop's ready queue,
/// never resumed from inside the callback.
#pragma once

#include <pthread.h>

#include <atomic>
#include <cassert>
#include <cstdint>
#include <sched.h>

namespace weft::detail {

class stop_source;

/// The part of a stop callback the source sees: an intrusive list node and the
/// function to run.
class stop_callback_base {
    friend class stop_source;
    template <class>
    friend class stop_callback;

    using run_fn = void (*)(stop_callback_base*) noexcept;
    explicit stop_callback_base(run_fn run) noexcept : run_(run) {}
    stop_callback_base(const stop_callback_base&) = delete;
    stop_callback_base& operator=(const stop_callback_base&) = delete;
    ~stop_callback_base() = default;

    /// Adds this callback to `src`, or runs it at once if stop was already requested.
    void attach(stop_source* src) noexcept;
    /// Removes this callback (or waits until a run on another thread has returned).
    void detach() noexcept;

    run_fn run_;
    stop_source* source_ = nullptr;         ///< set while registered
    stop_callback_base* next_ = nullptr;
    stop_callback_base** prev_ = nullptr;   ///< null once taken out of the list
    bool* removed_while_running_ = nullptr; ///< set by the running thread
    std::atomic<bool> done_{false};         ///< the run on another thread has returned
};

/// A token: which source to watch (none: stop is impossible). Trivially copyable.
class stop_token {
public:
    /// A token that can never be stopped.
    stop_token() noexcept = default;
    /// True if a stop request can ever be seen through this token.
    bool stop_possible() const noexcept { return source_ != nullptr; }
    /// True once stop was requested on the source.
    inline bool stop_requested() const noexcept;

private:
    friend class stop_source;
    template <class>
    friend class stop_callback;
    explicit stop_token(stop_source* s) noexcept : source_(s) {}
    stop_source* source_ = nullptr;
};

/// The source of stop requests; neither copied nor moved (tokens point at it), and it
/// must outlive every token and callback of it that is still in use.
class stop_source {
public:
    /// A source no one has stopped yet.
    stop_source() noexcept = default;
    stop_source(const stop_source&) = delete;
    stop_source& operator=(const stop_source&) = delete;
    /// No callback may still be registered.
    ~stop_source() { assert(callbacks_ == nullptr); }

    /// A token of this source.
    stop_token get_token() noexcept { return stop_token(this); }
    /// True once `request_stop()` was called.
    bool stop_requested() const noexcept { return (state_.load(std::memory_order_acquire) & stopped_bit) != 0; }

    /// Requests stop and runs every registered callback on this thread, newest first.
    /// False if stop had already been requested (then nothing runs).
    bool request_stop() noexcept {
        if (!lock_unless_stopped(true)) return false;
        runner_ = pthread_self();
        while (stop_callback_base* cb = callbacks_) {
            callbacks_ = cb->next_;
            if (callbacks_) callbacks_->prev_ = &callbacks_;
            cb->prev_ = nullptr;  // taken out: a concurrent detach waits for `done_`
            unlock();
            bool removed = false;
            cb->removed_while_running_ = &removed;
            cb->run_(cb);
            if (!removed) {  // else the callback destroyed itself: `cb` is gone
                cb->removed_while_running_ = nullptr;
                cb->done_.store(true, std::memory_order_release);
                cb->done_.notify_all();
            }
            lock();
        }
        unlock();
        return true;
    }

private:
    friend class stop_callback_base;
    static constexpr std::uint8_t stopped_bit = 1;
    static constexpr std::uint8_t locked_bit = 2;

    /// Takes the list's lock unless stop was requested; with `stop`, also marks stop.
    bool lock_unless_stopped(bool stop) noexcept {
        std::uint8_t cur = state_.load(std::memory_order_relaxed);
        for (;;) {
            if (cur & stopped_bit) return false;
            if (cur & locked_bit) {
                sched_yield();  // held only for a few pointer updates, or by a callback's runner between runs
                cur = state_.load(std::memory_order_relaxed);
                continue;
            }
            const auto want = static_cast<std::uint8_t>(locked_bit | (stop ? stopped_bit : 0));
            if (state_.compare_exchange_weak(cur, want, std::memory_order_acquire, std::memory_order_relaxed))
                return true;
        }
    }
    /// Takes the list's lock whatever the stop state.
    void lock() noexcept {
        std::uint8_t cur = state_.load(std::memory_order_relaxed);
        for (;;) {
            if (cur & locked_bit) {
                sched_yield();
                cur = state_.load(std::memory_order_relaxed);
                continue;
            }
            if (state_.compare_exchange_weak(cur, static_cast<std::uint8_t>(cur | locked_bit),
                                             std::memory_order_acquire, std::memory_order_relaxed))
                return;
        }
    }
    void unlock() noexcept { state_.fetch_and(static_cast<std::uint8_t>(~locked_bit), std::memory_order_release); }

    std::atomic<std::uint8_t> state_{0};
    stop_callback_base* callbacks_ = nullptr;  ///< newest first; guarded by the lock
    pthread_t runner_{};                       ///< the thread that requested stop
};

inline bool stop_token::stop_requested() const noexcept { return source_ && source_->stop_requested(); }

inline void stop_callback_base::attach(stop_source* src) noexcept {
    if (!src) return;
    if (!src->lock_unless_stopped(false)) {
        run_(this);  // already stopped: run now, like std::stop_callback
        return;
    }
    next_ = src->callbacks_;
    prev_ = &src->callbacks_;
    if (next_) next_->prev_ = &next_;
    src->callbacks_ = this;
    source_ = src;
    src->unlock();
}

inline void stop_callback_base::detach() noexcept {
    stop_source* src = source_;
    if (!src) return;
    src->lock();
    if (prev_) {  // still waiting in the list
        *prev_ = next_;
        if (next_) next_->prev_ = prev_;
        src->unlock();
        return;
    }
    // Taken out by request_stop: running now or already run.
    const pthread_t runner = src->runner_;
    src->unlock();
    if (pthread_equal(runner, pthread_self())) {
        if (removed_while_running_) *removed_while_running_ = true;  // destroyed from inside itself
        return;
    }
    while (!done_.load(std::memory_order_acquire)) done_.wait(false, std::memory_order_acquire);
}

/// A stop callback's function that requests stop on another source: links a child
/// source to its parent (combinators), or a `std::stop_token` to weft's own (spawn,
/// `with_stop_token`, `blocking`'s task threads).
struct request_stop_on {
    stop_source* target;
    void operator()() const noexcept { target->request_stop(); }
};

/// Runs `F` when stop is requested on the token's source (at once if it already was);
/// after its destructor returns, `F` is not running and never will. Neither copied nor
/// moved: the source links to it.
template <class F>
class stop_callback : private stop_callback_base {
public:
    /// Registers `f` with `token`'s source (nothing to do for a token that cannot stop).
    stop_callback(const stop_token& token, F f) noexcept : stop_callback_base(&invoke), f_(static_cast<F&&>(f)) {
        attach(token.source_);
    }
    /// Deregisters (waiting for a run on another thread to return).
    ~stop_callback() { detach(); }

private:
    static void invoke(stop_callback_base* b) noexcept { static_cast<stop_callback*>(b)->f_(); }
    F f_;
};

}  // namespace weft::detail

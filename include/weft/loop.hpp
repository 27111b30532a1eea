// SPDX-License-Identifier: MIT
/// @file
/// @brief `loop<Backend>`: runs tasks over one IO model, with timers and cross-thread posts.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <stop_token>
#include <system_error>
#include <utility>

#include "backend/concepts.hpp"
#include "core.hpp"
#include "result.hpp"
#include "task.hpp"
#include "timer.hpp"

namespace weft {
namespace detail {

/// The frame that owns a spawned task: started from the ready queue, destroyed by
/// itself when the task ends, or by the loop if the loop dies first.
struct spawned_frame {
    struct promise_type : spawn_link, frame_cached {
        task_env env;
        op_base start;  ///< queued once to start the body on the loop thread
        std::exception_ptr escaped;
        /// A frame destroyed before its first turn takes its start out of the ready queue.
        ~promise_type() {
            if (env.loop) env.loop->unqueue(start);
        }

        spawned_frame get_return_object() noexcept {
            return {std::coroutine_handle<promise_type>::from_promise(*this)};
        }
        std::suspend_always initial_suspend() const noexcept { return {}; }
        struct final_awaiter {
            bool await_ready() const noexcept { return false; }
            void await_suspend(std::coroutine_handle<promise_type> h) const noexcept {
                promise_type& p = h.promise();
                std::exception_ptr escaped = std::move(p.escaped);
                loop_core* core = p.env.loop;
                core->unlink_spawned(p);
                h.destroy();  // frames die once: here, right after the body ends
                if (escaped) core->rethrow_after_resume(std::move(escaped));
            }
            void await_resume() const noexcept {}
        };
        final_awaiter final_suspend() const noexcept { return {}; }
        void return_void() const noexcept {}
        /// Hands the exception to the loop's handler. If the handler itself throws, that
        /// exception leaves `run()` once this frame has been cleaned up.
        void unhandled_exception() noexcept {
            try {
                env.loop->report_exception(std::current_exception());
            } catch (...) {
                escaped = std::current_exception();
            }
        }
    };
    std::coroutine_handle<promise_type> h;
};

inline spawned_frame run_spawned(task<void> t) { co_await std::move(t); }

/// Gives the awaiting task the stop token `token` (for what it awaits next).
struct use_token {
    stop_token token;
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) const noexcept {
        h.promise().env.token = token;
        return false;
    }
    void await_resume() const noexcept {}
};

/// A spawned task with a `std::stop_token`: its operations watch weft's own stop source
/// (`stop.hpp`), which the token's stop request is forwarded to. The task is moved into
/// a local declared after the source, so a frame destroyed mid-way (the loop torn down)
/// takes the task's operations, and their callbacks on the source, down first. (A
/// parameter copy or a promise member would outlive or predecease them the wrong way:
/// the promise is destroyed before the parameter copies.)
inline spawned_frame run_spawned_linked(task<void> t, std::stop_token token) {
    stop_source own;
    std::stop_callback<request_stop_on> link(std::move(token), request_stop_on{&own});
    task<void> body = std::move(t);
    co_await use_token{own.get_token()};
    co_await std::move(body);
}

}  // namespace detail

/// An event loop over the IO model `Backend` (e.g. `loop<backend::epoll_et>`).
///
/// One loop, one thread: create, run and use a loop on one thread; only `post()`,
/// `stop()` and `spawn_remote()` may be called from elsewhere (each wakes a sleeping
/// loop), and another thread's task may `switch_to` it. Several loops on several threads
/// (thread per core) are a `weft::runtime`. Tasks are resumed
/// only by the run step, after the backend's event scan. Destroying a loop destroys the
/// frames of tasks still suspended in it without resuming them.
template <class Backend>
requires io_backend<Backend>
class loop final : public detail::loop_core {
public:
    /// The IO model this loop runs.
    using backend_type = Backend;

    /// Creates the backend with `opts` (e.g. `backend::uring::options{.queue_depth = 64}`);
    /// throws `std::system_error` naming the cause when the backend cannot start (e.g.
    /// io_uring disabled), with `weft::errc::backend_unavailable` when
    /// `Backend::available()` is false.
    explicit loop(typename Backend::options opts = {}) : backend_(checked(*this), std::move(opts)) {
        set_loop_type(&type_key);
        if constexpr (threaded) set_threaded();
    }
    loop(const loop&) = delete;
    loop& operator=(const loop&) = delete;

    /// Destroys suspended tasks' frames (without resuming them), then the backend.
    /// (`backend::blocking`: first cancels every task thread and joins it.)
    ~loop() {
        destroy_tasks();
        stop_workers();
    }

    /// The first half of the destructor, for a runtime that tears down several loops
    /// whose tasks may have moved between them: closes the loop to other threads
    /// (`spawn_remote`, `switch_to` and channel wake-ups then fail with
    /// `errc::loop_stopped`) and destroys every task still suspended in it without
    /// resuming it. The backend stays, so a task of another loop that moved here and is
    /// destroyed later can still take its operations out of it. Idempotent; loop thread
    /// (or, with every loop of a runtime stopped, the one the runtime hands it to).
    void destroy_tasks() noexcept {
        // Other threads' hand-overs first: once the inbox is closed they get
        // errc::loop_stopped, and what they already sent is delivered (spawned tasks are
        // linked, to be destroyed below with the rest).
        close_inbox();
        if constexpr (threaded) backend_.shutdown();  // task threads end before the loop's state goes
        // Frames first: an awaiter whose completion is still queued must see itself
        // `ready` to release what it owns (an accepted fd); drop_ready() marks it idle.
        destroy_spawned();
        drop_ready();
        drop_posted();
    }

    /// Runs `t` to completion on this thread (`backend::blocking`: on a thread of its
    /// own, while this one runs posts) and returns its value (or rethrows its
    /// exception). Spawned tasks make progress meanwhile. If `stop()` is called first,
    /// destroys `t` and throws `std::system_error` with `operation_canceled`.
    template <class T>
    T run(task<T> t) {
        auto h = t.handle();
        if constexpr (threaded) {  // the task gets a thread; this one runs posts meanwhile
            std::atomic<bool> done{false};
            // The thread's own stop source: its record is reaped only by step() on this
            // thread, after `done`, so it outlives every request made here.
            detail::stop_source& stop = backend_.start(
                [this, h](detail::stop_token st) { backend_.run_on_this_thread(h, st); }, {}, &done);
            bool cancelled = false;
            while (!done.load(std::memory_order_acquire)) {
                if (stop_requested_.exchange(false, std::memory_order_acq_rel)) {
                    cancelled = true;
                    stop.request_stop();  // its blocking calls are interrupted; wait for it
                }
                step();
            }
            // A stop() that raced with the task's end (it may be what ended it) still counts.
            if (stop_requested_.exchange(false, std::memory_order_acq_rel)) cancelled = true;
            if (cancelled) throw std::system_error(std::make_error_code(std::errc::operation_canceled), "loop stopped");
            return h.promise().take();
        }
        h.promise().env = {this, {}};
        h.resume();
        while (!h.done()) {
            if (stop_requested_.exchange(false, std::memory_order_acq_rel))
                throw std::system_error(std::make_error_code(std::errc::operation_canceled), "loop stopped");
            step();
        }
        return h.promise().take();
    }

    /// Runs until `stop()` is called or no spawned task is left. May be called again
    /// after it returns: the stop request is consumed on return, and tasks still alive
    /// go on in the next `run()` (as after a graceful drain that stops the loop).
    void run() {
        while (live_tasks() > 0 || has_ready()) {
            if (stop_requested_.exchange(false, std::memory_order_acq_rel)) return;
            step();
        }
    }

    /// Runs at most one iteration: waits up to `timeout` for IO or timers, then resumes
    /// whatever became ready. Returns the number of resumed operations.
    std::size_t run_once(clock::duration timeout = clock::duration::max()) {
        return step(timeout < clock::duration::zero() ? clock::duration::zero() : timeout);
    }

    /// Starts `t` detached: the loop owns its frame until it ends. `token` cancels its
    /// operations. An exception escaping `t` goes to the exception handler.
    void spawn(task<void> t, std::stop_token token = {}) {
        if constexpr (threaded) {
            backend_.spawn(std::move(t), std::move(token));
            return;
        }
        detail::spawned_frame f = token.stop_possible() ? detail::run_spawned_linked(std::move(t), std::move(token))
                                                        : detail::run_spawned(std::move(t));
        auto& p = f.h.promise();
        p.env = {this, {}};
        p.frame = f.h;
        link_spawned(p);
        p.start.continuation = f.h;
        complete(p.start, 0);
    }

    /// Starts `t` on this loop from any thread (`spawn` is for the loop's own thread):
    /// it is handed over through the loop's inbox without a lock, and starts during the
    /// loop's next iteration. `errc::loop_stopped` (and `t` destroyed unstarted) once the
    /// loop is being torn down; a task handed over just before the teardown is destroyed
    /// unstarted with the loop's other tasks. `from` is the caller's own loop, if it runs
    /// on one (io_uring loops then wake each other ring to ring). Allocates one small
    /// record for the hand-over; throws `std::bad_alloc`.
    result<void> spawn_remote(task<void> t, std::stop_token token = {}, detail::loop_core* from = nullptr) {
        struct hand_over : detail::remote_item {
            task<void> body;
            std::stop_token token;
        };
        auto* item = new hand_over{};
        item->body = std::move(t);
        item->token = std::move(token);
        item->deliver = [](detail::loop_core& core, detail::remote_item& it) noexcept {
            std::unique_ptr<hand_over> own(static_cast<hand_over*>(&it));
            if (core.inbox_closed_for_good()) return;  // torn down: destroyed unstarted
            try {
                static_cast<loop&>(core).spawn(std::move(own->body), std::move(own->token));
            } catch (...) {
                static_cast<loop&>(core).report_exception(std::current_exception());
            }
        };
        if (!send_remote(*item, from)) {
            delete item;
            return errc::loop_stopped;
        }
        return {};
    }

    /// Loop thread, with the loop stopped: cancels what the backend has in the kernel
    /// and waits for it (io_uring; the other backends have nothing there), so the
    /// operations settle into the ready queue. A runtime calls it on every loop before it
    /// destroys any task (see `destroy_tasks`).
    void quiesce() noexcept {
        if constexpr (requires(Backend & b) { b.quiesce(); }) backend_.quiesce();
    }

    /// Makes `run()` return (and `run(task)` throw) at the next iteration. Thread-safe
    /// and async-signal-safe, so a SIGINT handler may call it; it leaves `errno` as it
    /// found it (a backend's wake-up may fail, e.g. sigio's with a full signal queue).
    /// (`backend::blocking`: the task threads go on after `run()` returns; destroying
    /// the loop stops them.)
    void stop() noexcept {
        const int saved = errno;
        stop_requested_.store(true, std::memory_order_release);
        backend_.wake();
        errno = saved;
    }

    /// Queues `fn` to run on the loop's thread during its next iteration; safe to call
    /// from any thread (it wakes a sleeping loop). Functions run in the order posted.
    void post(std::function<void()> fn) { loop_core::post(std::move(fn)); }

    /// Replaces what happens to an exception escaping a spawned task (default: print
    /// it to stderr and `std::terminate()`). A handler that rethrows makes `run()` throw.
    void set_exception_handler(std::function<void(std::exception_ptr)> handler) {
        loop_core::set_exception_handler(std::move(handler));
    }

    /// Number of spawned tasks that have not finished yet.
    std::size_t live_tasks() const noexcept {
        if constexpr (threaded) return backend_.live_tasks();
        return loop_core::live_tasks();
    }

    /// Number of timers waiting for their deadline.
    std::size_t pending_timers() const noexcept { return loop_core::pending_timers(); }

    /// A timer for `d` on this loop (usable from any coroutine type).
    template <class Rep, class Period>
    sleep_awaiter sleep_for(std::chrono::duration<Rep, Period> d) noexcept {
        return sleep_awaiter(this, detail::deadline_after(d));
    }
    /// A timer until `deadline` on this loop.
    sleep_awaiter sleep_until(clock::time_point deadline) noexcept { return sleep_awaiter(this, deadline); }

    /// The backend (for sockets and tests).
    Backend& backend() noexcept { return backend_; }

private:
    /// Its address tells loops of this type from loops of others (`is_same_loop_type`).
    static constexpr char type_key = 0;

    /// Thread per task (`backend::blocking`): spawn, run and timers use threads.
    static constexpr bool threaded = Backend::kind == backend_kind::blocking;

    static detail::loop_core& checked(detail::loop_core& core) {
        if (!Backend::available())
            throw std::system_error(make_error_code(errc::backend_unavailable), std::string(Backend::name));
        return core;
    }

    void wake_backend() noexcept override { backend_.wake(); }

    void wake_backend_from(detail::loop_core* from) noexcept override {
        if constexpr (requires(Backend & b) { b.wake_ring_to_ring(b); }) {
            // Both io_uring loops: the sender's ring posts a completion into this one
            // (IORING_OP_MSG_RING), which wakes it without the eventfd's write, read and
            // re-armed poll.
            if (from && msg_ring_wakeups() && from->is_same_loop_type(*this) &&
                static_cast<loop*>(from)->backend_.wake_ring_to_ring(backend_))
                return;
        }
        backend_.wake();
    }

    std::size_t step(clock::duration limit = clock::duration::max()) {
        send_deferred();  // a switch_to made by run(task)'s first resumption
        update_now();
        clock::duration timeout = wait_budget();
        backend_.wait(timeout < limit ? timeout : limit);
        update_now();
        expire_timers();
        run_posted();
        return resume_ready();
    }

    Backend backend_;
    std::atomic<bool> stop_requested_{false};
};

/// Awaiter of `switch_to`: the task's continuation handed to another loop's inbox.
class [[nodiscard("switch_to does nothing until it is awaited")]] switch_awaiter {
public:
    /// Prepares the move to `target`.
    explicit switch_awaiter(detail::loop_core & target) noexcept : target_(&target) {}
    switch_awaiter(const switch_awaiter&) = delete;
    switch_awaiter& operator=(const switch_awaiter&) = delete;
    /// A frame destroyed while the move is in flight (its loops torn down) takes the
    /// move's record back: from the list of hand-overs not sent yet, from the target's
    /// inbox or ready queue, or from this loop's ready queue if the target refused it.
    ~switch_awaiter() {
        if (!sent_ || resumed_) return;
        here_->cancel_send_later(send_);
        if (refused_) {
            here_->unqueue(op_);
        } else {
            target_->collect_inbox();
            target_->unqueue(op_);
        }
    }

    /// Always suspends (or fails) in `await_suspend`.
    bool await_ready() const noexcept { return false; }

    /// Hands the task to the target loop; continues at once when it is already there,
    /// when the loop runs a thread per task (`backend::blocking`: each task has its own
    /// thread already, and keeps it), or outside any loop (`errc::no_loop`).
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) {
        static_assert(
            requires(P & p) { p.moved_to(target_); }, "switch_to needs a weft::task");
        auto& p = h.promise();
        here_ = p.env.loop;
        if (!here_) {
            error_ = make_error_code(errc::no_loop);
            return false;
        }
        if (here_ == target_ || target_->threaded() || here_->threaded()) return false;
        saved_ = p.env;
        env_ = &p.env;
        p.moved_to(target_);  // may throw bad_alloc: nothing has been sent yet
        op_.continuation = h;
        op_.res = 0;
        // Sent once this resumption has returned (see detail::deferred_send): until then
        // the code that resumed this task may still be using its frame.
        send_ = {&op_, target_, nullptr, &refused, this};
        here_->send_later(send_);
        sent_ = true;
        return true;
    }

    /// Success: the task now runs on the target loop's thread. `errc::loop_stopped`: the
    /// target is torn down, and the task goes on where it was. `errc::no_loop`: not
    /// awaited from a task on a loop.
    result<void> await_resume() noexcept {
        resumed_ = true;
        if (error_) return error_;
        return {};
    }

private:
    /// The target refused the hand-over: the task resumes here, where it was.
    static void refused(detail::deferred_send & d, detail::loop_core & here) noexcept {
        auto& self = *static_cast<switch_awaiter*>(d.owner);
        *self.env_ = self.saved_;
        self.error_ = make_error_code(errc::loop_stopped);
        self.refused_ = true;
        here.complete(self.op_, 0);
    }

    detail::loop_core* target_;
    detail::loop_core* here_ = nullptr;
    detail::remote_op op_;
    detail::deferred_send send_;
    detail::task_env saved_;
    detail::task_env* env_ = nullptr;
    std::error_code error_;
    bool sent_ = false;
    bool resumed_ = false;
    bool refused_ = false;
};

/// Moves the awaiting task to `target`'s thread: `co_await weft::switch_to(other)`. From
/// there on its operations run on `target`; when the task ends, whoever awaits it is
/// resumed back on the loop it started on. The task's stop token is dropped by the move
/// (cancellation is per loop: the source behind it is requested on the old loop's
/// thread). Sockets stay with the loop that opened them: use them only from that loop
/// (DESIGN invariant 9), or move them (`tcp_stream::release`). On a thread-per-task
/// loop (`backend::blocking`) it does nothing: each task has its own thread already.
/// Do not use it in the task given to `loop::run(task)`, whose end that loop watches.
inline switch_awaiter switch_to(detail::loop_core& target) noexcept { return switch_awaiter(target); }

}  // namespace weft

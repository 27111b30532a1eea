// SPDX-License-Identifier: MIT
/// @file
/// @brief `runtime<Backend>`: N loops on N threads (thread per core), connections spread
/// over them, tasks and connections moved between them, one stop for all.
#pragma once

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "loop.hpp"
#include "net/endpoint.hpp"
#include "net/tcp.hpp"
#include "result.hpp"
#include "sys.hpp"
#include "task.hpp"

namespace weft {

/// How `runtime::serve` spreads connections over the loops.
enum class spread {
    /// One `SO_REUSEPORT` listener per loop: the kernel hashes each connection's
    /// addresses and ports to one of them. No hand-off and no shared accept queue; the
    /// balance is statistical (even over many connections, uneven over a few).
    reuse_port,
    /// One listener on loop 0, which accepts every connection and hands it to the loop
    /// with the fewest live connections (counting its own). Exact balance, at the cost
    /// of one cross-loop hand-off (and wake-up) per connection, and one accepting core.
    hand_off,
};

/// Counters of one loop of a `runtime` (read with `runtime::stats`).
struct loop_stats {
    std::uint64_t iterations = 0;        ///< times the loop waited and ran what was ready
    std::uint64_t idle_wakeups = 0;      ///< iterations that resumed nothing (a wasted wake-up)
    std::uint64_t connections = 0;       ///< connections `serve` started on this loop
    std::uint64_t live_connections = 0;  ///< of those, still running
};

/// N loops of `Backend`, each on a thread of its own (thread per core): the unit a
/// multi-core weft server is built from.
///
/// - **Threads.** The constructor starts the threads; each creates its loop on itself
///   (so a backend that binds to its thread, like `sigio`, binds to the right one),
///   optionally pinned to one CPU, and runs it at once. `run()` waits until the runtime
///   is done, then stops every loop and joins the threads.
/// - **Work.** `spawn_on(i, task)` starts a task on loop `i` from any thread;
///   `serve(endpoint, handler)` accepts connections on every loop; inside a task,
///   `co_await weft::switch_to(rt.at(j))` moves the task and `co_await rt.move_to(stream,
///   j)` moves it with a connection; `weft::channel<T>` carries values between loops.
/// - **Done.** `run()` returns once every task started through the runtime (`spawn_on`,
///   `serve`'s accept loops and connections) has ended, or after `stop()` (hard: tasks
///   are destroyed where they are), or at the end of `shutdown(grace)` (graceful: stop
///   accepting, let connections finish, cancel what is left at the deadline).
/// - **Ownership.** A socket belongs to the loop that opened it and is used only from
///   that loop's thread (DESIGN invariant 9); `move_to` re-attaches it on another. A
///   task's stop token is per loop: tasks started here get their loop's, which
///   `shutdown` requests on that loop's thread.
///
/// Every backend can run in a runtime. On `backend::blocking` each loop still runs every
/// task on a thread of its own, so the loops only group tasks (and `switch_to` changes
/// nothing); `sigio` loops each get their thread's signals (`F_SETOWN_EX`).
template <class Backend>
requires io_backend<Backend>
class runtime {
public:
    /// The loop type of each thread.
    using loop_type = loop<Backend>;

    /// How a runtime starts.
    struct options {
        /// Loops (and threads); 0: one per CPU this process may run on (`sched_getaffinity`).
        unsigned threads = 0;
        /// Pin loop `i` to the `i`-th CPU this process may run on (modulo their number).
        bool pin = false;
        /// Every loop's backend options.
        typename Backend::options backend{};
        /// io_uring: wake another loop with `IORING_OP_MSG_RING` rather than its eventfd
        /// (when the kernel has it). Off, to measure the difference.
        bool msg_ring_wakeups = true;
    };

    /// Starts `options.threads` loops, with default options.
    runtime() : runtime(options{}) {}

    /// Starts the loops; throws what the first loop that could not start threw (e.g.
    /// `std::system_error` with `errc::backend_unavailable`), or `std::system_error` when
    /// a thread cannot be created. Tasks may be spawned as soon as it returns.
    explicit runtime(options opts) : opts_(std::move(opts)) {
        const std::vector<int> cpus = allowed_cpus();
        const std::size_t n = opts_.threads ? opts_.threads : std::max<std::size_t>(1, cpus.size());
        supervisor_fd_ = sys::eventfd(0);
        if (supervisor_fd_ < 0) throw std::system_error(-supervisor_fd_, std::system_category(), "eventfd");
        slots_.reserve(n);
        for (std::size_t i = 0; i < n; ++i) {
            slots_.push_back(std::make_unique<slot>());
            slots_[i]->owner = this;
            slots_[i]->index = i;
        }
        teardown_ = std::make_unique<std::barrier<>>(static_cast<std::ptrdiff_t>(n));
        std::size_t started = 0;
        try {
            for (; started < n; ++started) {
                const int cpu = opts_.pin && !cpus.empty() ? cpus[started % cpus.size()] : -1;
                slots_[started]->thread = std::thread([this, started, cpu] { thread_main(started, cpu); });
            }
        } catch (...) {
            // The threads already started wait for the others at the teardown barrier:
            // arrive for the ones that never will.
            abandon_ = n - started;
            stop();
            for (std::size_t i = 0; i < started; ++i) slots_[i]->thread.join();
            sys::close(supervisor_fd_);
            throw;
        }
        std::unique_lock lock(start_mutex_);
        start_cv_.wait(lock, [&] { return ready_ == n; });
        if (start_error_) {
            lock.unlock();
            stop();
            join();
            sys::close(supervisor_fd_);
            std::rethrow_exception(start_error_);
        }
    }
    runtime(const runtime&) = delete;
    runtime& operator=(const runtime&) = delete;

    /// Stops every loop (as `stop()`) and joins the threads, if `run()` has not.
    ~runtime() {
        stop();
        join();
        sys::close(supervisor_fd_);
    }

    /// Number of loops.
    std::size_t size() const noexcept { return slots_.size(); }

    /// Loop `i`. Use it only from its own thread (a task running on it), except for
    /// what any thread may call: `spawn_remote`, `post`, `stop`, and as the target of
    /// `switch_to`.
    loop_type& at(std::size_t i) noexcept { return *slots_[i]->loop; }

    /// The index of the loop the calling thread runs, or `size()` on a thread that runs
    /// none of this runtime's loops.
    std::size_t current_index() const noexcept {
        const slot* s = current_slot();
        if (!s) return slots_.size();
        return s->index;
    }

    /// Starts `t` on loop `i` from any thread (not from a signal handler): it
    /// starts in that loop's next iteration, with that loop's stop token (which
    /// `shutdown` requests at its deadline). `run()` waits for it.
    /// `errc::loop_stopped` (and `t` destroyed unstarted) once the runtime is stopping.
    result<void> spawn_on(std::size_t i, task<void> t) {
        slot& s = *slots_.at(i);
        caller_guard in(*this);  // the loops' objects stay until this call has returned
        if (stopping_.load(std::memory_order_seq_cst)) return errc::loop_stopped;
        detail::loop_core* from = current_loop();
        tasks_.fetch_add(1, std::memory_order_relaxed);
        // counted() holds a guard as a parameter: it counts the task out when the frame
        // goes, whether it ran to its end or was destroyed unstarted.
        return s.loop->spawn_remote(counted(std::move(t), task_guard{this}), s.cancel.get_token(), from);
    }

    /// Moves the awaiting task to loop `to` together with `stream`: the stream is
    /// released from its loop (refused with `EBUSY`, stream unchanged, while an
    /// operation is pending on it), the task continues on `to`'s thread (as
    /// `switch_to`), and there the socket is re-attached. Yields the stream on its new
    /// loop; bytes already received stay in the socket, in order. `errc::loop_stopped`:
    /// the target has stopped, and the stream is re-attached where it was.
    template <class Stream>
    auto move_to(Stream& stream, std::size_t to) noexcept {
        return stream_move<Stream>(stream, at(to));
    }

    /// Accepts connections on `local` with every loop and runs `handler(stream)` (a
    /// callable returning `task<void>`, given a `tcp_stream<Backend>` on the loop that
    /// accepted or received the connection) as a task there, for each connection. With
    /// `spread::reuse_port` every loop binds its own `SO_REUSEPORT` listener (so
    /// `local`'s port must be fixed, not 0); with `spread::hand_off` loop 0 accepts and
    /// hands each connection to the least loaded loop. Port 0 picks a free port for the
    /// first listener, which the others then share. Returns the bound address once every
    /// listener is bound, or the first bind error (then no listener stays open). `shutdown` closes
    /// the listeners. `handler` is copied to every connection, so it must be copyable
    /// and cheap to copy (a lambda with a pointer or two). Call it from outside the
    /// runtime's threads (`EDEADLK` from one of them: it waits for the loops to bind).
    template <class Handler>
    result<endpoint> serve(const endpoint& local, Handler handler, spread how = spread::reuse_port,
                           listen_options opts = {}) {
        static_assert(std::is_invocable_r_v<task<void>, Handler&, tcp_stream<Backend>>,
                      "serve's handler must take a tcp_stream<Backend> and return task<void>");
        static_assert(std::is_copy_constructible_v<Handler>, "serve copies its handler to every connection");
        // It waits for the loops to bind: from one of them, it would wait for itself.
        if (current_slot()) return detail::errno_code(EDEADLK);
        caller_guard in(*this);
        if (stopping_.load(std::memory_order_seq_cst)) return errc::loop_stopped;
        const std::size_t listeners = how == spread::reuse_port ? size() : 1;
        if (how == spread::reuse_port) opts.reuse_port = true;
        // Bind on each loop's own thread (a listener belongs to the loop that opens it),
        // and wait for every result before any accept loop starts.
        bind_state st;
        st.bound.resize(listeners);
        st.errors.resize(listeners);
        endpoint where = local;
        // One at a time: with port 0, the first listener's port is the one the others take.
        for (std::size_t i = 0; i < listeners; ++i) {
            // (A refused hand-over destroys the task, whose bind_report counts it done.)
            (void)at(i).spawn_remote(bind_on(at(i), where, opts, st, i, bind_report(&st, i)), {}, current_loop());
            std::unique_lock lock(st.m);
            st.cv.wait(lock, [&] { return st.done == i + 1; });
            if (st.errors[i]) break;
            if (i == 0)
                if (auto bound_at = st.bound[0]->local_endpoint()) where = *bound_at;
        }
        auto& bound = st.bound;
        auto& errors = st.errors;
        std::error_code first;
        for (auto& e : errors)
            if (e && !first) first = e;
        if (first) {
            // Close each listener on its own loop (what it detaches from is that loop's).
            for (std::size_t i = 0; i < listeners; ++i)
                if (bound[i]) (void)close_on(i, std::move(*bound[i]));
            return first;
        }
        for (std::size_t i = 0; i < listeners; ++i) {
            tasks_.fetch_add(1, std::memory_order_relaxed);
            auto r = at(i).spawn_remote(counted(accept_loop(i, std::move(*bound[i]), handler, how), task_guard{this}),
                                        slots_[i]->drain.get_token(), current_loop());
            if (!r) return r.error();
        }
        return where;
    }

    /// Waits until the runtime is done: every task started through it has ended, or
    /// `stop()` was called, or a `shutdown` has finished. Then stops every loop,
    /// destroys the tasks still suspended in them, and joins the threads. Call it once,
    /// from a thread that is not one of the runtime's.
    void run() {
        for (;;) {
            if (stopping_.load(std::memory_order_acquire)) break;
            if (tasks_.load(std::memory_order_acquire) == 0) break;
            int timeout_ms = -1;
            if (draining_.load(std::memory_order_acquire)) {
                const auto now = clock::now();
                if (!cancelled_ && now >= drain_deadline_) {
                    cancelled_ = true;
                    for (std::size_t i = 0; i < size(); ++i) request_on(i, &slot::cancel);
                    drain_deadline_ = now + cancel_wait;
                } else if (cancelled_ && now >= drain_deadline_) {
                    break;  // tasks that ignore their cancellation: destroyed by the stop
                }
                timeout_ms =
                    static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(drain_deadline_ - now).count());
            }
            pollfd p{supervisor_fd_, POLLIN, 0};
            if (::poll(&p, 1, timeout_ms) > 0) {
                std::uint64_t v;
                [[maybe_unused]] long r = sys::read(supervisor_fd_, &v, sizeof v);
            }
        }
        stop();
        join();
        if (loop_error_) std::rethrow_exception(loop_error_);
    }

    /// Hard stop: every loop stops at its next iteration and `run()` returns, after the
    /// tasks still suspended are destroyed where they are. Thread-safe and
    /// async-signal-safe (a SIGINT handler may call it); keeps `errno`.
    void stop() noexcept {
        const int saved = errno;
        // The guard (two atomic operations: async-signal-safe) keeps each loop's object,
        // and the eventfd its stop() writes, from being destroyed under this call.
        caller_guard in(*this);
        stopping_.store(true, std::memory_order_seq_cst);
        for (auto& s : slots_)
            if (loop_type* l = s->running.load(std::memory_order_seq_cst)) l->stop();
        poke_supervisor();
        errno = saved;
    }

    /// Graceful stop, from any thread (not a signal handler: there, `stop()`; or await a
    /// `signal_set` in a task and call this): each loop's drain token is requested on
    /// that loop's thread, which ends `serve`'s accept loops and closes the listeners
    /// (and whatever else watches `drain_token()`); tasks then have `grace` to end by
    /// themselves. At the deadline every loop's cancel token (the stop token of tasks
    /// started by `spawn_on` and `serve`) is requested, and tasks get one more second to
    /// end; then `run()` stops the loops (as `stop()`). `run()` returns as soon as no task
    /// is left.
    void shutdown(std::chrono::milliseconds grace) {
        if (shutdown_called_.exchange(true, std::memory_order_acq_rel)) return;
        drain_deadline_ = clock::now() + grace;
        draining_.store(true, std::memory_order_release);  // publishes the deadline to run()
        for (std::size_t i = 0; i < size(); ++i) request_on(i, &slot::drain);
        poke_supervisor();
    }

    /// The drain token of the loop the caller runs on (a task of this runtime): requested
    /// on that loop's thread when `shutdown` begins. A connection may watch it to finish
    /// its current request and half-close (`std::stop_callback` that calls
    /// `shutdown(SHUT_RD)`). An empty token on any other thread.
    std::stop_token drain_token() const noexcept {
        const slot* s = current_slot();
        return s ? s->drain.get_token() : std::stop_token{};
    }

    /// Loop `i`'s counters so far (safe from any thread; relaxed reads).
    loop_stats stats(std::size_t i) const noexcept {
        const slot& s = *slots_.at(i);
        return {s.iterations.load(std::memory_order_relaxed), s.idle_wakeups.load(std::memory_order_relaxed),
                s.connections.load(std::memory_order_relaxed), s.live.load(std::memory_order_relaxed)};
    }

    /// Tasks started through the runtime that have not ended yet.
    std::size_t live_tasks() const noexcept { return tasks_.load(std::memory_order_acquire); }

private:
    /// After the drain's deadline, how long cancelled tasks get before the hard stop.
    static constexpr std::chrono::seconds cancel_wait{1};

    struct slot {
        std::optional<loop_type> loop;
        runtime* owner = nullptr;
        std::atomic<loop_type*> running{nullptr};  ///< set while the loop runs: what stop() may touch
        std::size_t index = 0;
        std::thread thread;
        std::stop_source drain;   ///< requested on the loop's thread when shutdown begins
        std::stop_source cancel;  ///< requested on the loop's thread at the drain's deadline
        std::atomic<std::uint64_t> iterations{0};
        std::atomic<std::uint64_t> idle_wakeups{0};
        std::atomic<std::uint64_t> connections{0};
        std::atomic<std::uint64_t> live{0};
    };

    /// What `serve`'s binds report back to it.
    struct bind_state {
        std::vector<std::optional<tcp_listener<Backend>>> bound;
        std::vector<std::error_code> errors;
        std::mutex m;
        std::condition_variable cv;
        std::size_t done = 0;
    };
    /// Binds listener `i` on its own loop's thread (a listener belongs to the loop that opens it).
    /// Reports bind `i` done when `bind_on`'s frame goes, also when the loop is torn down
    /// before the task ran (`serve` would wait for it forever, holding off the teardown).
    struct bind_report {
        bind_state* st;
        std::size_t i;
        bind_report(bind_state* s, std::size_t k) noexcept : st(s), i(k) {}
        bind_report(bind_report&& o) noexcept : st(std::exchange(o.st, nullptr)), i(o.i) {}
        ~bind_report() {
            if (!st) return;
            std::lock_guard lock(st->m);
            if (!st->bound[i] && !st->errors[i]) st->errors[i] = make_error_code(errc::loop_stopped);
            ++st->done;
            st->cv.notify_all();
        }
    };
    /// Binds listener `i` on its own loop's thread (a listener belongs to the loop that opens it).
    static task<void> bind_on(loop_type& l, endpoint local, listen_options opts, bind_state& st, std::size_t i,
                              bind_report) {
        auto bound = tcp_listener<Backend>::bind(l, local, opts);
        std::lock_guard lock(st.m);
        if (bound)
            st.bound[i].emplace(std::move(*bound));
        else
            st.errors[i] = bound.error();
        co_return;  // (done is counted by the bind_report, as the frame goes)
    }

    /// Counts a call from outside the loops into `callers_` for its duration: the
    /// teardown waits for those still inside before it destroys the loops (a caller that
    /// saw `stopping_` false may still be on its way to a loop).
    struct caller_guard {
        runtime& rt;
        explicit caller_guard(runtime& r) noexcept : rt(r) { rt.callers_.fetch_add(1, std::memory_order_seq_cst); }
        ~caller_guard() { rt.callers_.fetch_sub(1, std::memory_order_release); }
    };

    /// Counts a task out of `tasks_` when the frame that holds it goes.
    struct task_guard {
        runtime* rt;
        task_guard(runtime* r) noexcept : rt(r) {}
        task_guard(task_guard&& o) noexcept : rt(std::exchange(o.rt, nullptr)) {}
        task_guard(const task_guard&) = delete;
        ~task_guard() {
            if (rt && rt->tasks_.fetch_sub(1, std::memory_order_acq_rel) == 1) rt->poke_supervisor();
        }
    };
    static task<void> counted(task<void> t, task_guard) { co_await std::move(t); }

    /// The slot of the loop the calling thread runs (set by thread_main).
    static inline thread_local slot* this_thread_slot_ = nullptr;

    /// The slot of the calling thread's loop, if it is one of this runtime's. Out of
    /// line: inlined into a coroutine, clang may compute a thread_local's address once for
    /// the whole body, and a task that moved to another loop would read its old thread's.
    [[gnu::noinline]] const slot* current_slot() const noexcept {
        const slot* s = this_thread_slot_;
        return s && s->owner == this ? s : nullptr;
    }
    detail::loop_core* current_loop() noexcept {
        const slot* s = current_slot();
        return s && s->loop ? static_cast<detail::loop_core*>(&*slots_[s->index]->loop) : nullptr;
    }

    void poke_supervisor() noexcept {
        std::uint64_t one = 1;
        [[maybe_unused]] long r = sys::write(supervisor_fd_, &one, sizeof one);
    }

    /// Requests loop `i`'s `which` stop source on loop `i`'s thread (the callbacks it runs
    /// touch that loop's state).
    void request_on(std::size_t i, std::stop_source slot::*which) {
        slot& s = *slots_[i];
        caller_guard in(*this);
        if (stopping_.load(std::memory_order_seq_cst)) return;
        auto request = [](std::stop_source* src) -> task<void> {
            src->request_stop();
            co_return;
        };
        (void)s.loop->spawn_remote(request(&(s.*which)), {}, current_loop());
    }

    /// Closes `l` on loop `i`'s thread (a listener bound there, not handed out).
    result<void> close_on(std::size_t i, tcp_listener<Backend> l) {
        auto close_it = [](tcp_listener<Backend> owned) -> task<void> {
            (void)owned.close();
            co_return;
        };
        return at(i).spawn_remote(close_it(std::move(l)), {}, current_loop());
    }

    /// The loop least loaded by live connections (for `spread::hand_off`); ties go round
    /// robin, starting after the last choice. (Ties to the lowest index sent 82% of a
    /// burst of short connections to loop 0, whose connections end sooner: no hand-off.)
    /// Called by loop 0's accept loop only.
    std::size_t least_loaded() noexcept {
        const std::size_t n = slots_.size();
        std::size_t best = 0;
        std::uint64_t fewest = UINT64_MAX;
        for (std::size_t k = 1; k <= n; ++k) {
            const std::size_t i = (last_choice_ + k) % n;
            const std::uint64_t live = slots_[i]->live.load(std::memory_order_relaxed);
            if (live < fewest) {
                fewest = live;
                best = i;
            }
        }
        last_choice_ = best;
        return best;
    }

    /// One connection's task: the handler, with the loop's connection counts kept.
    template <class Handler>
    static task<void> session(Handler handler, tcp_stream<Backend> stream, slot& s) {
        struct live_count {
            slot& s;
            ~live_count() { s.live.fetch_sub(1, std::memory_order_relaxed); }
        } counted_live{s};
        co_await handler(std::move(stream));
    }

    /// Hands an accepted socket to loop `i`: adopted and served there.
    template <class Handler>
    static task<void> adopt_on(Handler handler, int fd, loop_type& l, slot& s) {
        auto stream = tcp_stream<Backend>::adopt(l.backend(), fd);
        if (!stream) {
            s.live.fetch_sub(1, std::memory_order_relaxed);
            co_return;
        }
        co_await session(std::move(handler), std::move(*stream), s);
    }

    /// Loop `i`'s accept loop: ends when its drain token is requested (the pending accept
    /// is cancelled) and closes the listener.
    template <class Handler>
    task<void> accept_loop(std::size_t i, tcp_listener<Backend> listener, Handler handler, spread how) {
        using namespace std::chrono_literals;
        for (;;) {
            auto conn = co_await listener.accept();
            if (!conn) {
                const std::error_code e = conn.error();
                if (e == std::errc::operation_canceled) break;
                if (e == std::errc::too_many_files_open || e == std::errc::too_many_files_open_in_system)
                    (void)co_await sleep_for(10ms);  // the pending connection was shed: back off
                continue;
            }
            const std::size_t to = how == spread::hand_off ? least_loaded() : i;
            slot& target = *slots_[to];
            target.connections.fetch_add(1, std::memory_order_relaxed);
            target.live.fetch_add(1, std::memory_order_relaxed);
            tasks_.fetch_add(1, std::memory_order_relaxed);
            if (to == i) {
                target.loop->spawn(counted(session(handler, std::move(*conn), target), task_guard{this}),
                                   target.cancel.get_token());
                continue;
            }
            auto fd = conn->release();
            if (!fd) {  // cannot happen: a fresh stream has nothing pending
                target.live.fetch_sub(1, std::memory_order_relaxed);
                tasks_.fetch_sub(1, std::memory_order_relaxed);
                continue;
            }
            auto sent =
                target.loop->spawn_remote(counted(adopt_on(handler, *fd, *target.loop, target), task_guard{this}),
                                          target.cancel.get_token(), &*slots_[i]->loop);
            if (!sent) {
                sys::close(*fd);  // the target is torn down: the connection goes with it
                target.live.fetch_sub(1, std::memory_order_relaxed);
            }
        }
        (void)listener.close();
    }

    /// The awaiter of `move_to`.
    template <class Stream>
    class stream_move {
    public:
        stream_move(Stream& s, loop_type& target) noexcept : stream_(&s), target_(&target), hop_(target) {}
        bool await_ready() const noexcept { return false; }
        template <class P>
        bool await_suspend(std::coroutine_handle<P> h) {
            origin_ = static_cast<loop_type*>(h.promise().env.loop);
            if (!origin_) {
                error_ = make_error_code(errc::no_loop);
                return false;
            }
            auto fd = stream_->release();
            if (!fd) {
                error_ = fd.error();
                return false;
            }
            fd_ = *fd;
            return hop_.await_suspend(h);
        }
        result<Stream> await_resume() noexcept {
            if (error_) return error_;
            if (!hop_.await_resume()) {  // the target has stopped: back where it was
                auto back = Stream::adopt(origin_->backend(), fd_);
                if (!back) return back.error();
                *stream_ = std::move(*back);
                return errc::loop_stopped;
            }
            return Stream::adopt(target_->backend(), fd_);
        }

    private:
        Stream* stream_;
        loop_type* target_;
        loop_type* origin_ = nullptr;
        switch_awaiter hop_;
        std::error_code error_;
        int fd_ = -1;
    };

    void thread_main(std::size_t i, int cpu) noexcept {
        slot& s = *slots_[i];
        this_thread_slot_ = &s;
        if (cpu >= 0) {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(cpu, &set);
            (void)::pthread_setaffinity_np(::pthread_self(), sizeof set, &set);
        }
        try {
            s.loop.emplace(opts_.backend);
            s.loop->set_msg_ring_wakeups(opts_.msg_ring_wakeups);
        } catch (...) {
            std::lock_guard lock(start_mutex_);
            if (!start_error_) start_error_ = std::current_exception();
        }
        {
            std::lock_guard lock(start_mutex_);
            ++ready_;
        }
        start_cv_.notify_all();
        if (s.loop) {
            s.running.store(&*s.loop, std::memory_order_release);
            try {
                while (!stopping_.load(std::memory_order_acquire)) {
                    const std::size_t n = s.loop->run_once();
                    s.iterations.fetch_add(1, std::memory_order_relaxed);
                    if (n == 0) s.idle_wakeups.fetch_add(1, std::memory_order_relaxed);
                }
            } catch (...) {  // an exception handler that threw: the runtime stops
                {
                    std::lock_guard lock(start_mutex_);
                    if (!loop_error_) loop_error_ = std::current_exception();
                }
                stop();
            }
        } else {
            // No loop here (the runtime failed to start): wait for the constructor's stop.
            while (!stopping_.load(std::memory_order_acquire))
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        // Teardown. A task may have moved to another loop, so no loop's backend may go
        // while another loop's tasks still exist: all loops stop and settle what they
        // have in the kernel first; then, one at a time, each destroys its tasks (a
        // destroyed task may take its operations out of another loop, idle by then); then
        // all destroy their backends.
        if (i == 0)
            for (std::size_t k = 0; k < abandon_; ++k) teardown_->arrive_and_drop();
        // (seq_cst, like the callers_ check below and stop()'s: a stop() that finds the
        // count back at 0 and then reads `running` sees it null.)
        s.running.store(nullptr, std::memory_order_seq_cst);
        // Each loop settles what its backend has in the kernel, on its own thread: a task
        // destroyed below on another loop's thread must not enter this loop's ring.
        if (s.loop) s.loop->quiesce();
        teardown_->arrive_and_wait();
        {
            std::unique_lock lock(turn_mutex_);
            turn_cv_.wait(lock, [&] { return turn_ == i; });
        }
        if (s.loop) s.loop->destroy_tasks();
        {
            std::lock_guard lock(turn_mutex_);
            ++turn_;
        }
        turn_cv_.notify_all();
        teardown_->arrive_and_wait();
        while (callers_.load(std::memory_order_seq_cst) != 0) std::this_thread::yield();
        s.loop.reset();
    }

    void join() noexcept {
        for (auto& s : slots_)
            if (s->thread.joinable()) s->thread.join();
    }

    static std::vector<int> allowed_cpus() {
        std::vector<int> cpus;
        cpu_set_t set;
        CPU_ZERO(&set);
        if (::sched_getaffinity(0, sizeof set, &set) == 0)
            for (int c = 0; c < CPU_SETSIZE; ++c)
                if (CPU_ISSET(c, &set)) cpus.push_back(c);
        return cpus;
    }

    options opts_;
    std::vector<std::unique_ptr<slot>> slots_;
    std::unique_ptr<std::barrier<>> teardown_;
    std::size_t abandon_ = 0;  ///< threads that never started (they count as arrived)
    std::mutex start_mutex_;
    std::condition_variable start_cv_;
    std::size_t ready_ = 0;
    std::exception_ptr start_error_;
    std::exception_ptr loop_error_;
    std::mutex turn_mutex_;
    std::condition_variable turn_cv_;
    std::size_t turn_ = 0;
    std::atomic<bool> stopping_{false};
    std::atomic<bool> draining_{false};
    std::atomic<bool> shutdown_called_{false};
    bool cancelled_ = false;              ///< run()'s thread only
    clock::time_point drain_deadline_{};  ///< written by shutdown() before draining_ is set
    std::atomic<std::size_t> tasks_{0};
    std::atomic<int> callers_{0};
    std::size_t last_choice_ =
        0;  ///< least_loaded()'s last pick (loop 0's thread only)  ///< spawn_on calls in progress (see caller_guard)
    int supervisor_fd_ = -1;
};

}  // namespace weft

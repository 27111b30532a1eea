// SPDX-License-Identifier: MIT
/// @file
/// @brief `backend::blocking`: blocking IO, one OS thread per task.
#pragma once

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <poll.h>
#include <pthread.h>

#include "../buffers.hpp"
#include "../core.hpp"
#include "../sys.hpp"
#include "../task.hpp"
#include "concepts.hpp"
#include "poll.hpp"

namespace weft::backend {

/// Blocking IO, thread per task: the model of the classic `fork`/thread-per-connection
/// server. Sockets are blocking; an operation is the syscall itself, made on the
/// awaiting task's own thread, which sleeps in the kernel until it completes. Nothing
/// ever suspends to the loop:
/// - `loop::spawn` starts a thread for the task, and `loop::run(task)` runs its task on
///   a thread too; the thread calling `run` is the loop thread, which runs `post()`ed
///   functions and returns when every task thread has finished (`run()`) or its own
///   task has (`run(task)`).
/// - `when_all`/`when_any`/`with_timeout` run their first child on the awaiting thread
///   and every other child on a thread of its own, then join them.
/// - `sleep_for` sleeps on the task's thread (a condition variable its stop token wakes).
/// - A blocking `receive()` first waits for readability (`poll`), so a blocked
///   connection holds no pooled buffer; then it takes one and reads.
///
/// Cancellation (a stop token, `with_timeout`, closing the socket from another task):
/// the canceller marks the call cancelled and sends the task's thread `SIGRTMIN + 3`,
/// whose handler (installed once, without `SA_RESTART`) does nothing, so the blocked
/// syscall returns `EINTR`; it repeats the signal every 100 µs until the thread has left
/// the call (a signal that lands just before the syscall starts is otherwise lost). The
/// operation then completes with `operation_canceled`, or with its real result if it
/// had finished. The socket stays usable (unlike `shutdown()`, which would end it).
///
/// What this model lacks, and why:
/// - Tasks run in parallel, on several threads: state they share needs synchronising
///   (the other backends run every task on the loop's thread).
/// - A task blocked in something other than a weft operation (its own `sleep`, a lock)
///   cannot be cancelled; destroying the loop waits for such a task to finish.
/// - A loop destroyed with tasks still blocked cancels them and joins their threads; it
///   cannot free their frames without resuming them, as the other backends do.
/// - One thread per task and per combinator child: thousands of connections mean
///   thousands of threads (8 MiB of reserved stack each, `ulimit -u`, `vm.max_map_count`).
/// - An awaitable from outside weft that suspends to the loop is not supported (nothing
///   would resume it on the task's thread): the task thread aborts with a message.
class blocking {
public:
    /// "blocking".
    static constexpr std::string_view name = "blocking";
    /// Operations complete synchronously on the task's thread.
    static constexpr backend_kind kind = backend_kind::blocking;
    /// Blocking sockets: every syscall sleeps until it can complete.
    static constexpr int socket_flags = 0;
    /// The operation record type embedded in awaiters (unused: nothing parks).
    using op_type = detail::reactor_op;
    /// Settings: the pool behind `tcp_stream::receive()` (allocated on first use).
    struct options {
        std::uint16_t buffer_count = 256;   ///< pooled buffers shared by every task thread
        std::uint32_t buffer_size = 16384;  ///< bytes per buffer
    };
    /// A buffer taken from the pool for one receive (`error` < 0: none available).
    using taken_buffer = detail::taken_buffer;

    /// Threads and blocking syscalls exist everywhere.
    static bool available() noexcept { return true; }

    /// Installs the interrupt signal's handler (once per process); creates the eventfd
    /// that wakes the loop thread. Throws `std::system_error`.
    blocking(detail::loop_core& core, options opts) : core_(core), opts_(opts) {
        install_interrupt_handler();
        wake_fd_ = sys::eventfd(0);
        if (wake_fd_ < 0) throw std::system_error(-wake_fd_, std::system_category(), "eventfd");
    }
    blocking(const blocking&) = delete;
    blocking& operator=(const blocking&) = delete;
    /// Cancels every task (their blocking calls are interrupted) and joins every thread.
    ~blocking() {
        shutdown();
        sys::close(wake_fd_);
    }

    /// Cancels every task and joins every thread (the loop calls it first thing in its
    /// destructor, so no task thread touches the loop while it is torn down).
    void shutdown() noexcept {
        stop_all();
        for (;;) {
            std::thread t;
            {
                std::lock_guard lk(threads_mutex_);
                for (auto& r : threads_)
                    if (r.thread.joinable()) {
                        t = std::move(r.thread);
                        break;
                    }
            }
            if (!t.joinable()) break;
            t.join();
        }
    }

    /// The loop this backend belongs to.
    detail::loop_core& core() const noexcept { return core_; }

    /// Nothing to register: a blocking socket needs no watcher.
    int attach(int) noexcept { return 0; }

    /// True while a thread is blocked in a call on `fd` (a socket with one cannot move
    /// to another loop: `basic_socket::release`).
    bool busy(int fd) const noexcept {
        std::lock_guard lk(calls_mutex_);
        if (fd < 0 || static_cast<std::size_t>(fd) >= calls_.size()) return false;
        for (const call* c : calls_[static_cast<std::size_t>(fd)])
            if (c) return true;
        return false;
    }

    /// Before `close(fd)`: every call blocked on `fd` in another thread is interrupted
    /// and completes with `operation_canceled`; returns once none is left in the kernel,
    /// so the fd number cannot be reused under a blocked call.
    void detach(int fd) noexcept {
        std::lock_guard lk(calls_mutex_);
        if (fd < 0 || static_cast<std::size_t>(fd) >= calls_.size()) return;
        for (call*& c : calls_[static_cast<std::size_t>(fd)]) {
            if (c && !pthread_equal(c->thread, pthread_self())) interrupt(*c);
            // The number is the next socket's once close(2) returns: a call of the old
            // socket must not make the new one's first call fail with EBUSY.
            c = nullptr;
        }
    }

    /// The loop thread's wait: until a task thread finishes, `wake()`, or `timeout`.
    /// Joins finished threads; rethrows an exception whose handler threw.
    void wait(clock::duration timeout) {
        pollfd p{wake_fd_, POLLIN, 0};
        timespec ts{};
        if (sys::detail::check(::ppoll(&p, 1, detail::to_timespec(timeout, ts), nullptr)) > 0) {
            std::uint64_t n;
            [[maybe_unused]] long r = sys::read(wake_fd_, &n, sizeof n);
        }
        reap();
        std::exception_ptr e;
        {
            std::lock_guard lk(threads_mutex_);
            e = std::exchange(escaped_, nullptr);
        }
        if (e) std::rethrow_exception(e);
    }

    /// Wakes the loop thread from any thread or a signal handler (an eventfd write).
    void wake() noexcept {
        std::uint64_t one = 1;
        [[maybe_unused]] long r = sys::write(wake_fd_, &one, sizeof one);
    }

    /// Runs `body(stop_token)` on a new thread; `token` (and the backend's teardown)
    /// stops the token it gets. `done`, if given, is set when the body has returned.
    /// Returns the thread's stop source, which lives until the thread is reaped (on the
    /// loop thread, after `done`).
    template <class Body>
    detail::stop_source& start(Body body, std::stop_token token, std::atomic<bool>* done = nullptr) {
        std::lock_guard lk(threads_mutex_);
        task_thread& rec = threads_.emplace_back();
        rec.done_flag = done;
        if (token.stop_possible()) rec.link.emplace(token, detail::request_stop_on{&rec.stop});
        if (stopping_) rec.stop.request_stop();
        live_.fetch_add(1, std::memory_order_relaxed);
        try {
            rec.thread = std::thread([this, &rec, body = std::move(body)]() mutable {
                unblock_interrupt_signal();
                WEFT_TRACE_LINE("thread started for a task");
                body(rec.stop.get_token());
                WEFT_TRACE_LINE("thread ends: its task returned");
                finished(rec);
            });
        } catch (...) {
            live_.fetch_sub(1, std::memory_order_relaxed);
            threads_.pop_back();
            throw;
        }
        return rec.stop;
    }

    /// `loop::spawn`: runs `t` on a thread of its own with stop token `token`. An
    /// exception escaping it goes to the loop's exception handler, on that thread.
    void spawn(task<void> t, std::stop_token token) {
        start(
            [this, t = std::move(t)](detail::stop_token st) mutable {
                run_on_this_thread(t.handle(), st);
                try {
                    t.handle().promise().take();
                } catch (...) {
                    report(std::current_exception());
                }
                t = task<void>();  // the frame dies on its own thread
            },
            std::move(token));
    }

    /// Resumes `h` with environment {loop, `token`}: everything it awaits completes on
    /// this thread, so it has finished when `resume()` returns.
    template <class P>
    void run_on_this_thread(std::coroutine_handle<P> h, detail::stop_token token) noexcept {
        h.promise().env = {&core_, token};
        h.resume();
        if (!h.done()) {
            std::fputs("weft: backend::blocking: a task suspended on something that is not a weft operation; "
                       "nothing can resume it on its thread\n",
                       stderr);
            std::abort();
        }
    }

    /// Task threads still running (spawned tasks and `run`'s own task).
    std::size_t live_tasks() const noexcept { return live_.load(std::memory_order_acquire); }

    /// `loop::stop` and teardown: requests stop on every task thread.
    void stop_all() noexcept {
        std::lock_guard lk(threads_mutex_);
        stopping_ = true;
        for (auto& r : threads_) r.stop.request_stop();
    }

    /// Runs `op` as one blocking call on this thread (see the class comment): its result,
    /// `-ECANCELED` if `token` stopped it first, or -errno.
    template <class Op>
    int perform(Op& op, int fd, interest dir, const detail::stop_token& token) noexcept {
        if (token.stop_requested()) return -ECANCELED;
        call c(*this, fd, dir);
        if (c.error < 0) return c.error;  // -EBUSY: another thread reads (or writes) this fd
        int r = 0;
        {
            std::optional<detail::stop_callback<interrupter>> cb;
            if (token.stop_possible()) cb.emplace(token, interrupter{this, &c});
            for (;;) {
                if (c.cancelled.load(std::memory_order_acquire)) {
                    r = -ECANCELED;
                    break;
                }
                if constexpr (requires { Op::provided_buffers; }) {
                    // Wait for data first: a blocked receive holds no buffer.
                    if (r = wait_ready(fd, interest::read, c); r < 0) break;
                }
                WEFT_TRACE_LINE("fd %d: the next call blocks this thread until it can %s", fd,
                                dir == interest::read ? "read" : "write");
                r = op.try_now();
                if constexpr (requires { Op::provided_buffers; }) {
                    // The pool is empty: wait for a lease to come back. (Only for a
                    // receive: from any other call, ENOBUFS is the kernel's error.)
                    if (r == -ENOBUFS) {
                        if (r = wait_buffer(c); r < 0) break;
                        continue;
                    }
                }
                if (r == weft::detail::yield_res) continue;  // a turn's worth done: this thread is its own
                if (r != -EAGAIN && r != -EINTR) break;     // done, or a real error
                if (r == -EINTR && c.cancelled.load(std::memory_order_acquire)) {
                    r = -ECANCELED;
                    break;
                }
                // EAGAIN: a wait (wait_readable), a connect interrupted before it
                // finished, or an accept that shed a connection: sleep until ready.
                if (r = wait_ready(fd, dir, c); r < 0) break;
            }
            c.leave();  // before the callback goes: the interrupter waits for this
        }
        return r;
    }

    /// Takes a free buffer from the shared pool (created on first use): `-ENOBUFS` when
    /// all are on loan, `-ENOMEM` if the pool cannot be allocated.
    taken_buffer take_buffer() noexcept {
        std::lock_guard lk(pool_mutex_);
        return detail::take_from(pool_, [&] { return std::make_unique<pool>(*this, opts_.buffer_count, opts_.buffer_size); });
    }
    /// Where leases of this backend's buffers go back to (from any thread).
    detail::buffer_source* buffers() noexcept { return pool_.get(); }
    /// Buffers of the pool not on loan (diagnostics and tests).
    std::size_t free_buffers() const noexcept {
        std::lock_guard lk(pool_mutex_);
        return pool_ ? pool_->free_count() : opts_.buffer_count;
    }

private:
    /// One blocking call in progress, registered per fd and direction so `detach` and
    /// cancellation can reach it, and a second concurrent call in the same direction is
    /// refused with `-EBUSY` (the rule of every backend: one reader and one writer).
    struct call {
        call(blocking& o, int f, interest d) noexcept
            : owner(o), fd(f), dir(static_cast<std::size_t>(d)), thread(pthread_self()), saved(sys::detail::interrupt_flag) {
            std::lock_guard lk(owner.calls_mutex_);
            auto* slot = weft::detail::fd_entry(owner.calls_, fd);
            if (!slot) {
                error = fd < 0 ? -EBADF : -ENOMEM;
                return;
            }
            if ((*slot)[dir]) {
                error = -EBUSY;
                return;
            }
            (*slot)[dir] = this;
            sys::detail::interrupt_flag = &cancelled;  // EINTR now ends the call when cancelled
        }
        call(const call&) = delete;
        call& operator=(const call&) = delete;
        ~call() {
            if (error < 0) return;
            std::lock_guard lk(owner.calls_mutex_);
            call*& mine = owner.calls_[static_cast<std::size_t>(fd)][dir];
            if (mine == this) mine = nullptr;  // (detach may have let a new socket's call have it)
        }
        /// The thread has left the syscall for good.
        void leave() noexcept {
            sys::detail::interrupt_flag = saved;
            in_call.store(false, std::memory_order_release);
        }
        blocking& owner;
        int fd;
        std::size_t dir;
        pthread_t thread;
        const std::atomic<bool>* saved;
        int error = 0;  ///< not registered: -EBUSY, -EBADF or -ENOMEM
        std::atomic<bool> cancelled{false};
        std::atomic<bool> in_call{true};
    };

    /// A stop callback: interrupts the call it guards.
    struct interrupter {
        blocking* self;
        call* c;
        void operator()() const noexcept { self->interrupt(*c); }
    };

    /// Marks `c` cancelled and signals its thread until it has left the syscall. On the
    /// call's own thread (its token was stopped just as it started) marking is enough:
    /// the call checks the mark before every syscall.
    void interrupt(call& c) noexcept {
        c.cancelled.store(true, std::memory_order_release);
        if (pthread_equal(c.thread, pthread_self())) return;
        while (c.in_call.load(std::memory_order_acquire)) {
            pthread_kill(c.thread, interrupt_signal());
            std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
    }

    /// Sleeps in `poll` until `fd` is ready in `dir`; 0, `-ECANCELED`, or -errno.
    static int wait_ready(int fd, interest dir, call& c) noexcept {
        pollfd p{fd, static_cast<short>(dir == interest::read ? POLLIN : POLLOUT), 0};
        for (;;) {
            if (c.cancelled.load(std::memory_order_acquire)) return -ECANCELED;
            int n = sys::poll(&p, 1, -1);
            if (n >= 0) return 0;  // ready (or hung up / in error: the syscall will say)
            if (n != -EINTR) return n;
        }
    }

    /// Waits until a pooled buffer is free (or the call is cancelled).
    int wait_buffer(call& c) noexcept {
        std::unique_lock lk(pool_mutex_);
        while (pool_ && pool_->free_count() == 0) {
            if (c.cancelled.load(std::memory_order_acquire)) return -ECANCELED;
            pool_->returned.wait_for(lk, std::chrono::milliseconds(5));
        }
        return 0;
    }

    /// The shared buffer pool: leases come back from any thread, under the mutex, and
    /// wake one task thread waiting for a buffer.
    struct pool final : detail::buffer_source, detail::buffer_pool {
        pool(blocking& b, std::uint16_t count, std::uint32_t size) : buffer_pool(count, size), owner(b) {}
        void give_back(std::uint16_t id) noexcept override {
            {
                std::lock_guard lk(owner.pool_mutex_);
                put(id);
            }
            returned.notify_one();
        }
        blocking& owner;
        std::condition_variable returned;
    };

    /// One task thread.
    struct task_thread {
        std::thread thread;
        detail::stop_source stop;  ///< its tasks' token (in place: a list node never moves)
        std::optional<std::stop_callback<detail::request_stop_on>> link;  ///< the spawner's token → `stop`
        std::atomic<bool>* done_flag = nullptr;
        bool done = false;
    };

    void finished(task_thread& rec) noexcept {
        live_.fetch_sub(1, std::memory_order_acq_rel);  // first: whoever sees `done` sees it gone
        {
            std::lock_guard lk(threads_mutex_);
            rec.done = true;
            if (rec.done_flag) rec.done_flag->store(true, std::memory_order_release);
        }
        wake();
    }

    /// Joins the threads that have finished and forgets them (loop thread).
    void reap() {
        std::list<task_thread> finished_threads;
        {
            std::lock_guard lk(threads_mutex_);
            for (auto it = threads_.begin(); it != threads_.end();) {
                auto next = std::next(it);
                if (it->done) finished_threads.splice(finished_threads.end(), threads_, it);
                it = next;
            }
        }
        for (auto& r : finished_threads)
            if (r.thread.joinable()) r.thread.join();
    }

    /// An exception escaped a spawned task: the loop's handler sees it on this thread;
    /// if the handler throws, `run()` rethrows on the loop thread.
    void report(std::exception_ptr e) noexcept {
        std::lock_guard lk(report_mutex_);  // one handler call at a time
        try {
            core_.report_exception(std::move(e));
        } catch (...) {
            std::lock_guard tl(threads_mutex_);
            if (!escaped_) escaped_ = std::current_exception();
        }
        wake();
    }

    static int interrupt_signal() noexcept { return SIGRTMIN + 3; }
    static void install_interrupt_handler() {
        static std::once_flag once;
        std::call_once(once, [] {
            struct sigaction sa {};
            sa.sa_handler = [](int) {};  // only there to make the blocked syscall return EINTR
            sigemptyset(&sa.sa_mask);
            sa.sa_flags = 0;  // no SA_RESTART
            if (::sigaction(interrupt_signal(), &sa, nullptr) != 0)
                throw std::system_error(errno, std::system_category(), "sigaction for the interrupt signal");
        });
    }
    static void unblock_interrupt_signal() noexcept {
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, interrupt_signal());
        pthread_sigmask(SIG_UNBLOCK, &s, nullptr);
    }

    detail::loop_core& core_;
    options opts_;
    int wake_fd_ = -1;
    std::mutex threads_mutex_;
    std::list<task_thread> threads_;
    std::atomic<std::size_t> live_{0};
    bool stopping_ = false;
    std::exception_ptr escaped_;
    std::mutex report_mutex_;
    mutable std::mutex calls_mutex_;
    std::vector<std::array<call*, 2>> calls_;  ///< per fd: the blocked reader and writer
    mutable std::mutex pool_mutex_;
    std::unique_ptr<pool> pool_;
};

}  // namespace weft::backend

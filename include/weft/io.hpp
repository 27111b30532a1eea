// SPDX-License-Identifier: MIT
/// @file
/// @brief `io_awaiter<Backend, Op>`, the one place where reactor and proactor differ,
/// and the table of byte-stream operations it runs.
///
/// An operation is a small description (`Op`) with a reactor face, `try_now()` (the
/// non-blocking syscall: a result >= 0 or -errno, `-EAGAIN` = not yet), and a result
/// face, `make(res)`, that turns the final `int` into a `result<T>`. The awaiter holds
/// the description and the record the backend links, so one `co_await` allocates nothing.
#pragma once

#include <cerrno>
#include <concepts>
#include <cstddef>
#include <optional>
#include <span>
#include <stop_token>
#include <type_traits>

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <climits>

#include "backend/concepts.hpp"
#include "buffers.hpp"
#include "result.hpp"
#include "sys.hpp"

namespace weft {
namespace detail {

/// Internal result code for "the peer closed before the buffer was full" (not an errno:
/// errno values stop at 4095).
inline constexpr int eof_res = -4096;
/// Internal result code for "a read was given no room": 0 bytes would read as EOF, so
/// such a read completes at once with `errc::empty_buffer` and makes no syscall.
inline constexpr int empty_res = -4097;

/// A failed read's result: `errc::empty_buffer` or the errno (out of line: rare).
[[gnu::noinline, gnu::cold]] inline result<std::size_t> read_error(int res) noexcept {
    if (res == empty_res) return errc::empty_buffer;
    return to_result<std::size_t>(res);
}
/// The result of a read: bytes read (0 = EOF), `errc::empty_buffer`, or the errno.
inline result<std::size_t> read_result(int res) noexcept {
    if (res >= 0) [[likely]]
        return static_cast<std::size_t>(res);  // the hot path, inlined into every read's await_resume
    return read_error(res);
}

/// `recv` into one buffer: bytes read, 0 at EOF.
struct recv_op {
    int fd;
    std::span<std::byte> buf;
    static constexpr interest dir = interest::read;
    int try_now() noexcept {
        if (buf.empty()) return empty_res;
        return static_cast<int>(sys::recv(fd, buf.data(), buf.size(), 0));
    }
    template <class P>
    void prepare(P& p) noexcept {
        if (buf.empty()) return p.complete_now(empty_res);
        p.recv(fd, buf.data(), buf.size());
    }
    /// A short read means the socket is drained (the edge-triggered hint).
    bool drained(int res) const noexcept { return static_cast<std::size_t>(res) < buf.size(); }
    result<std::size_t> make(int res) const noexcept { return read_result(res); }
};

/// `send` from one buffer (`MSG_NOSIGNAL`): bytes written, possibly fewer than asked.
struct send_op {
    int fd;
    std::span<const std::byte> buf;
    static constexpr interest dir = interest::write;
    int try_now() noexcept { return static_cast<int>(sys::send(fd, buf.data(), buf.size(), 0)); }
    template <class P>
    void prepare(P& p) noexcept {
        p.send(fd, buf.data(), buf.size());
    }
    bool drained(int res) const noexcept { return static_cast<std::size_t>(res) < buf.size(); }
    result<std::size_t> make(int res) const noexcept { return to_result<std::size_t>(res); }
};

/// Reads until the buffer is full; progress survives `EAGAIN`, so it is one operation
/// (one awaiter, no allocation) however many syscalls it takes.
struct read_exact_op {
    int fd;
    std::span<std::byte> buf;
    std::size_t done = 0;
    static constexpr interest dir = interest::read;
    int try_now() noexcept {
        while (done < buf.size()) {
            long r = sys::recv(fd, buf.data() + done, buf.size() - done, 0);
            if (r < 0) return static_cast<int>(r);
            if (r == 0) return eof_res;
            done += static_cast<std::size_t>(r);
        }
        return 0;
    }
    template <class P>
    void prepare(P& p) noexcept {
        if (done < buf.size())
            p.recv(fd, buf.data() + done, buf.size() - done);
        else
            p.nop();
    }
    /// Proactor: one completion's worth of progress; false = submit the rest.
    bool finish(int& res) noexcept {
        if (res < 0) return true;
        if (res == 0 && done < buf.size()) {
            res = eof_res;
            return true;
        }
        done += static_cast<std::size_t>(res);
        if (done < buf.size()) return false;
        res = 0;
        return true;
    }
    bool drained(int) const noexcept { return false; }
    result<std::size_t> make(int res) const noexcept {
        if (res == eof_res) return errc::eof;
        if (res < 0) return to_result<std::size_t>(res);
        return buf.size();
    }
};

/// Writes the whole buffer, looping over partial writes; progress survives `EAGAIN`.
struct write_all_op {
    int fd;
    std::span<const std::byte> buf;
    std::size_t done = 0;
    static constexpr interest dir = interest::write;
    int try_now() noexcept {
        while (done < buf.size()) {
            long r = sys::send(fd, buf.data() + done, buf.size() - done, 0);
            if (r < 0) return static_cast<int>(r);
            done += static_cast<std::size_t>(r);
        }
        return 0;
    }
    template <class P>
    void prepare(P& p) noexcept {
        if (done < buf.size())
            p.send(fd, buf.data() + done, buf.size() - done);
        else
            p.nop();
    }
    /// Proactor: one completion's worth of progress; false = submit the rest.
    bool finish(int& res) noexcept {
        if (res < 0) return true;
        done += static_cast<std::size_t>(res);
        if (done < buf.size()) return false;
        res = 0;
        return true;
    }
    bool drained(int) const noexcept { return false; }
    result<std::size_t> make(int res) const noexcept {
        if (res < 0) return to_result<std::size_t>(res);
        return buf.size();
    }
};

/// Waits until the fd is readable or writable, without transferring data.
struct wait_op {
    int fd;
    interest dir;
    int try_now() noexcept {
        // A zero-timeout poll, not a blind -EAGAIN: under edge triggering a socket that is
        // already ready would never produce another edge.
        pollfd p{fd, static_cast<short>(dir == interest::read ? POLLIN : POLLOUT), 0};
        int r = sys::poll(&p, 1, 0);
        if (r < 0) return r;
        return r == 0 ? -EAGAIN : 0;
    }
    template <class P>
    void prepare(P& p) noexcept {
        p.poll(fd, dir == interest::read ? POLLIN : POLLOUT);
    }
    bool finish(int& res) noexcept {
        if (res > 0) res = 0;  // the poll mask: ready
        return true;
    }
    bool drained(int) const noexcept { return false; }
    result<void> make(int res) const noexcept { return to_result(res); }
};

/// Skips `n` bytes at the front of `iov` (the progress of a vectored operation): whole
/// entries are dropped, a partly done entry is shortened in place.
inline std::span<iovec> advance(std::span<iovec> iov, std::size_t n) noexcept {
    while (!iov.empty() && n >= iov.front().iov_len) {
        n -= iov.front().iov_len;
        iov = iov.subspan(1);
    }
    if (!iov.empty() && n > 0) {
        iov.front().iov_base = static_cast<char*>(iov.front().iov_base) + n;
        iov.front().iov_len -= n;
    }
    return iov;
}

/// A `msghdr` over (at most `IOV_MAX` entries of) `iov`; longer arrays finish in
/// further calls, so any number of entries works.
inline msghdr message_of(std::span<iovec> iov) noexcept {
    msghdr m{};
    m.msg_iov = iov.data();
    m.msg_iovlen = iov.size() < IOV_MAX ? iov.size() : IOV_MAX;
    return m;
}

/// A `msghdr` over one buffer, through `iov` (which must live as long as the message):
/// what the datagram and fd-passing operations start from, before their own fields.
inline msghdr message_of_one(iovec& iov, const void* data, std::size_t size) noexcept {
    iov = {const_cast<void*>(data), size};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    return m;
}

inline std::size_t total_of(std::span<const iovec> iov) noexcept {
    std::size_t n = 0;
    for (const iovec& v : iov) n += v.iov_len;
    return n;
}

/// The bytes one `recvmsg`/`sendmsg` over `iov` can move: the first `IOV_MAX` entries
/// (see `message_of`). Moving fewer than that, not fewer than the whole array, is what
/// says "drained".
inline std::size_t one_call_total(std::span<const iovec> iov) noexcept {
    return total_of(iov.first(iov.size() < IOV_MAX ? iov.size() : IOV_MAX));
}

/// One vectored `recvmsg` (scatter, `Dir` read: bytes read, 0 at EOF) or `sendmsg`
/// (gather, `Dir` write: bytes written, possibly fewer than asked).
template <interest Dir>
struct message_op {
    int fd;
    std::span<iovec> iov;
    msghdr msg{};
    static constexpr interest dir = Dir;
    int try_now() noexcept {
        msg = message_of(iov);
        if constexpr (Dir == interest::read) {
            if (total_of(iov) == 0) return empty_res;
            return static_cast<int>(sys::recvmsg(fd, &msg, 0));
        } else {
            return static_cast<int>(sys::sendmsg(fd, &msg, 0));
        }
    }
    template <class P>
    void prepare(P& p) noexcept {
        msg = message_of(iov);
        if constexpr (Dir == interest::read) {
            if (total_of(iov) == 0) return p.complete_now(empty_res);
            p.recvmsg(fd, &msg);
        } else {
            p.sendmsg(fd, &msg);
        }
    }
    bool drained(int res) const noexcept { return static_cast<std::size_t>(res) < one_call_total(iov); }
    result<std::size_t> make(int res) const noexcept { return read_result(res); }
};
/// Vectored read of what is available.
using readv_op = message_op<interest::read>;
/// Vectored write of what the socket takes now.
using writev_op = message_op<interest::write>;

/// Vectored write of every entry, looping over partial writes (the entries are
/// advanced in place); yields the total.
struct writev_all_op {
    int fd;
    std::span<iovec> iov;
    msghdr msg{};
    std::size_t done = 0;
    static constexpr interest dir = interest::write;
    int try_now() noexcept {
        while (!iov.empty()) {
            msg = message_of(iov);
            long r = sys::sendmsg(fd, &msg, 0);
            if (r < 0) return static_cast<int>(r);
            done += static_cast<std::size_t>(r);
            iov = advance(iov, static_cast<std::size_t>(r));
        }
        return 0;
    }
    template <class P>
    void prepare(P& p) noexcept {
        msg = message_of(iov);
        if (iov.empty())
            p.nop();
        else
            p.sendmsg(fd, &msg);
    }
    bool finish(int& res) noexcept {
        if (res < 0) return true;
        done += static_cast<std::size_t>(res);
        iov = advance(iov, static_cast<std::size_t>(res));
        if (!iov.empty()) return false;
        res = 0;
        return true;
    }
    bool drained(int) const noexcept { return false; }
    result<std::size_t> make(int res) const noexcept {
        if (res < 0) return to_result<std::size_t>(res);
        return done;
    }
};

/// Receives into a buffer the backend provides; yields a `buffer_lease` (empty at EOF).
template <class Backend>
struct receive_op {
    int fd;
    Backend* backend;
    buffer_lease lease{};
    bool full = false;  ///< the last receive filled its buffer: more may be queued
    static constexpr interest dir = interest::read;
    static constexpr bool provided_buffers = true;
    /// Reactor face: a buffer is taken only now that data may be there, and given back
    /// at once on `EAGAIN`, so a waiting receive holds no buffer.
    int try_now() noexcept {
        auto b = backend->take_buffer();
        if (b.error < 0) return b.error;  // -ENOBUFS: the backend parks us until one returns
        long r = sys::recv(fd, b.data, b.size, 0);
        if (r <= 0) {
            backend->buffers()->give_back(b.id);
            return static_cast<int>(r);
        }
        lease = buffer_lease(backend->buffers(), b.data, static_cast<std::size_t>(r), b.id);
        full = static_cast<std::size_t>(r) == b.size;
        return static_cast<int>(r);
    }
    bool drained(int) const noexcept { return !full; }
    /// Proactor face: the kernel picks the buffer when data arrives.
    template <class P>
    void prepare(P& p) noexcept {
        p.recv_provided(fd);
    }
    bool finish(int& res, std::uint64_t flags) noexcept {
        lease = backend->lease_from_completion(res, flags);
        return true;
    }
    result<buffer_lease> make(int res) noexcept {
        if (res < 0) return errno_code(-res);
        return std::move(lease);
    }
};

/// Ops whose direction is chosen at run time expose it as a member; others as a constant.
template <class Op>
interest direction_of(const Op& op) noexcept {
    if constexpr (std::is_member_object_pointer_v<decltype(&Op::dir)>)
        return op.dir;
    else
        return Op::dir;
}

}  // namespace detail

/// What `io_awaiter<Backend, Op>` needs of an operation `Op` on `Backend`: the contract
/// weft's own operations follow, and the extension point for operations weft does not
/// have (`docs/guides/custom-operations.md` writes one and its tests).
///
/// Every backend:
/// - `dir`, an `interest` (`static constexpr`, or a member when it is chosen at run
///   time): the direction the operation waits in. One operation per direction may be
///   pending on a socket;
/// - `make(int res)`: the final result, `res >= 0` or `-errno`, as the `result<T>` the
///   `co_await` yields (`op_result<T>(res)` is weft's own conversion);
/// - nothrow move construction: the operation is moved into its awaiter before it
///   starts, so anything that points into it (a `msghdr` at its `iovec`) is built when
///   it runs, in `try_now` or `prepare`, never in its constructor.
///
/// A reactor (`select`, `poll`, `epoll_*`, `sigio`, `spin`) also needs `int try_now()`,
/// the non-blocking syscall (a result `>= 0`, `-errno`, `-EAGAIN` for "not yet"; call it
/// through `weft::sys`, so the fault hook reaches it), and `bool drained(int res)`, true
/// when a successful result proves the socket empty (a short read), which lets an
/// edge-triggered backend park without another try. The blocking backend calls the same
/// `try_now` on a blocking socket. A proactor (`uring`) needs `prepare(P& p)`, which
/// describes the submission through the backend's `preparer` (`p.recv`, `p.recvmsg`,
/// `p.send`, `p.poll`, ...), and may have `bool finish(int& res)` to take a completion's
/// progress and ask for another submission (false).
template <class Op, class Backend>
concept io_operation =
    std::is_nothrow_move_constructible_v<Op> && requires(Op& op, int res) {
        { detail::direction_of(op) } -> std::same_as<interest>;
        op.make(res);
    } && (Backend::kind != backend_kind::reactor || requires(Op& op, int res) {
             { op.try_now() } -> std::same_as<int>;
             { op.drained(res) } -> std::convertible_to<bool>;
         }) && (Backend::kind != backend_kind::blocking || requires(Op& op) {
                   { op.try_now() } -> std::same_as<int>;
               }) && (Backend::kind != backend_kind::proactor || requires(Op& op, typename Backend::preparer& p) {
                         op.prepare(p);
                     });

/// The conversion of an operation's final `int` (`>= 0`, or `-errno`) to `result<T>`,
/// for operations written outside weft: the one weft's own operations use.
template <class T = void>
result<T> op_result(long res) noexcept {
    return detail::to_result<T>(res);
}

namespace detail {
/// The operation record an `io_awaiter` embeds: the backend's kind decides.
template <class Backend>
using op_record_t =
    std::conditional_t<Backend::kind == backend_kind::proactor, detail::proactor_op, detail::reactor_op>;
}  // namespace detail

/// The awaiter of every IO operation: `co_await` yields `Op::make(res)`, a `result<T>`.
///
/// This is the one place where reactor and proactor differ:
/// - a reactor tries the syscall first (`await_ready`) and parks the operation only on
///   `EAGAIN`; the backend re-runs it on readiness and resumes the coroutine only when it
///   finished, so spurious readiness never reaches user code. After a bounded number of
///   synchronous completions the operation yields to the loop instead (fairness);
/// - a proactor always submits: the backend fills a submission through `Op::prepare`
///   and hands each completion to `Op::finish` (which may ask to submit again);
/// - a blocking backend makes the call on the awaiting thread (`Op::try_now` on a
///   blocking socket) and never suspends.
///
/// The stop token of the awaiting task cancels a pending operation: it then completes
/// once with `operation_canceled` (or, on a proactor, its real result if the kernel had
/// already finished it) and never touches its buffer afterwards.
template <class Backend, class Op>
class [[nodiscard("an IO operation does nothing until it is awaited: is a co_await missing?")]] io_awaiter
    : private detail::op_record_t<Backend> {
    static_assert(io_operation<Op, Backend>,
                  "Op is not an IO operation for this backend: see weft::io_operation for what it needs "
                  "(dir, make, and try_now + drained on a reactor, try_now on blocking, prepare on a proactor)");
    using record = detail::op_record_t<Backend>;
    static constexpr bool is_reactor = Backend::kind == backend_kind::reactor;
    static constexpr bool is_blocking = Backend::kind == backend_kind::blocking;

public:
    /// An operation `op` on `backend` (null for a closed socket: it fails with `EBADF`);
    /// nothing happens until it is awaited.
    io_awaiter(Backend * backend, Op op) noexcept : backend_(backend), op_(std::move(op)) {}
    /// Moves a not-yet-awaited operation (e.g. into `with_timeout`).
    io_awaiter(io_awaiter && o) noexcept : record(), backend_(o.backend_), op_(std::move(o.op_)) {
        assert(o.state == detail::op_state::idle);
    }
    io_awaiter& operator=(io_awaiter&&) = delete;
    /// Unlinks an operation whose frame is destroyed before it was resumed (a loop
    /// torn down with tasks in it): still pending in the backend (a proactor waits for
    /// the kernel to let go of it), or completed and queued. A completed result that
    /// owns a resource (an accepted fd) is released.
    ~io_awaiter() {
        if constexpr (!is_blocking) {  // (a blocking call has finished when it returns)
            stop_.reset();
            if (this->state == detail::op_state::parked) {
                backend_->forget(*this);
                // A proactor waited for the kernel's completion; what it produced is
                // nobody's now (an accepted connection must not leak its fd). Only a
                // settled result counts: if the ring failed, `res` is not the kernel's.
                if constexpr (!is_reactor && requires { op_.discard(0); })
                    if (this->state == detail::op_state::idle) op_.discard(this->res);
            }
            if (this->state == detail::op_state::ready) {
                backend_->core().unqueue(*this);
                if constexpr (requires { op_.discard(0); }) op_.discard(this->res);
            }
            // A proactor's async cancel may still be on its way back: it names this
            // operation, so the operation must outlive it.
            if constexpr (!is_reactor)
                if (this->cancels_out > 0) backend_->forget(*this);
        }
    }

    /// Reactor: try the syscall now; true if it completed without waiting. On a closed
    /// socket (no backend) it completes at once with `EBADF`.
    bool await_ready() noexcept {
        if (!backend_) [[unlikely]] {
            this->res = -EBADF;
            return true;
        }
        if constexpr (is_blocking) {
            return false;  // the call needs the task's stop token: made in await_suspend
        } else if constexpr (is_reactor) {
            if (!backend_->should_try(op_.fd, detail::direction_of(op_))) return false;
            if (!backend_->core().take_budget()) {
                this->deferred = true;
                return false;
            }
            return attempt();
        } else {
            return false;  // a proactor always submits
        }
    }

    /// Parks the operation (or queues its retry, or its submission) and arms cancellation.
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) {
        detail::task_env env = detail::env_of(h);
        if constexpr (is_blocking) {  // the blocking syscall, on this thread; never suspends
            this->res = backend_->perform(op_, op_.fd, detail::direction_of(op_), env.token);
            return false;
        } else {
            return park_or_submit(h, env);
        }
    }

    /// The operation's result; the single conversion from `int` to `result<T>`. (The
    /// stop callback goes with the awaiter, at the end of the `co_await` expression: a
    /// stop request in between finds the operation no longer parked and does nothing.)
    auto await_resume() noexcept { return op_.make(this->res); }

private:
    bool park_or_submit(std::coroutine_handle<> h, const detail::task_env& env) {
        if (env.token.stop_requested()) {
            this->res = -ECANCELED;
            if constexpr (is_reactor) this->deferred = false;
            return false;
        }
        this->continuation = h;
        this->fd = op_.fd;
        this->dir = detail::direction_of(op_);
        int err = 0;
        if constexpr (is_reactor) {
            this->perform = &io_awaiter::perform_;
            if (this->deferred)
                backend_->defer(*this);
            else
                err = backend_->park(*this);
        } else {
            this->prepare = &io_awaiter::prepare_;
            this->finish = &io_awaiter::finish_;
            err = backend_->submit(*this);
        }
        if (err < 0) {
            this->res = err;
            return false;
        }
        if (env.token.stop_possible()) stop_.emplace(env.token, canceller{this});
        return true;
    }

    bool attempt() noexcept {
        this->res = op_.try_now();
        if (this->res == -EAGAIN) {
            backend_->note_drained(op_.fd, detail::direction_of(op_));
            return false;
        }
        if constexpr (requires { Op::provided_buffers; }) {
            if (this->res == -ENOBUFS) return false;  // every buffer on loan: the backend parks us
        }
        if constexpr (requires { Op::yields; }) {
            if (this->res == detail::yield_res) {  // more to do after others had a turn
                this->deferred = true;
                return false;
            }
        }
        if (this->res >= 0 && op_.drained(this->res))
            backend_->note_drained(op_.fd, detail::direction_of(op_), /*eagain=*/false);
        return true;
    }
    static bool perform_(detail::reactor_op & base) noexcept { return static_cast<io_awaiter&>(base).attempt(); }

    static void prepare_(detail::proactor_op & base, void* preparer) noexcept {
        static_cast<io_awaiter&>(base).op_.prepare(*static_cast<typename Backend::preparer*>(preparer));
    }
    static bool finish_(detail::proactor_op & base, int res, std::uint64_t flags) noexcept {
        auto& self = static_cast<io_awaiter&>(base);
        self.res = res;
        if constexpr (requires { self.op_.finish(self.res, flags); })
            return self.op_.finish(self.res, flags);
        else if constexpr (requires { self.op_.finish(self.res); })
            return self.op_.finish(self.res);
        else
            return true;
    }

    struct canceller {
        io_awaiter* self;
        void operator()() const noexcept {
            self->backend_->core().assert_loop_thread();
            self->backend_->cancel(*self);
        }
    };
    Backend* backend_;
    Op op_;
    std::optional<detail::stop_callback<canceller>> stop_;
};

}  // namespace weft

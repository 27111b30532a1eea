// SPDX-License-Identifier: MIT
/// @file
/// @brief `reactor<Demux>`: the readiness engine every readiness model shares.
///
/// Everything about reactors is written once here: the per-fd table of parked
/// operations, re-running an operation on readiness, cancellation, the retry list of
/// the cooperative budget, and the cross-thread wake-up (an eventfd watched like any
/// socket). A readiness model only supplies a `Demux` with add/modify/remove/wait.
///
/// A `Demux` has `name`, `edge_triggered`, `available()`, a constructor that throws
/// `std::system_error` on failure, `add(fd, mask)`, `modify(fd, mask)`, `remove(fd)`
/// (mask bit 1 = read, 2 = write; each 0 or -errno) and `wait(timeout, on_ready)`,
/// which calls `on_ready(fd, readable, writable, closed)` per ready fd. Optional:
/// `fd_limit` (fds at or above it are refused with `weft::errc::fd_too_large`),
/// `set_wake_fd(fd)` (told which fd is the loop's wake-up eventfd) and `wake()` (called
/// after the eventfd write, for models whose wait does not watch fds: sigio).
///
/// Two interest policies, chosen by `Demux::edge_triggered`:
/// - level-triggered: interest in a direction is registered when an operation first
///   parks and kept while operations keep parking (an echo server re-parks its read at
///   once, so steady state costs no `epoll_ctl`); it is dropped lazily, when the fd
///   reports ready and nobody waits. The cost is at most one spurious wake-up per
///   direction after the last operation.
/// - edge-triggered: both directions are registered once, at `attach`. Each fd keeps a
///   "may be ready" hint per direction, set by every event and cleared by `EAGAIN` or a
///   short read/write; while it is clear, new operations park without trying the syscall.
///   A hang-up, an error or urgent data is sticky: data and FIN can arrive in one edge,
///   and after the short read that takes the data no new edge announces the EOF still to
///   be read; a read stops short at TCP's urgent mark with more bytes queued behind it.
#pragma once

#include <cerrno>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <sys/eventfd.h>
#include <sys/socket.h>

#include "../buffers.hpp"
#include "../core.hpp"
#include "../result.hpp"
#include "../sys.hpp"
#include "concepts.hpp"

namespace weft::backend {

/// The generic readiness backend over a demultiplexer `Demux` (see the file comment).
template <class Demux>
class reactor {
public:
    /// Same name as the demultiplexer: "epoll_et", "select", ...
    static constexpr std::string_view name = Demux::name;
    /// A readiness backend.
    static constexpr backend_kind kind = backend_kind::reactor;
    /// True when readiness is reported once per change, so a short read or write is
    /// taken to mean "drained" (the kernel guarantees a new edge for new data).
    static constexpr bool edge_triggered = Demux::edge_triggered;
    /// Reactor sockets never block: every syscall may return `EAGAIN`.
    static constexpr int socket_flags = SOCK_NONBLOCK;
    /// Descriptors at or above this are refused with `weft::errc::fd_too_large` (the
    /// demultiplexer's `fd_limit`, e.g. `FD_SETSIZE` for select; INT_MAX when it has none),
    /// so a server can tell how many connections the model can hold before it tries.
    static constexpr int fd_limit = [] {
        if constexpr (requires { Demux::fd_limit; }) return int{Demux::fd_limit};
        else return std::numeric_limits<int>::max();
    }();
    /// The operation record type parked here.
    using op_type = detail::reactor_op;
    /// Settings: the pool behind `tcp_stream::receive()` (allocated on first use).
    struct options {
        std::uint16_t buffer_count = 256;   ///< provided buffers in the loop's pool
        std::uint32_t buffer_size = 16384;  ///< bytes per provided buffer
    };

    /// A buffer taken from the pool for one receive (`error` < 0: none available).
    using taken_buffer = detail::taken_buffer;

    /// Whether the demultiplexer works in this process.
    static bool available() noexcept { return Demux::available(); }

    /// Creates the demultiplexer and the wake-up eventfd; throws `std::system_error`.
    explicit reactor(detail::loop_core& core, options opts = {}) : core_(core), opts_(opts) {
        wake_fd_ = sys::eventfd(0);
        if (wake_fd_ < 0) throw std::system_error(-wake_fd_, std::system_category(), "eventfd");
        wake_op_.fd = wake_fd_;
        wake_op_.dir = interest::read;
        wake_op_.perform = &drain_wake;
        if constexpr (requires(Demux& d) { d.set_wake_fd(0); }) demux_.set_wake_fd(wake_fd_);
        if (int err = attach(wake_fd_); err < 0 || (err = park(wake_op_)) < 0) {
            sys::close(wake_fd_);
            throw std::system_error(-err, std::system_category(), "registering the wake-up eventfd");
        }
    }
    reactor(const reactor&) = delete;
    reactor& operator=(const reactor&) = delete;
    ~reactor() {
        forget(wake_op_);
        sys::close(wake_fd_);
    }

    /// The loop this backend completes operations into.
    detail::loop_core& core() const noexcept { return core_; }

    /// Registers a new socket: edge-triggered demuxes watch both directions from now on.
    int attach(int fd) noexcept {
        if (fd >= fd_limit) return detail::negative(errc::fd_too_large);
        slot* s = grow(fd);
        if (!s) return -ENOMEM;
        s->attached = true;
        s->ready[0] = s->ready[1] = true;
        s->closed = false;
        if constexpr (Demux::edge_triggered) {
            int err = demux_.add(fd, 3);
            if (err < 0) {
                s->attached = false;
                return err;
            }
            s->registered = 3;
        }
        return 0;
    }

    /// True when an operation is parked on `fd` (a socket with one cannot move to
    /// another loop: `basic_socket::release`).
    bool busy(int fd) const noexcept {
        const slot* s = slots_.find(fd);
        return s && (s->waiter[0] || s->waiter[1]);
    }

    /// Before `close(fd)`: completes the fd's parked operations with `-ECANCELED` and
    /// stops watching it, so no stale event reaches a later socket with the same number.
    void detach(int fd) noexcept {
        slot* found = slots_.find(fd);
        if (!found) return;
        slot& s = *found;
        for (detail::reactor_op* op : s.waiter) {
            if (op) {
                unlink(*op);
                core_.complete(*op, -ECANCELED);
            }
        }
        if (s.registered) demux_.remove(fd);
        s = slot{};
    }

    /// Re-runs the operation parked on `fd` in direction `dir` on the next iteration,
    /// readiness or not: for a local change the model may not report. (`sigio` gets no
    /// signal for the socket's own `shutdown(SHUT_RD)`, after which a read finds EOF.)
    void kick(int fd, interest dir) {
        slot* s = slots_.find(fd);
        if (!s) return;
        detail::reactor_op* op = s->waiter[index(dir)];
        if (op && !op->deferred && !op->buffer_wait) defer(*op);
    }

    /// Edge-triggered: false while the fd is known to be drained in `dir`.
    bool should_try(int fd, interest dir) const noexcept {
        if constexpr (Demux::edge_triggered) {
            if (const slot* s = slots_.find(fd)) return s->ready[index(dir)] || s->closed;
        }
        return true;
    }

    /// True when a short read or write is taken to mean "drained": edge-triggered
    /// demuxes, unless one says `short_io_drains = false` (sigio: a FIN's signal cannot
    /// be told from a data signal, so after a short read only `EAGAIN` proves the socket
    /// empty; the extra `recv` finds the EOF that arrived in the same batch).
    static constexpr bool short_io_drains = [] {
        if constexpr (requires { Demux::short_io_drains; })
            return Demux::edge_triggered && Demux::short_io_drains;
        else
            return Demux::edge_triggered;
    }();

    /// Records that `fd` returned `EAGAIN` (`eagain`) or a short result in `dir`.
    void note_drained(int fd, interest dir, bool eagain = true) noexcept {
        if (!eagain && !short_io_drains) return;
        if constexpr (Demux::edge_triggered) {
            if (slot* s = slots_.find(fd)) s->ready[index(dir)] = false;
        }
    }

    /// Parks `op` until its fd is ready in `op.dir`; 0, `-EBUSY` (another operation of
    /// that direction is parked), or the demultiplexer's error (`fd_too_large` for select).
    int park(detail::reactor_op& op) noexcept {
        if (op.fd < 0) return -EBADF;  // a closed stream (wait_readable polls nothing: it would wait forever)
        slot* s = grow(op.fd);
        if (!s) return -ENOMEM;
        std::size_t d = index(op.dir);
        if (s->waiter[d] && s->waiter[d] != &op) return -EBUSY;
        if (op.res == -ENOBUFS) {
            if (int err = wait_for_buffer(op); err < 0) return err;
            s->waiter[d] = &op;
            return 0;
        }
        if (!s->attached) {
            if (int err = attach(op.fd); err < 0) return err;
        }
        if (int err = arm(op.fd, *s, d); err < 0) return err;
        s->waiter[d] = &op;
        op.state = detail::op_state::parked;
        WEFT_TRACE_LINE("park fd %d %s", op.fd, d == 0 ? "read" : "write");
        return 0;
    }

    /// Queues `op` to be tried on the next iteration, without waiting for readiness.
    void defer(detail::reactor_op& op) {
        slot* s = grow(op.fd);
        std::size_t d = index(op.dir);
        if (!s || (s->waiter[d] && s->waiter[d] != &op)) {
            op.deferred = false;
            core_.complete(op, op.fd < 0 ? -EBADF : s ? -EBUSY : -ENOMEM);
            return;
        }
        s->waiter[d] = &op;
        op.state = detail::op_state::parked;
        op.deferred = true;
        deferred_.push_back(&op);
    }

    /// Completes a parked `op` with `-ECANCELED`; does nothing if it already completed.
    void cancel(detail::reactor_op& op) noexcept {
        if (op.state != detail::op_state::parked) return;
        unlink(op);
        core_.complete(op, -ECANCELED);
    }

    /// Drops a parked `op` without completing it (its frame is being destroyed).
    void forget(detail::reactor_op& op) noexcept {
        if (op.state != detail::op_state::parked) return;
        unlink(op);
        op.state = detail::op_state::idle;
    }

    /// One wait: sleeps at most `timeout` (not at all while retries are queued), re-runs
    /// the operations whose fds became ready, then the queued retries. A failing wait
    /// (other than `EINTR`) throws `std::system_error`: ignoring it would spin forever.
    void wait(clock::duration timeout) {
        if (!deferred_.empty()) timeout = clock::duration::zero();
        int n = demux_.wait(timeout, [this](int fd, bool readable, bool writable, bool closed) noexcept {
            slot* found = slots_.find(fd);
            if (!found) return;
            slot& s = *found;
            s.closed = s.closed || closed;
            if (readable) on_ready(fd, s, 0);
            if (writable) on_ready(fd, s, 1);
        });
        if (n < 0 && n != -EINTR) throw std::system_error(-n, std::system_category(), std::string(name) + " wait");
        if (deferred_.empty()) return;
        // Two lists used in turn: retries queued while this batch runs go to the other
        // one, and both keep their capacity (no allocation per retry in steady state).
        retrying_.swap(deferred_);
        for (detail::reactor_op* op : retrying_) {
            if (!op) continue;  // cancelled or forgotten while queued
            op->deferred = false;
            // The retry uses the wake-up: it takes the buffer reserved for it (and a
            // buffer it gives back wakes the next waiter); if it takes none, the
            // reservation passes on.
            const bool woken = std::exchange(op->buffer_woken, false);
            if (woken) pool_->claim = true;
            slot& s = slots_[static_cast<std::size_t>(op->fd)];
            std::size_t d = index(op->dir);
            const bool done = op->perform(*op);
            if (woken && pool_->claim) {
                pool_->claim = false;
                --pool_->reserved;
                pool_->wake_waiters();
            }
            if (done) {
                s.waiter[d] = nullptr;
                if constexpr (eager) disarm(op->fd, s, d);
                core_.complete(*op, op->res);
            } else if (op->res == detail::yield_res) {
                defer(*op);  // progress made, more to do: again next iteration
            } else if (op->res == -ENOBUFS) {
                if (int err = wait_for_buffer(*op); err < 0) {
                    s.waiter[d] = nullptr;
                    core_.complete(*op, err);
                }
            } else if (int err = arm(op->fd, s, d); err < 0) {
                s.waiter[d] = nullptr;
                core_.complete(*op, err);
            }
        }
        retrying_.clear();
    }

    /// Interrupts `wait` from any thread or signal handler (an eventfd write).
    void wake() noexcept {
        std::uint64_t one = 1;
        [[maybe_unused]] long r = sys::write(wake_fd_, &one, sizeof one);
        if constexpr (requires(Demux& d) { d.wake(); }) demux_.wake();
    }

    /// The demultiplexer (diagnostics and tests, e.g. sigio's overflow count).
    Demux& demux() noexcept { return demux_; }

    /// Takes a free buffer from the loop's pool (created on first use): `-ENOBUFS` when
    /// none is free for this receive, `-ENOMEM` if the pool cannot be allocated.
    ///
    /// Buffers go to receives in the order they asked (FIFO): while receives wait for
    /// one, a receive that did not wait does not take a buffer but queues behind them,
    /// and a returned buffer is reserved for the waiter it wakes until that waiter's
    /// retry runs. Without this, with more busy connections than buffers, a session that
    /// gave a buffer back took it again for its next receive, ahead of the receive that
    /// buffer had woken (retried only in the next iteration, it found none and went to
    /// the back of the queue): the same few connections kept every buffer and others
    /// waited for seconds (docs/lifetime.md, "No connection starves").
    taken_buffer take_buffer() noexcept {
        if (pool_) {
            if (pool_->claim) {  // the retry of a woken waiter: its reserved buffer
                pool_->claim = false;
                --pool_->reserved;
                return pool_->take();
            }
            if (pool_->waiting > 0 || pool_->free_count() <= pool_->reserved) return {.error = -ENOBUFS};
        }
        return detail::take_from(pool_, [&] { return std::make_unique<pool>(*this, opts_.buffer_count, opts_.buffer_size); });
    }
    /// Where leases of this backend's buffers go back to.
    detail::buffer_source* buffers() noexcept { return pool_.get(); }
    /// Buffers of the pool not on loan (diagnostics and tests).
    std::size_t free_buffers() const noexcept { return pool_ ? pool_->free_count() : opts_.buffer_count; }

    /// Number of fds currently attached (diagnostics and tests).
    std::size_t attached_count() const noexcept {
        std::size_t n = 0;
        for (const slot& s : slots_) n += s.attached;
        return n;
    }

private:
    struct slot {
        detail::reactor_op* waiter[2]{};
        std::uint8_t registered = 0;  ///< directions the demux watches (bit 1 read, 2 write)
        bool ready[2]{true, true};    ///< edge-triggered "may be ready" hints
        bool closed = false;          ///< hang-up, error or urgent data seen: always worth trying
        bool attached = false;
    };

    static std::size_t index(interest dir) noexcept { return static_cast<std::size_t>(dir); }

    slot* grow(int fd) noexcept { return slots_.entry(fd); }

    /// Level-triggered: make sure the demux watches direction `d` of `fd`.
    int arm(int fd, slot& s, std::size_t d) noexcept {
        auto bit = static_cast<std::uint8_t>(1u << d);
        if (s.registered & bit) return 0;
        auto mask = static_cast<std::uint8_t>(s.registered | bit);
        int err = s.registered ? demux_.modify(fd, mask) : demux_.add(fd, mask);
        if (err < 0) return err;
        s.registered = mask;
        return 0;
    }

    /// Level-triggered: stop watching direction `d` of `fd`.
    void disarm(int fd, slot& s, std::size_t d) noexcept {
        auto mask = static_cast<std::uint8_t>(s.registered & ~(1u << d));
        if (mask == s.registered) return;
        if (mask ? demux_.modify(fd, mask) >= 0 : demux_.remove(fd) >= 0) s.registered = mask;
    }

    /// The eager level-triggered policy (for measurement: see `docs/io-models.md`).
    static constexpr bool eager = [] {
        if constexpr (requires { Demux::eager_interest; })
            return Demux::eager_interest;
        else
            return false;
    }();

    void on_ready(int fd, slot& s, std::size_t d) noexcept {
        s.ready[d] = true;
        detail::reactor_op* op = s.waiter[d];
        if (!op) {
            WEFT_TRACE_LINE("ready fd %d %s: nobody waits", fd, d == 0 ? "read" : "write");
            // Nobody waits: stop watching this direction (lazy deregistration).
            if constexpr (!Demux::edge_triggered) disarm(fd, s, d);
            return;
        }
        // A queued retry runs after the scan anyway; a receive waiting for a buffer
        // knows the fd is readable and waits for the buffer, not for readiness.
        if (op->deferred || op->buffer_wait) return;
        WEFT_TRACE_LINE("ready fd %d %s: try again", fd, d == 0 ? "read" : "write");
        if (op->perform(*op)) {
            s.waiter[d] = nullptr;
            if constexpr (eager) disarm(fd, s, d);
            core_.complete(*op, op->res);
        } else if (op->res == detail::yield_res) {
            defer(*op);  // progress made, more to do: again next iteration
        } else if (op->res == -ENOBUFS) {
            // Readable, but every buffer is on loan. It keeps its place on the fd, so a
            // close finds and cancels it (and a second receive is still EBUSY).
            if (int err = wait_for_buffer(*op); err < 0) {
                s.waiter[d] = nullptr;
                core_.complete(*op, err);
            }
        }
    }

    /// A receive found every pooled buffer on loan: it waits for one to come back (not
    /// for readiness, which is already there), keeping its place on the fd.
    int wait_for_buffer(detail::reactor_op& op) noexcept {
        if (!pool_->waiters.push(&op)) return -ENOMEM;
        ++pool_->waiting;
        op.buffer_wait = true;
        op.state = detail::op_state::parked;
        return 0;
    }

    /// The provided-buffer pool and the receives waiting for it, served in order (see
    /// `take_buffer`): a free buffer re-runs the oldest waiter on the loop and is
    /// reserved for it. The woken receive owns that wake-up until its retry runs; if it
    /// leaves first (cancelled, its socket closed), `unlink` passes the wake-up on, so
    /// no receive waits while a buffer is free (DESIGN invariant 11).
    struct pool final : detail::buffer_source, detail::buffer_pool {
        pool(reactor& r, std::uint16_t count, std::uint32_t size) : buffer_pool(count, size), owner(r) {}
        void give_back(std::uint16_t id) noexcept override {
            put(id);
            wake_waiters();
        }
        /// Re-runs the oldest waiters, one per free buffer not yet reserved.
        void wake_waiters() noexcept {
            while (free_count() > reserved && !waiters.empty()) {
                detail::reactor_op* op = waiters.pop();
                if (!op) continue;  // cancelled while waiting
                --waiting;
                op->buffer_wait = false;
                op->buffer_woken = true;
                ++reserved;
                owner.defer(*op);  // retried on the next iteration, with a buffer to take
                if (!op->deferred) {  // defer completed it with an error instead
                    op->buffer_woken = false;
                    --reserved;
                }
            }
        }
        reactor& owner;
        detail::ring_queue<detail::reactor_op*> waiters;  ///< oldest first; null: left while waiting
        std::size_t waiting = 0;   ///< live entries of `waiters`
        std::size_t reserved = 0;  ///< free buffers promised to woken waiters whose retry has not run
        bool claim = false;        ///< a woken waiter's retry is running: it takes a reserved buffer
    };

    void unlink(detail::reactor_op& op) noexcept {
        if (slot* found = slots_.find(op.fd)) {
            slot& s = *found;
            if (s.waiter[index(op.dir)] == &op) s.waiter[index(op.dir)] = nullptr;
        }
        if (op.deferred) {
            for (auto& p : deferred_)
                if (p == &op) p = nullptr;
            op.deferred = false;
        }
        if (op.buffer_wait) {
            for (std::size_t i = 0; i < pool_->waiters.size(); ++i)
                if (pool_->waiters[i] == &op) {
                    pool_->waiters[i] = nullptr;
                    --pool_->waiting;
                }
            op.buffer_wait = false;
        }
        if (op.buffer_woken) {  // it leaves with a wake-up it did not use: pass it on
            op.buffer_woken = false;
            --pool_->reserved;
            pool_->wake_waiters();
        }
    }

    static bool drain_wake(detail::reactor_op& op) noexcept {
        std::uint64_t n;
        [[maybe_unused]] long r = sys::read(op.fd, &n, sizeof n);
        return false;  // never completes: it stays parked for the loop's lifetime
    }

    detail::loop_core& core_;
    Demux demux_;
    detail::fd_table<slot> slots_;
    std::vector<detail::reactor_op*> deferred_;
    std::vector<detail::reactor_op*> retrying_;
    int wake_fd_ = -1;
    detail::reactor_op wake_op_;
    options opts_;
    std::unique_ptr<pool> pool_;  ///< provided buffers for receive(), created on first use
};

}  // namespace weft::backend

// SPDX-License-Identifier: MIT
/// @file
/// @brief `backend::uring`: the io_uring proactor (completion model).
///
/// Operations only fill submission queue entries; the loop submits them once per
/// iteration with `io_uring_submit_and_wait_timeout` (the timeout is the next timer).
/// Each SQE's `user_data` points at its operation record inside the awaiting coroutine's
/// frame; the CQE's `res` goes into that record, and the coroutine is resumed by the
/// loop after the completion scan. The kernel may own a buffer until the CQE arrives,
/// so nothing is freed before that: a cancelled operation waits for its own CQE, and a
/// frame destroyed with an operation in flight cancels it and drains the ring first.
///
/// Ring features, probed at run time with a fallback each (see `uring::features()`):
/// `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN`, else
/// `IORING_SETUP_COOP_TASKRUN`, else none; a registered ring fd; `IORING_FEAT_NODROP`
/// (overflowed completions are kept by the kernel and flushed). Each can be switched off
/// through `uring::options`; `WEFT_DISABLE_URING=1` in the environment makes
/// `available()` false, as a container without io_uring would.
#pragma once

#if !__has_include(<liburing.h>)
#error "weft's io_uring backend needs liburing (Debian: apt-get install liburing-dev)"
#endif

#include <liburing.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <poll.h>
#include <sys/mman.h>

#include "../buffers.hpp"
#include "../core.hpp"
#include "../result.hpp"
#include "../sys.hpp"
#include "concepts.hpp"

namespace weft::backend {

/// The io_uring proactor: the kernel performs each operation and posts its completion.
class uring {
public:
    /// "uring".
    static constexpr std::string_view name = "uring";
    /// A completion backend.
    static constexpr backend_kind kind = backend_kind::proactor;
    /// Blocking sockets: io_uring waits inside the kernel; with `O_NONBLOCK` it would
    /// hand `EAGAIN` back instead of arming its internal poll.
    static constexpr int socket_flags = 0;
    /// The operation record type submitted here.
    using op_type = detail::proactor_op;

    /// Settings of the ring. Every feature falls back when the kernel lacks it.
    struct options {
        unsigned queue_depth = 256;         ///< submission queue entries (completion queue: twice that)
        bool defer_taskrun = true;          ///< `SINGLE_ISSUER | DEFER_TASKRUN`: completions run only when we ask
        bool coop_taskrun = true;           ///< `COOP_TASKRUN`, the fallback when DEFER_TASKRUN is refused
        bool register_ring_fd = true;       ///< `io_uring_register_ring_fd`: cheaper `io_uring_enter`
        std::uint16_t buffer_count = 256;   ///< provided buffers for `receive()` (a power of two)
        std::uint32_t buffer_size = 16384;  ///< bytes per provided buffer
    };

    /// What the ring in use actually got (for reports and tests).
    struct feature_set {
        bool defer_taskrun = false;       ///< SINGLE_ISSUER | DEFER_TASKRUN
        bool coop_taskrun = false;        ///< COOP_TASKRUN (when DEFER_TASKRUN was not used)
        bool registered_ring_fd = false;  ///< the ring fd is registered
        bool nodrop = false;              ///< IORING_FEAT_NODROP: no completion is ever lost
        unsigned sq_entries = 0;          ///< submission queue size granted
        unsigned cq_entries = 0;          ///< completion queue size granted
    };

    /// True unless `WEFT_DISABLE_URING` is set to a non-empty value other than "0", or a
    /// ring cannot be created in this process (io_uring disabled by sysctl or seccomp).
    static bool available() noexcept {
        static const bool ok = [] {
            const char* off = std::getenv("WEFT_DISABLE_URING");
            if (off && *off && std::strcmp(off, "0") != 0) return false;
            io_uring probe;
            if (io_uring_queue_init(2, &probe, 0) < 0) return false;
            io_uring_queue_exit(&probe);
            return true;
        }();
        return ok;
    }

    /// Creates the ring; throws `std::system_error` whose message names the cause and
    /// suggests the `epoll_et` backend.
    uring(detail::loop_core& core, options opts) : core_(core), opts_(opts) {
        int err = setup(opts);
        if (err < 0) throw std::system_error(-err, std::system_category(), describe_setup_error(-err, opts));
        wake_fd_ = sys::eventfd(0);
        if (wake_fd_ < 0) {
            io_uring_queue_exit(&ring_);
            throw std::system_error(-wake_fd_, std::system_category(), "eventfd");
        }
        arm_wake();
    }
    uring(const uring&) = delete;
    uring& operator=(const uring&) = delete;
    /// Tears the ring down. Every awaiter has already drained its own operation (see
    /// `forget`); the kernel cancels what is left (the wake-up poll) at exit.
    ~uring() {
        io_uring_queue_exit(&ring_);
        if (buffers_) ::munmap(buffers_->memory, buffers_->memory_size);
        sys::close(wake_fd_);
        for (auto& l : listeners_)
            if (l)
                for (int c : l->queued) sys::close(c);  // accepted, never handed out
    }

    /// The loop this backend completes operations into.
    detail::loop_core& core() const noexcept { return core_; }
    /// The features the ring got.
    const feature_set& features() const noexcept { return features_; }

    /// Connections the multishot accept of listener `fd` has accepted and nobody has
    /// taken yet (diagnostics and tests).
    std::size_t queued_connections(int fd) const noexcept {
        const listener* l = find_listener(fd);
        return l ? l->queued.size() : 0;
    }

    /// The lease for a receive's completion: the buffer the kernel picked (given back at
    /// once if it carries no data).
    buffer_lease lease_from_completion(int res, unsigned flags) noexcept {
        if (!(flags & IORING_CQE_F_BUFFER) || !buffers_) return {};
        auto id = static_cast<std::uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
        if (res <= 0) {
            buffers_->give_back(id);
            return {};
        }
        return buffer_lease(buffers_.get(), buffers_->slab.at(id), static_cast<std::size_t>(res), id);
    }
    /// Where leases of this backend's buffers go back to.
    detail::buffer_source* buffers() noexcept { return buffers_.get(); }
    /// Provided buffers not on loan (diagnostics and tests).
    std::size_t free_buffers() const noexcept { return buffers_ ? buffers_->available : opts_.buffer_count; }

    /// Nothing to register: io_uring needs no per-socket setup.
    int attach(int) noexcept { return 0; }

    /// Before `close(fd)`: cancels every operation in flight on `fd` and submits at once,
    /// so the kernel lets go of the file before it is closed (the peer then sees the FIN
    /// and no completion can land on a later socket that reuses the fd number). The
    /// operations complete with `-ECANCELED` (or their real result) as usual.
    void detach(int fd) noexcept {
        const listener* l = find_listener(fd);
        bool multishot = l && l->armed;
        drop_listener(fd);
        bool busy = fd >= 0 && static_cast<std::size_t>(fd) < busy_.size() && busy_[static_cast<std::size_t>(fd)] != 0;
        if (!busy && !multishot) return;
        io_uring_sqe* sqe = get_sqe();
        io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
        io_uring_sqe_set_data64(sqe, internal_tag);
        // Submit and run the cancellations' completion work now, so every request has
        // dropped its reference to the file before close(2).
        flush_and_get_events();
    }

    /// Queues `op`'s submission; the loop submits it with the next wait. A full
    /// submission queue is submitted to the kernel first, never dropped. `-EBUSY` when
    /// an operation of the same direction is already in flight on the fd (the same rule
    /// as the reactors: one reader and one writer per socket).
    int submit(detail::proactor_op& op) noexcept {
        if (!mark(op.fd, op.dir)) return -EBUSY;
        op.state = detail::op_state::parked;
        op.cancel_requested = false;
        op.abandoned = false;
        prepare(op);
        return 0;
    }

    /// Asks the kernel to cancel `op`; it still completes once, through its own CQE. An
    /// accept waiting on a multishot accept is not in the kernel: it completes now.
    void cancel(detail::proactor_op& op) noexcept {
        if (op.state != detail::op_state::parked || op.cancel_requested) return;
        if (op.held) {
            release_held(op);
            settle(op, -ECANCELED);
            return;
        }
        op.cancel_requested = true;
        io_uring_sqe* sqe = get_sqe();
        io_uring_prep_cancel64(sqe, reinterpret_cast<std::uintptr_t>(&op), 0);
        io_uring_sqe_set_data64(sqe, internal_tag);
    }

    /// `op`'s frame is being destroyed while the kernel may still own its buffer:
    /// cancels it and processes completions until its CQE has arrived.
    void forget(detail::proactor_op& op) noexcept {
        if (op.state != detail::op_state::parked) return;
        op.abandoned = true;
        if (op.held) {
            release_held(op);
            settle(op, -ECANCELED);
            return;
        }
        cancel(op);
        while (op.state == detail::op_state::parked) {
            flush();
            io_uring_cqe* cqe = nullptr;
            int r = io_uring_wait_cqe(&ring_, &cqe);
            if (r < 0 && r != -EINTR && r != -ETIME) break;  // the ring is unusable; nothing more to wait for
            reap();
        }
    }

    /// One iteration: submits queued SQEs and waits up to `timeout` for completions,
    /// then hands every CQE to its operation.
    void wait(clock::duration timeout) {
        if (timeout == clock::duration::zero()) {
            flush_and_get_events();
        } else {
            io_uring_cqe* cqe = nullptr;
            int r;
            if (timeout == clock::duration::max()) {
                r = io_uring_submit_and_wait(&ring_, 1);
            } else {
                auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(timeout).count();
                __kernel_timespec ts{};
                ts.tv_sec = ns / 1'000'000'000;
                ts.tv_nsec = ns % 1'000'000'000;
                r = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
            }
            if (r == -EBUSY)
                flush_and_get_events();  // completions backed up: reap, then submit
            else if (r < 0 && r != -ETIME && r != -EINTR)
                throw std::system_error(-r, std::system_category(), "io_uring_submit_and_wait");
        }
        reap();
        if (io_uring_cq_has_overflow(&ring_)) {  // NODROP kept some: flush them into the CQ
            io_uring_get_events(&ring_);
            reap();
        }
    }

    /// Interrupts `wait` from any thread or signal handler (an eventfd the ring polls).
    void wake() noexcept {
        std::uint64_t one = 1;
        [[maybe_unused]] long r = sys::write(wake_fd_, &one, sizeof one);
    }

    /// Fills the submission for one operation (see the op table in `io.hpp`). It also
    /// applies the syscall fault hook of `sys.hpp`, so tests can shorten IO or inject
    /// errors here too. An accept does not become an SQE of its own: it waits on the
    /// listener's multishot accept.
    class preparer {
    public:
        /// Prepares `op` for `ring`.
        preparer(uring& ring, detail::proactor_op& op) noexcept : ring_(ring), op_(op) {}
        /// `recv(2)` into [buf, buf+len).
        void recv(int fd, void* buf, std::size_t len) noexcept {
            if (!inject(sys::call::recv, fd, len)) io_uring_prep_recv(sqe(), fd, buf, len, 0);
        }
        /// `send(2)` of [buf, buf+len) with `MSG_NOSIGNAL`.
        void send(int fd, const void* buf, std::size_t len) noexcept {
            if (!inject(sys::call::send, fd, len)) io_uring_prep_send(sqe(), fd, buf, len, MSG_NOSIGNAL);
        }
        /// The next connection on listener `fd` (new fd `CLOEXEC` plus `flags`), from the
        /// listener's multishot accept.
        void accept(int fd, int flags) noexcept {
            std::size_t none = 0;
            if (!inject(sys::call::accept, fd, none)) ring_.accept_from_multishot(op_, fd, flags, *this);
        }
        /// `connect(2)`; the address must live until the completion (it is in the frame).
        void connect(int fd, const sockaddr* addr, socklen_t len) noexcept {
            std::size_t none = 0;
            if (!inject(sys::call::connect, fd, none)) io_uring_prep_connect(sqe(), fd, addr, len);
        }
        /// `recv(2)` into a buffer the kernel picks from the provided-buffer ring.
        void recv_provided(int fd) noexcept {
            std::size_t len = ring_.opts_.buffer_size;
            if (inject(sys::call::recv, fd, len)) return;
            if (int err = ring_.ensure_buffers(); err < 0) return complete_now(err);
            io_uring_sqe* s = sqe();
            io_uring_prep_recv(s, fd, nullptr, len, 0);
            s->flags |= IOSQE_BUFFER_SELECT;
            s->buf_group = buffer_group;
            op_.uses_buffers = true;
        }
        /// `recvmsg(2)` (vectored receive); `msg` lives in the operation until it completes.
        void recvmsg(int fd, msghdr* msg) noexcept {
            std::size_t len = 0;
            if (!inject(sys::call::recv, fd, len)) io_uring_prep_recvmsg(sqe(), fd, msg, 0);
        }
        /// `sendmsg(2)` with `MSG_NOSIGNAL` (vectored send).
        void sendmsg(int fd, const msghdr* msg) noexcept {
            std::size_t len = 0;
            if (!inject(sys::call::send, fd, len)) io_uring_prep_sendmsg(sqe(), fd, msg, MSG_NOSIGNAL);
        }
        /// A kernel timer (`IORING_OP_TIMEOUT`) that completes with `-ETIME` after `*ts`;
        /// `ts` must live until the completion. weft's own timers use the loop's heap
        /// instead (cheaper: `benchmarks/timer_cost.cpp` measures both).
        void timeout(__kernel_timespec* ts) noexcept { io_uring_prep_timeout(sqe(), ts, 0, 0); }
        /// One-shot poll for `events`.
        void poll(int fd, unsigned events) noexcept { io_uring_prep_poll_add(sqe(), fd, events); }
        /// Nothing to do: completes with 0.
        void nop() noexcept { io_uring_prep_nop(sqe()); }
        /// Completes the operation with `res` without a submission.
        void complete_now(int res) noexcept {
            immediate_ = true;
            result_ = res;
        }
        /// True if the operation completed without a submission; `result()` then holds it.
        bool immediate() const noexcept { return immediate_; }
        /// The result of an operation that completed without a submission.
        int result() const noexcept { return result_; }

    private:
        io_uring_sqe* sqe() noexcept {
            io_uring_sqe* s = ring_.get_sqe();
            io_uring_sqe_set_data(s, &op_);
            op_.held = false;
            return s;
        }
        bool inject(sys::call site, int fd, std::size_t& len) noexcept {
            for (;;) {
                int e = sys::detail::inject(site, fd, len);
                if (e == -EINTR) continue;  // a syscall would retry it: so do we
                if (e == 0) return false;
                complete_now(e);
                return true;
            }
        }
        uring& ring_;
        detail::proactor_op& op_;
        bool immediate_ = false;
        int result_ = 0;
    };

private:
    static constexpr std::uint16_t buffer_group = 0;

    /// The provided-buffer ring: buffers the kernel picks from as data arrives.
    struct buffer_ring final : detail::buffer_source {
        buffer_ring(uring& r, std::uint16_t count, std::uint32_t size) : owner(r), slab(count, size) {}
        void give_back(std::uint16_t id) noexcept override {
            io_uring_buf_ring_add(ring, slab.at(id), slab.size(), id, io_uring_buf_ring_mask(slab.count()), 0);
            io_uring_buf_ring_advance(ring, 1);
            ++available;
            owner.buffer_returned();
        }
        uring& owner;
        detail::buffer_slab slab;
        io_uring_buf_ring* ring = nullptr;
        void* memory = nullptr;
        std::size_t memory_size = 0;
        std::size_t available = 0;
    };

    /// Registers the buffer ring on first use; 0 or -errno (`-EINVAL` for a buffer count
    /// that is not a power of two; older kernels without buffer rings fail here).
    int ensure_buffers() noexcept {
        if (buffers_) return 0;
        const std::uint16_t count = opts_.buffer_count;
        if (count == 0 || (count & (count - 1)) != 0) return -EINVAL;
        std::unique_ptr<buffer_ring> b;
        try {
            b = std::make_unique<buffer_ring>(*this, count, opts_.buffer_size);
        } catch (...) {
            return -ENOMEM;
        }
        b->memory_size = std::size_t{count} * sizeof(io_uring_buf);
        b->memory = ::mmap(nullptr, b->memory_size, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
        if (b->memory == MAP_FAILED) return -ENOMEM;
        b->ring = static_cast<io_uring_buf_ring*>(b->memory);
        io_uring_buf_ring_init(b->ring);
        io_uring_buf_reg reg{};
        reg.ring_addr = reinterpret_cast<std::uintptr_t>(b->memory);
        reg.ring_entries = count;
        reg.bgid = buffer_group;
        if (int err = io_uring_register_buf_ring(&ring_, &reg, 0); err < 0) {
            ::munmap(b->memory, b->memory_size);
            return err;
        }
        for (std::uint16_t i = 0; i < count; ++i)
            io_uring_buf_ring_add(b->ring, b->slab.at(i), b->slab.size(), i, io_uring_buf_ring_mask(count), i);
        io_uring_buf_ring_advance(b->ring, count);
        b->available = count;
        buffers_ = std::move(b);
        return 0;
    }

    /// A buffer came back: one receive that found the ring empty is submitted again.
    void buffer_returned() noexcept {
        while (!buffer_waiters_.empty()) {
            detail::proactor_op* op = buffer_waiters_.front();
            buffer_waiters_.pop_front();
            if (!op) continue;
            op->held = false;
            prepare(*op);
            break;
        }
    }

    /// `user_data` of SQEs whose completions nobody awaits (cancels, the wake-up poll).
    static constexpr std::uint64_t internal_tag = 0;
    static constexpr std::uint64_t wake_tag = 1;

    int setup(const options& opts) noexcept {
        const unsigned depth = opts.queue_depth;
        io_uring_params p{};
        int err = -EINVAL;
        if (opts.defer_taskrun) {
            p = {};
            p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
            err = io_uring_queue_init_params(depth, &ring_, &p);
            features_.defer_taskrun = err == 0;
        }
        if (err == -EINVAL && opts.coop_taskrun) {  // kernel before 6.1
            p = {};
            p.flags = IORING_SETUP_COOP_TASKRUN;
            err = io_uring_queue_init_params(depth, &ring_, &p);
            features_.coop_taskrun = err == 0;
        }
        if (err == -EINVAL && (opts.defer_taskrun || opts.coop_taskrun)) {  // kernel before 5.19
            p = {};
            err = io_uring_queue_init_params(depth, &ring_, &p);
        } else if (!opts.defer_taskrun && !opts.coop_taskrun) {
            p = {};
            err = io_uring_queue_init_params(depth, &ring_, &p);
        }
        if (err < 0) return err;
        features_.nodrop = (p.features & IORING_FEAT_NODROP) != 0;
        features_.sq_entries = p.sq_entries;
        features_.cq_entries = p.cq_entries;
        if (opts.register_ring_fd) features_.registered_ring_fd = io_uring_register_ring_fd(&ring_) == 1;
        return 0;
    }

    static std::string describe_setup_error(int err, const options& opts) {
        std::string why;
        switch (err) {
            case EPERM:
                why = "io_uring is disabled here (sysctl kernel.io_uring_disabled, or a seccomp profile)";
                break;
            case ENOSYS:
                why = "this kernel has no io_uring";
                break;
            case ENOMEM:
                why = "not enough lockable memory for the ring (RLIMIT_MEMLOCK)";
                break;
            case EINVAL:
                why = "invalid ring settings (queue depth " + std::to_string(opts.queue_depth) + ")";
                break;
            case EMFILE:
            case ENFILE:
                why = "no file descriptor left for the ring";
                break;
            default:
                why = "io_uring_setup failed";
                break;
        }
        return "cannot create an io_uring (" + why + "); use another backend, e.g. --backend=epoll_et";
    }

    /// Unlinks an accept waiting on its listener's multishot accept.
    void release_held(detail::proactor_op& op) noexcept {
        op.held = false;
        for (auto& w : buffer_waiters_)
            if (w == &op) w = nullptr;
        if (listener* l = find_listener(op.fd); l && l->waiter == &op) l->waiter = nullptr;
    }

    /// Records an operation of direction `dir` in flight on `fd`; false if one already is.
    bool mark(int fd, interest dir) noexcept {
        if (fd < 0) return true;
        std::uint8_t* busy = detail::fd_entry(busy_, fd);
        if (!busy) return true;  // no memory: only costs the EBUSY check and a needless cancel in detach
        auto bit = static_cast<std::uint8_t>(1u << static_cast<unsigned>(dir));
        if (*busy & bit) return false;
        *busy |= bit;
        return true;
    }
    void unmark(int fd, interest dir) noexcept {
        if (fd >= 0 && static_cast<std::size_t>(fd) < busy_.size())
            busy_[static_cast<std::size_t>(fd)] &= static_cast<std::uint8_t>(~(1u << static_cast<unsigned>(dir)));
    }

    /// A free SQE; when the queue is full, submits what is queued first (never drops).
    io_uring_sqe* get_sqe() noexcept {
        for (;;) {
            if (io_uring_sqe* sqe = io_uring_get_sqe(&ring_)) return sqe;
            int r = io_uring_submit(&ring_);
            if (r == -EBUSY) reap();  // the completion side is backed up: make room
        }
    }

    void prepare(detail::proactor_op& op) noexcept {
        preparer p(*this, op);
        op.prepare(op, &p);
        // Answered without the kernel (fault hook, or an already accepted connection).
        if (p.immediate()) settle(op, p.result());
    }

    /// A listener's multishot accept: connections accepted while nobody awaits queue
    /// here (up to `max_queued`, then the multishot is cancelled until they are taken).
    struct listener {
        int fd = -1;
        int flags = 0;
        detail::proactor_op* waiter = nullptr;  ///< the accept operation waiting for a connection
        std::deque<int> queued;                 ///< accepted, not yet handed out
        bool armed = false;                     ///< the multishot request is in the kernel
        bool closing = false;                   ///< detached: freed at its last completion
    };
    static constexpr std::size_t max_queued = 1024;
    /// `user_data` tag bit of multishot accept completions (records are 8-byte aligned).
    static constexpr std::uint64_t listener_bit = 2;

    /// The multishot accept state of listener `fd`, if it has one.
    listener* find_listener(int fd) const noexcept {
        if (fd < 0 || static_cast<std::size_t>(fd) >= listeners_.size()) return nullptr;
        return listeners_[static_cast<std::size_t>(fd)].get();
    }

    void accept_from_multishot(detail::proactor_op& op, int fd, int flags, preparer& p) noexcept {
        listener* l = listener_for(fd);
        if (!l) {  // no memory for the state: a plain single-shot accept still works
            io_uring_sqe* s = get_sqe();
            io_uring_prep_accept(s, fd, nullptr, nullptr, flags | SOCK_CLOEXEC);
            io_uring_sqe_set_data(s, &op);
            op.held = false;
            return;
        }
        l->flags = flags;
        if (!l->queued.empty()) {
            int c = l->queued.front();
            l->queued.pop_front();
            p.complete_now(c);
            return;
        }
        l->waiter = &op;
        op.held = true;
        if (!l->armed) {
            io_uring_sqe* s = get_sqe();
            io_uring_prep_multishot_accept(s, fd, nullptr, nullptr, flags | SOCK_CLOEXEC);
            io_uring_sqe_set_data64(s, reinterpret_cast<std::uintptr_t>(l) | listener_bit);
            l->armed = true;
        }
    }

    listener* listener_for(int fd) noexcept {
        std::unique_ptr<listener>* entry = detail::fd_entry(listeners_, fd);
        if (!entry) return nullptr;
        if (!*entry) {
            try {
                *entry = std::make_unique<listener>();
            } catch (...) {
                return nullptr;
            }
            (*entry)->fd = fd;
        }
        return entry->get();
    }

    void on_accepted(listener& l, int res, unsigned flags) noexcept {
        if (!(flags & IORING_CQE_F_MORE)) l.armed = false;  // the kernel ended the multishot
        if (l.closing) {
            if (res >= 0) sys::close(res);
            if (!l.armed) std::erase_if(closing_, [&](const auto& p) { return p.get() == &l; });
            return;
        }
        if (res == -ECANCELED && !l.armed) return;  // our own cap cancel: re-armed on demand
        if (detail::proactor_op* w = l.waiter) {
            l.waiter = nullptr;
            w->held = false;
            settle(*w, res);  // errors (EMFILE...) go to the op, which knows what to do
            return;
        }
        if (res < 0) return;  // nobody asked; the next accept re-arms and sees it again
        l.queued.push_back(res);
        if (l.queued.size() >= max_queued && l.armed) {
            io_uring_sqe* s = get_sqe();
            io_uring_prep_cancel64(s, reinterpret_cast<std::uintptr_t>(&l) | listener_bit, 0);
            io_uring_sqe_set_data64(s, internal_tag);
        }
    }

    /// Before the listener `fd` closes: its waiter completes cancelled, queued
    /// connections are closed, and its state lives on until the kernel's last completion.
    void drop_listener(int fd) noexcept {
        if (!find_listener(fd)) return;
        std::unique_ptr<listener> l = std::move(listeners_[static_cast<std::size_t>(fd)]);
        if (detail::proactor_op* w = l->waiter) {
            l->waiter = nullptr;
            w->held = false;
            settle(*w, -ECANCELED);
        }
        for (int c : l->queued) sys::close(c);
        l->queued.clear();
        if (!l->armed) return;  // nothing in the kernel refers to it
        l->closing = true;
        try {
            closing_.push_back(std::move(l));  // the cancel_fd in detach ends the multishot
        } catch (...) {
            // Cannot keep it: wait for the kernel to let go of it now instead.
            listener* raw = l.get();
            io_uring_sqe* s = get_sqe();
            io_uring_prep_cancel64(s, reinterpret_cast<std::uintptr_t>(raw) | listener_bit, 0);
            io_uring_sqe_set_data64(s, internal_tag);
            while (raw->armed) {
                flush();
                io_uring_cqe* cqe = nullptr;
                if (io_uring_wait_cqe(&ring_, &cqe) < 0) break;
                reap();
            }
        }
    }

    /// Hands one result to `op`: completes it, or submits its next step.
    void settle(detail::proactor_op& op, int res, unsigned flags = 0) noexcept {
        if ((flags & IORING_CQE_F_BUFFER) && buffers_) --buffers_->available;
        if (res == -ENOBUFS && op.uses_buffers && !op.abandoned && !op.cancel_requested) {
            // The ring is empty: wait for a lease to come back, then submit again.
            try {
                buffer_waiters_.push_back(&op);
                op.held = true;
                return;
            } catch (...) {
            }
        }
        if (op.abandoned && (flags & IORING_CQE_F_BUFFER) && buffers_)  // nobody will lease it
            buffers_->give_back(static_cast<std::uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT));
        bool done = op.abandoned || op.finish(op, res, flags);
        if (!done && !op.cancel_requested) {
            prepare(op);  // partial progress (write_all, read_exact...): submit the rest
            return;
        }
        if (!done) op.res = -ECANCELED;  // cancelled between two steps: the rest never happened
        unmark(op.fd, op.dir);
        if (op.abandoned) {
            op.state = detail::op_state::idle;  // its frame is going away: resume nobody
            return;
        }
        core_.complete(op, op.res);
    }

    /// Takes every available completion off the ring. Each batch is copied out and the
    /// ring advanced before any is handled: handling one may submit, and a full ring's
    /// submit may need to reap again.
    void reap() noexcept {
        struct completion {
            std::uint64_t tag;
            int res;
            unsigned flags;
        };
        for (;;) {
            completion batch[64];
            unsigned n = 0;
            unsigned head;
            io_uring_cqe* cqe;
            io_uring_for_each_cqe(&ring_, head, cqe) {
                batch[n++] = {io_uring_cqe_get_data64(cqe), cqe->res, cqe->flags};
                if (n == 64) break;
            }
            if (n == 0) break;
            io_uring_cq_advance(&ring_, n);
            for (unsigned i = 0; i < n; ++i) {
                const completion& c = batch[i];
                if (c.tag == wake_tag) {
                    std::uint64_t value;
                    [[maybe_unused]] long r = sys::read(wake_fd_, &value, sizeof value);
                    if (!(c.flags & IORING_CQE_F_MORE)) arm_wake();  // the kernel ended the multishot
                } else if (c.tag == internal_tag || c.tag == LIBURING_UDATA_TIMEOUT) {
                    // a cancel's own completion, or liburing's timeout: nothing waits for it
                } else if (c.tag & listener_bit) {
                    on_accepted(*reinterpret_cast<listener*>(c.tag & ~listener_bit), c.res, c.flags);
                } else {
                    settle(*reinterpret_cast<detail::proactor_op*>(c.tag), c.res, c.flags);
                }
            }
        }
    }

    void arm_wake() noexcept {
        io_uring_sqe* sqe = get_sqe();
        io_uring_prep_poll_multishot(sqe, wake_fd_, POLLIN);
        io_uring_sqe_set_data64(sqe, wake_tag);
    }

    /// Submits queued SQEs without waiting.
    void flush() noexcept {
        int r;
        while ((r = io_uring_submit(&ring_)) == -EBUSY) reap();
    }

    /// Submits and runs deferred completion work without waiting (DEFER_TASKRUN only
    /// delivers completions when the issuer asks for them).
    void flush_and_get_events() noexcept {
        int r;
        while ((r = io_uring_submit_and_get_events(&ring_)) == -EBUSY) reap();
    }

    detail::loop_core& core_;
    io_uring ring_{};
    feature_set features_;
    int wake_fd_ = -1;
    std::vector<std::uint8_t> busy_;                    ///< per fd: bit 0 a read, bit 1 a write in flight
    std::vector<std::unique_ptr<listener>> listeners_;  ///< multishot accept state, per listening fd
    std::vector<std::unique_ptr<listener>> closing_;    ///< closed listeners the kernel still refers to
    options opts_;
    std::unique_ptr<buffer_ring> buffers_;             ///< provided buffers, registered on first receive()
    std::deque<detail::proactor_op*> buffer_waiters_;  ///< receives that found the ring empty
};

static_assert(proactor_backend<uring>);

}  // namespace weft::backend

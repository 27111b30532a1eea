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
/// (overflowed completions are kept by the kernel and flushed); multishot accept behind
/// `accept()` and multishot recv behind `receive()`, whose completions queue per fd while
/// nobody awaits them; sockets in a registered file table (`IOSQE_FIXED_FILE`, off by
/// default); provided buffers consumed incrementally (`IOU_PBUF_RING_INC`). Each can be switched off through `uring::options`; `WEFT_DISABLE_URING=1` in the environment
/// makes `available()` false, as a container without io_uring would.
#pragma once

#if !__has_include(<liburing.h>)
#error "weft's io_uring backend needs liburing (Debian: apt-get install liburing-dev)"
#endif

#include <liburing.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <poll.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "../buffers.hpp"
#include "../core.hpp"
#include "../result.hpp"
#include "../sys.hpp"
#include "concepts.hpp"

namespace weft::backend {

/// io_uring interface values newer than liburing 2.3's headers (Debian 12's), spelled out
/// here so that weft builds against it and uses them when the running kernel has them.
namespace uring_abi {
/// `IOU_PBUF_RING_INC`, the buffer ring flag for incremental consumption (kernel
/// 6.12; liburing 2.3's headers predate it).
inline constexpr std::uint16_t pbuf_ring_inc = 2;
/// Sets a buffer ring registration's flags: the field is `flags` in liburing 2.4 and
/// later, `pad` in 2.3 (a template, so that only the member that exists is named).
template <class Reg>
inline void set_ring_flags(Reg& reg, std::uint16_t flags) noexcept {
    if constexpr (requires { reg.flags; })
        reg.flags = flags;
    else
        reg.pad = flags;
}
/// `IORING_CQE_F_BUF_MORE`: the kernel keeps filling this completion's buffer (6.12).
inline constexpr std::uint32_t cqe_f_buf_more = 1u << 4;
/// `IORING_RECVSEND_BUNDLE`, in a receive's `ioprio`: take several provided buffers in
/// one completion (kernel 6.10; liburing 2.3's headers predate it).
inline constexpr std::uint16_t recvsend_bundle = 1u << 4;
/// `IORING_FEAT_RECVSEND_BUNDLE`: the kernel takes receive bundles.
inline constexpr std::uint32_t feat_recvsend_bundle = 1u << 14;
}  // namespace uring_abi

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
        /// One multishot accept per listener instead of one accept per connection.
        bool multishot_accept = true;
        /// One multishot recv per stream behind `receive()` instead of one recv per
        /// call: bytes that arrive while nobody awaits are read ahead (a few buffers at
        /// most, see `max_read_ahead`) and handed out in order.
        bool multishot_recv = true;
        /// Sockets go into the ring's registered file table (at the slot of their fd
        /// number) when they are attached, and every operation on them is submitted with
        /// `IOSQE_FIXED_FILE`: the kernel skips the per-operation file lookup and its
        /// reference count. It costs one `io_uring_register` call when a socket is attached
        /// and one when it is closed. Off by default: the echo benchmark measured no gain
        /// beyond its noise (±1% server CPU per message at 64 x 64 B x depth 1 and 1,000 x
        /// 64 B x depth 16, `benchmarks/uring_options.sh`), where the per-connection calls are a
        /// sure cost. (Not io_uring's "direct descriptors", which have no fd number: weft's
        /// sockets stay ordinary fds, usable with any syscall.)
        bool fixed_files = false;
        /// Provided buffers are consumed incrementally (`IOU_PBUF_RING_INC`, kernel
        /// 6.12): a receive takes only the bytes it got from a buffer and the kernel puts
        /// the next ones right behind them, so small messages share a buffer instead of
        /// taking one each. A buffer goes back to the ring when the kernel has filled it
        /// and every lease on a piece of it has been given back.
        bool incremental_buffers = true;
        /// The multishot recv behind `receive()` takes several provided buffers in one
        /// completion when more bytes are waiting than the next buffer holds (receive
        /// bundles, `IORING_RECVSEND_BUNDLE`, kernel 6.10): one completion, and one trip
        /// through the kernel's receive path, per burst instead of per buffer. weft hands
        /// the buffers out one lease each, in order, as it would hand out separate
        /// completions (the first now, the rest read ahead). Off by default: it measured
        /// no reliable difference in server CPU per message (within ±3% on the target
        /// cells; at 64 x 4096 B x depth 16, where bursts do span buffers, three runs gave
        /// -6%, -1% and +18%, the noise of that client-bound cell; benchmarks/uring_options.sh
        /// bundles and run.py's on/off runs).
        bool bundles = false;
        /// `IORING_OP_MSG_RING` (kernel 5.18): another io_uring loop wakes this one by
        /// posting a completion into its ring instead of writing its eventfd.
        bool msg_ring = false;
    };

    /// What the ring in use actually got (for reports and tests).
    struct feature_set {
        bool defer_taskrun = false;       ///< SINGLE_ISSUER | DEFER_TASKRUN
        bool coop_taskrun = false;        ///< COOP_TASKRUN (when DEFER_TASKRUN was not used)
        bool registered_ring_fd = false;  ///< the ring fd is registered
        bool nodrop = false;              ///< IORING_FEAT_NODROP: no completion is ever lost
        unsigned sq_entries = 0;          ///< submission queue size granted
        unsigned cq_entries = 0;          ///< completion queue size granted
        bool multishot_accept = false;    ///< accept() uses multishot accept (kernel 5.19)
        bool multishot_recv = false;      ///< receive() uses multishot recv (kernel 6.0)
        /// Slots of the registered file table (0: sockets are not registered). Sockets
        /// whose fd number is past it are used through their fd.
        unsigned fixed_file_slots = 0;
        /// Provided buffers are consumed incrementally (`IOU_PBUF_RING_INC`, kernel 6.12);
        /// known once the buffer ring is registered (the first `receive()`).
        bool incremental_buffers = false;
        /// The multishot recv takes bundles of buffers (`IORING_FEAT_RECVSEND_BUNDLE`,
        /// kernel 6.10). Single-shot receives never do (see `options::bundles`).
        bool bundles = false;
        /// `IORING_OP_MSG_RING` (kernel 5.18): another io_uring loop wakes this one by
        /// posting a completion into its ring instead of writing its eventfd.
        bool msg_ring = false;
    };

    /// The value of `WEFT_DISABLE_URING` when it switches io_uring off (set, non-empty,
    /// not "0"), else null: what `available()` and `weft::probe_uring()` both read.
    static const char* disabled_by_environment() noexcept {
        const char* off = std::getenv("WEFT_DISABLE_URING");
        return off && *off && std::strcmp(off, "0") != 0 ? off : nullptr;
    }
    /// True unless `WEFT_DISABLE_URING` is set to a non-empty value other than "0", or a
    /// ring cannot be created in this process (io_uring disabled by sysctl or seccomp).
    static bool available() noexcept {
        static const bool ok = [] {
            if (disabled_by_environment()) return false;
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
        // Assumed until the kernel rejects one (see `on_multishot`).
        features_.multishot_accept = opts.multishot_accept;
        features_.multishot_recv = opts.multishot_recv;
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
        // A completion may already be posted that nobody reaped: any io_uring_enter with
        // GETEVENTS (detach's flush_and_get_events, forget) runs the ring's deferred work,
        // and with it a listener's pending multishot accept, whose new fd is in our table
        // the moment its CQE is posted. Hand each to its owner (a closing multishot closes
        // the fd; an open one queues it for the drain below) before the ring drops them.
        flush_and_get_events();
        reap();
        if (io_uring_cq_has_overflow(&ring_)) {  // NODROP kept some: flush them into the CQ
            io_uring_get_events(&ring_);
            reap();
        }
        io_uring_queue_exit(&ring_);
        if (buffers_) ::munmap(buffers_->memory, buffers_->memory_size);
        sys::close(wake_fd_);
        for (auto& m : multishots_)
            if (m && m->what == multishot::kind::accept)
                m->queued.drain([](auto c) { sys::close(c.res); });  // accepted, never handed out
    }

    /// The loop this backend completes operations into.
    detail::loop_core& core() const noexcept { return core_; }
    /// The features the ring got.
    const feature_set& features() const noexcept { return features_; }

    /// Connections the multishot accept of listener `fd` has accepted and nobody has
    /// taken yet (diagnostics and tests).
    std::size_t queued_connections(int fd) const noexcept {
        const multishot* m = find_multishot(fd, multishot::kind::accept);
        return m ? m->queued.size() : 0;
    }
    /// Completions the multishot recv of stream `fd` has read ahead and nobody has taken
    /// yet (diagnostics and tests).
    std::size_t read_ahead(int fd) const noexcept {
        const multishot* m = find_multishot(fd, multishot::kind::recv);
        return m ? m->queued.size() : 0;
    }
    /// Completions a stream's multishot recv reads ahead before it is cancelled (until
    /// the application takes them): bounds what a slow reader holds of the buffer ring.
    /// All streams together read ahead into at most half the ring; and no receive waits
    /// for a buffer while read-ahead holds one (see `reclaim_read_ahead`). A bundle
    /// (`options::bundles`) that crosses the cap is queued whole: its buffers are already
    /// taken.
    static constexpr std::size_t max_read_ahead = 4;
    /// Provided buffers that hold read-ahead bytes nobody has taken yet, over all
    /// streams (diagnostics and tests).
    std::size_t read_ahead_buffers() const noexcept { return read_ahead_buffers_; }

    /// The lease for a receive's completion: the buffer the kernel picked (given back at
    /// once if it carries no data).
    buffer_lease lease_from_completion(int res, std::uint64_t flags) noexcept {
        if (spilled(flags)) {
            auto id = static_cast<std::uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
            return buffer_lease(&spill_, spill_.chunks[id].get(), static_cast<std::size_t>(res), id);
        }
        if (!(flags & IORING_CQE_F_BUFFER) || !buffers_) return {};
        auto id = static_cast<std::uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
        if (res <= 0) {
            buffers_->give_back(id);
            return {};
        }
        return buffer_lease(buffers_.get(), bytes_of(flags), static_cast<std::size_t>(res), id);
    }
    /// Where leases of this backend's buffers go back to.
    detail::buffer_source* buffers() noexcept { return buffers_.get(); }
    /// Provided buffers not on loan (diagnostics and tests).
    std::size_t free_buffers() const noexcept { return buffers_ ? buffers_->available : opts_.buffer_count; }
    /// Receive completions so far that held more than one provided buffer (bundles, see
    /// `options::bundles`; diagnostics, tests and benchmarks).
    std::size_t bundles_received() const noexcept { return bundles_received_; }

    /// Whether the socket `fd` is in the registered file table, so its operations are
    /// submitted with `IOSQE_FIXED_FILE` (diagnostics and tests).
    bool fixed_file(int fd) const noexcept {
        const fd_slot* slot = slots_.find(fd);
        return slot && slot->fixed;
    }

    /// Installs the socket in the registered file table (`options::fixed_files`). A
    /// socket that cannot be installed (its number past the table, a call from a thread
    /// that is not the ring's issuer) is used through its fd: attaching never fails.
    int attach(int fd) noexcept {
        if (static_cast<unsigned>(fd) >= features_.fixed_file_slots) return 0;
        fd_slot* slot = slots_.entry(fd);
        if (!slot) return 0;
        slot->fixed = io_uring_register_files_update(&ring_, static_cast<unsigned>(fd), &fd, 1) == 1;
        return 0;
    }

    /// True when `fd` has an operation in flight, a receive waiting for a provided
    /// buffer, or a multishot (armed or holding received data): a socket in any of these
    /// states cannot move to another loop (`basic_socket::release`), since the kernel or
    /// this ring holds its next bytes.
    bool busy(int fd) const noexcept {
        if (const fd_slot* slot = slots_.find(fd); slot && slot->busy) return true;
        if (find_multishot(fd)) return true;
        for (const detail::proactor_op* w : buffer_waiters_)
            if (w && w->fd == fd) return true;
        return false;
    }

    /// Before `close(fd)`: cancels every operation in flight on `fd` and submits at once,
    /// so the kernel lets go of the file before it is closed (the peer then sees the FIN).
    /// Operations waiting in backend state (for a provided buffer, on a multishot)
    /// complete with `-ECANCELED` now; those in the kernel complete with `-ECANCELED` (or
    /// their real result) when their CQE arrives. The fd's generation moves on, so such a
    /// late completion is never resubmitted: after `close(2)` the number belongs to the
    /// next socket (DESIGN invariant 10), which starts with no busy bits.
    void detach(int fd) noexcept {
        fd_slot* slot = find_slot(fd);
        if (!slot) return;  // nothing was ever submitted on it
        const multishot* m = find_multishot(fd);
        bool armed = m && m->armed;
        drop_multishot(fd);
        for (detail::proactor_op*& w : buffer_waiters_) {
            if (w && w->fd == fd) {
                detail::proactor_op& op = *std::exchange(w, nullptr);
                op.held = false;
                settle(op, -ECANCELED);
            }
        }
        bool busy = slot->busy != 0;
        ++slot->generation;
        slot->busy = 0;
        if (busy || armed) {
            // (Found by the file, not the number: it also finds requests that use the
            // registered slot.)
            io_uring_sqe* sqe = get_sqe();
            io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
            io_uring_sqe_set_data64(sqe, internal_tag);
            // Submit and run the cancellations' completion work now, so every request has
            // dropped its reference to the file before close(2).
            flush_and_get_events();
        }
        if (slot->fixed) {
            // The table holds a reference to the socket too: without this, close(2) would
            // not close the connection (no FIN) until the slot was reused.
            const int none = -1;
            (void)io_uring_register_files_update(&ring_, static_cast<unsigned>(fd), &none, 1);
            slot->fixed = false;
        }
    }

    /// Queues `op`'s submission; the loop submits it with the next wait. A full
    /// submission queue is submitted to the kernel first, never dropped. `-EBUSY` when
    /// an operation of the same direction is already in flight on the fd (the same rule
    /// as the reactors: one reader and one writer per socket).
    int submit(detail::proactor_op& op) noexcept {
        if (int err = mark(op); err < 0) return err;
        op.state = detail::op_state::parked;
        op.cancel_requested = false;
        op.abandoned = false;
        op.buffer_woken = false;
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
        send_cancel(op);
    }

    /// Queues an async cancel of `op`. Its completion names `op` (`cancel_bit`), so a
    /// cancel that found nothing (`-ENOENT`: the operation was between two steps in the
    /// kernel, e.g. woken by readiness and not yet re-armed) is sent again while `op` is
    /// still in flight; `op.cancels_out` keeps `op` alive until each such completion is in.
    void send_cancel(detail::proactor_op& op) noexcept {
        io_uring_sqe* sqe = get_sqe();
        io_uring_prep_cancel64(sqe, reinterpret_cast<std::uintptr_t>(&op), 0);
        io_uring_sqe_set_data64(sqe, reinterpret_cast<std::uintptr_t>(&op) | cancel_bit);
        ++op.cancels_out;
    }

    /// The completion of `send_cancel`.
    void on_cancel(detail::proactor_op& op, int res) noexcept {
        --op.cancels_out;
        if (res == -ENOENT && op.state == detail::op_state::parked && op.cancel_requested && !op.held) send_cancel(op);
    }

    /// `op`'s frame is being destroyed while the kernel may still own its buffer:
    /// cancels it and processes completions until its CQE has arrived.
    void forget(detail::proactor_op& op) noexcept {
        if (op.state == detail::op_state::parked) {
            op.abandoned = true;
            if (op.held) {
                release_held(op);
                settle(op, -ECANCELED);
            } else {
                cancel(op);
            }
        }
        // Also after it settled: a cancel's completion names the operation.
        while (op.state == detail::op_state::parked || op.cancels_out > 0) {
            // Submit, run the kernel's deferred completion work (DEFER_TASKRUN: a request
            // between two steps, e.g. a send woken to retry, moves on only then; a cancel
            // sent meanwhile finds nothing), and wait for a completion. (Waiting on a
            // completion already in the ring would skip that work: the operation would
            // never move, and the cancel be sent again and again.)
            int r = io_uring_submit_and_wait(&ring_, 1);
            if (r < 0 && r != -EINTR && r != -ETIME && r != -EBUSY) break;  // the ring is unusable
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
            WEFT_TRACE_LINE("io_uring_enter: submit_and_wait(1, timeout %s) -> %s", WEFT_TRACE_TIMEOUT(timeout),
                            WEFT_TRACE_RES(r));
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

    /// Wakes `target`, the backend of another io_uring loop, from this loop's thread:
    /// posts a completion into its ring (`IORING_OP_MSG_RING`), submitted at once. The
    /// target then wakes like it does for any completion, with no eventfd to write, read
    /// and re-arm. False when this ring cannot (kernel before 5.18): use `target.wake()`.
    /// If the kernel refuses the message later, its failure comes back on this ring and
    /// the target's eventfd is written instead (and this ring stops trying).
    bool wake_ring_to_ring(uring& target) noexcept {
        if (!features_.msg_ring) return false;
        io_uring_sqe* sqe = get_sqe();
        io_uring_prep_msg_ring(sqe, target.ring_.ring_fd, 0, msg_tag, 0);
        sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;  // the sender hears only of a failure
        io_uring_sqe_set_data64(sqe, reinterpret_cast<std::uint64_t>(&target) | msg_failed_bits);
        int r = io_uring_submit(&ring_);
        WEFT_TRACE_LINE("io_uring_enter: submit MSG_RING to ring fd %d -> %s", target.ring_.ring_fd, WEFT_TRACE_RES(r));
        // Not submitted (the completion queue is backed up): the caller writes the eventfd.
        // The message goes with this ring's next submission, a spare wake-up.
        return r > 0;
    }

    /// Cancels everything this ring has in the kernel and reaps the completions, on the
    /// loop's own thread: the operations settle into the loop's ready queue (completed,
    /// not resumed). A runtime calls it on every loop before any task is destroyed, since
    /// a task that moved between loops may be destroyed on another loop's thread, which
    /// must then find its operations settled and never enter this ring (a ring is used
    /// only from its own thread: SINGLE_ISSUER, and a registered ring fd is per thread).
    /// Bounded: at most about a second for requests the kernel cannot cancel at once.
    void quiesce() noexcept {
        quiesced_ = true;  // the wake-up poll, cancelled too, stays off (wake() still writes the eventfd)
        for (int quiet = 0, round = 0; quiet < 2 && round < 50; ++round) {
            io_uring_sqe* sqe = get_sqe();
            io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
            io_uring_sqe_set_data64(sqe, internal_tag);
            // (Some operations resubmit their rest when a partial result arrives: each
            // round cancels again, until two rounds in a row bring no completion.)
            const unsigned before = reaped_;
            __kernel_timespec ts{0, 20'000'000};
            io_uring_cqe* cqe = nullptr;
            (void)io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
            reap();
            quiet = reaped_ == before + 1 ? quiet + 1 : 0;  // only the cancel's own completion
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
        /// `recv(2)` into [buf, buf+len) (bytes a multishot `receive()` read ahead first).
        void recv(int fd, void* buf, std::size_t len) noexcept {
            iovec one{buf, len};
            if (ring_.read_through(op_, fd, std::span<const iovec>(&one, 1), *this)) {
                WEFT_TRACE_LINE("recv fd %d: bytes the multishot recv read ahead, no sqe", fd);
                return;
            }
            if (inject(sys::call::recv, fd, len)) return;
            io_uring_sqe* s = sqe();
            io_uring_prep_recv(s, fd, buf, len, 0);
            on_socket(s, fd);
            WEFT_TRACE_LINE("sqe recv fd %d len %zu", fd, len);
        }
        /// `send(2)` of [buf, buf+len) with `MSG_NOSIGNAL` (and `flags`, e.g. `MSG_MORE`).
        void send(int fd, const void* buf, std::size_t len, int flags = 0) noexcept {
            if (inject(sys::call::send, fd, len)) return;
            io_uring_sqe* s = sqe();
            io_uring_prep_send(s, fd, buf, len, MSG_NOSIGNAL | flags);
            on_socket(s, fd);
            WEFT_TRACE_LINE("sqe send fd %d len %zu", fd, len);
        }
        /// The next connection on listener `fd` (new fd `CLOEXEC` plus `flags`), from the
        /// listener's multishot accept.
        void accept(int fd, int flags) noexcept {
            // A connection the multishot already accepted is handed out without a
            // syscall, so no fault applies to it (a fake EMFILE there would model a
            // kernel that fails an accept it has already done).
            if (ring_.features_.multishot_accept) {
                if (multishot* m = ring_.find_multishot(fd, multishot::kind::accept);
                    m && ring_.take_queued(*m, *this)) {
                    WEFT_TRACE_LINE("accept fd %d: a connection the multishot accept already took, no sqe", fd);
                    return;
                }
            }
            std::size_t none = 0;
            if (inject(sys::call::accept, fd, none)) return;
            if (ring_.features_.multishot_accept && ring_.accept_from_multishot(op_, fd, flags, *this)) {
                WEFT_TRACE_LINE("accept fd %d: waits on the listener's multishot accept", fd);
                return;
            }
            io_uring_sqe* s = sqe();
            io_uring_prep_accept(s, fd, nullptr, nullptr, flags | SOCK_CLOEXEC);
            on_socket(s, fd);
            WEFT_TRACE_LINE("sqe accept fd %d", fd);
        }
        /// `connect(2)`; the address must live until the completion (it is in the frame).
        void connect(int fd, const sockaddr* addr, socklen_t len) noexcept {
            std::size_t none = 0;
            if (inject(sys::call::connect, fd, none)) return;
            io_uring_sqe* s = sqe();
            io_uring_prep_connect(s, fd, addr, len);
            on_socket(s, fd);
            WEFT_TRACE_LINE("sqe connect fd %d", fd);
        }
        /// `recv(2)` into a buffer the kernel picks from the provided-buffer ring: the
        /// next completion of the stream's multishot recv, or a single-shot recv.
        void recv_provided(int fd) noexcept {
            std::size_t len = ring_.opts_.buffer_size;
            if (int err = ring_.ensure_buffers(); err < 0) return complete_now(err);
            op_.uses_buffers = true;
            // Bytes read ahead are handed out without a syscall: no fault applies.
            if (multishot* m = ring_.find_multishot(fd, multishot::kind::recv); m && ring_.take_queued(*m, *this)) {
                WEFT_TRACE_LINE("receive fd %d: a buffer the multishot recv already filled, no sqe", fd);
                return;
            }
            if (inject(sys::call::recv, fd, len)) return;
            // While receives wait for a buffer, a new one queues behind them: submitted,
            // it would take the next returned buffer first (no connection starves).
            if (!op_.buffer_woken && ring_.queue_for_buffer(op_)) return;
            // A receive woken because a buffer came back reads with a single-shot recv:
            // if it is cancelled before its data comes, nothing is left armed to read
            // ahead into the buffer the next waiter needs. (Unless the stream's multishot
            // is still armed, ending: its bytes come first, so the receive waits on it.)
            multishot* m = ring_.find_multishot(fd, multishot::kind::recv);
            if (ring_.features_.multishot_recv && (!op_.buffer_woken || (m && m->armed)) &&
                ring_.recv_from_multishot(op_, fd, *this)) {
                WEFT_TRACE_LINE("receive fd %d: waits on the stream's multishot recv (provided buffers)", fd);
                return;
            }
            io_uring_sqe* s = sqe();
            io_uring_prep_recv(s, fd, nullptr, len, 0);
            s->flags |= IOSQE_BUFFER_SELECT;
            s->buf_group = buffer_group;
            on_socket(s, fd);
            WEFT_TRACE_LINE("sqe recv fd %d, buffer picked by the kernel", fd);
        }
        /// `recvmsg(2)` (vectored receive) with `flags` (`MSG_TRUNC` for a datagram's real
        /// length); `msg` lives in the operation until it completes.
        void recvmsg(int fd, msghdr* msg, unsigned flags = 0) noexcept {
            std::span<const iovec> iov(msg->msg_iov, msg->msg_iovlen);
            if (ring_.read_through(op_, fd, iov, *this)) return;
            if (inject_vectored(sys::call::recvmsg, fd, *msg)) return;
            io_uring_sqe* s = sqe();
            io_uring_prep_recvmsg(s, fd, msg, flags);
            on_socket(s, fd);
            WEFT_TRACE_LINE("sqe recvmsg fd %d", fd);
        }
        /// `sendmsg(2)` with `MSG_NOSIGNAL` (vectored send).
        void sendmsg(int fd, msghdr* msg) noexcept {
            if (inject_vectored(sys::call::sendmsg, fd, *msg)) return;
            io_uring_sqe* s = sqe();
            io_uring_prep_sendmsg(s, fd, msg, MSG_NOSIGNAL);
            on_socket(s, fd);
            WEFT_TRACE_LINE("sqe sendmsg fd %d", fd);
        }
        /// A kernel timer (`IORING_OP_TIMEOUT`) that completes with `-ETIME` after `*ts`;
        /// `ts` must live until the completion. weft's own timers use the loop's heap
        /// instead (cheaper: `benchmarks/timer_cost.cpp` measures both).
        void timeout(__kernel_timespec* ts) noexcept { io_uring_prep_timeout(sqe(), ts, 0, 0); }
        /// One-shot poll for `events`. Bytes a multishot `receive()` read ahead count as
        /// readable: the socket itself may be empty.
        void poll(int fd, unsigned events) noexcept {
            if ((events & POLLIN) && ring_.read_ahead(fd) > 0) return complete_now(POLLIN);
            io_uring_sqe* s = sqe();
            io_uring_prep_poll_add(s, fd, events);
            on_socket(s, fd);
            WEFT_TRACE_LINE("sqe poll fd %d%s%s", fd, events & POLLIN ? " in" : "", events & POLLOUT ? " out" : "");
        }
        /// `pread(2)` of `len` bytes at `offset` (`IORING_OP_READ`): file IO without a thread.
        void read_at(int fd, void* buf, std::size_t len, std::uint64_t offset) noexcept {
            io_uring_prep_read(sqe(), fd, buf, clamp(len), offset);
        }
        /// `pwrite(2)` of `len` bytes at `offset` (`IORING_OP_WRITE`).
        void write_at(int fd, const void* buf, std::size_t len, std::uint64_t offset) noexcept {
            io_uring_prep_write(sqe(), fd, buf, clamp(len), offset);
        }
        /// `preadv(2)` (`IORING_OP_READV`); the entries live in the caller until the completion.
        void readv_at(int fd, const iovec* iov, unsigned count, std::uint64_t offset) noexcept {
            io_uring_prep_readv(sqe(), fd, iov, count, offset);
        }
        /// `pwritev(2)` (`IORING_OP_WRITEV`).
        void writev_at(int fd, const iovec* iov, unsigned count, std::uint64_t offset) noexcept {
            io_uring_prep_writev(sqe(), fd, iov, count, offset);
        }
        /// `fsync(2)`, or `fdatasync(2)` when `data_only` (`IORING_OP_FSYNC`).
        void fsync(int fd, bool data_only) noexcept {
            io_uring_prep_fsync(sqe(), fd, data_only ? IORING_FSYNC_DATASYNC : 0);
        }
        /// `statx(2)` (`IORING_OP_STATX`); `path` and `out` live until the completion.
        void statx(int dirfd, const char* path, int flags, unsigned mask, struct statx* out) noexcept {
            io_uring_prep_statx(sqe(), dirfd, path, flags, mask, out);
        }
        /// `openat(2)` (`IORING_OP_OPENAT`); `path` lives until the completion.
        void openat(int dirfd, const char* path, int flags, mode_t mode) noexcept {
            io_uring_prep_openat(sqe(), dirfd, path, flags, mode);
        }
        /// `openat2(2)` (`IORING_OP_OPENAT2`); `path` and `how` live until the completion.
        void openat2(int dirfd, const char* path, open_how* how) noexcept {
            io_uring_prep_openat2(sqe(), dirfd, path, how);
        }
        /// `close(2)` (`IORING_OP_CLOSE`).
        void close(int fd) noexcept { io_uring_prep_close(sqe(), fd); }
        /// `splice(2)` of up to `len` bytes (`IORING_OP_SPLICE`); an offset of -1 means
        /// "the file position" (pipes and sockets have none).
        void splice(int fd_in, std::int64_t off_in, int fd_out, std::int64_t off_out, unsigned len) noexcept {
            io_uring_prep_splice(sqe(), fd_in, off_in, fd_out, off_out, len, SPLICE_F_MOVE);
        }
        /// Nothing to do: completes with 0.
        void nop() noexcept { io_uring_prep_nop(sqe()); }
        /// Completes the operation with `res` (and CQE `flags`) without a submission.
        void complete_now(int res, std::uint64_t flags = 0) noexcept {
            immediate_ = true;
            result_ = res;
            flags_ = flags;
        }
        /// True if the operation completed without a submission; `result()` then holds it.
        bool immediate() const noexcept { return immediate_; }
        /// The result of an operation that completed without a submission.
        int result() const noexcept { return result_; }
        /// The CQE flags of an operation that completed without a submission.
        std::uint64_t flags() const noexcept { return flags_; }

    private:
        /// One SQE moves at most 2^31 - 1 bytes (its result is an int).
        static unsigned clamp(std::size_t len) noexcept {
            return len > 0x7fffffffu ? 0x7fffffffu : static_cast<unsigned>(len);
        }
        /// A prepared SQE on `fd` uses the registered file table's slot when the
        /// operation's socket is in it (the slot is the fd number, so `sqe->fd` stays).
        void on_socket(io_uring_sqe* s, int fd) const noexcept {
            if (op_.fixed && fd == op_.fd) s->flags |= IOSQE_FIXED_FILE;
        }
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
        /// `inject` for a vectored operation: a shortened length keeps the entries that fit
        /// in it (at least one). Whole entries, because the entries are the caller's and
        /// the kernel reads them after this returns; the op rebuilds `msg` every step.
        bool inject_vectored(sys::call site, int fd, msghdr& msg) noexcept {
            const std::size_t all = sys::detail::total_of(&msg);
            std::size_t len = all;
            if (inject(site, fd, len)) return true;
            if (len < all) {
                std::size_t keep = 1, n = msg.msg_iov[0].iov_len;
                while (keep < msg.msg_iovlen && n + msg.msg_iov[keep].iov_len <= len) n += msg.msg_iov[keep++].iov_len;
                msg.msg_iovlen = keep;
            }
            return false;
        }
        uring& ring_;
        detail::proactor_op& op_;
        bool immediate_ = false;
        int result_ = 0;
        std::uint64_t flags_ = 0;
    };

private:
    static constexpr std::uint16_t buffer_group = 0;

    /// The provided-buffer ring: buffers the kernel picks from as data arrives.
    struct buffer_ring final : detail::buffer_source {
        buffer_ring(uring& r, std::uint16_t count, std::uint32_t size) : owner(r), slab(count, size) {}
        /// A completion carrying buffer `id` (with `res` bytes) was reaped: returns where in
        /// the buffer its bytes start. Every such completion is given back once (a lease,
        /// or at once when it carries no data).
        std::uint32_t taken(std::uint16_t id, int res, [[maybe_unused]] std::uint32_t cqe_flags) noexcept {
            // The kernel takes buffers in ring order: this one is at the head.
            assert(id == id_at(head));
            if (!fills) {  // the completion has the whole buffer: it left the ring
                --available;
                ++head;
                return 0;
            }
            fill& f = fills[id];
            const std::uint32_t at = f.used;
            ++f.pieces;
            // The kernel fills a buffer front to back and lets go of it when nothing is
            // left (it does not advance past a buffer for a completion without bytes).
            if (res > 0) {
                f.used += static_cast<std::uint32_t>(res);
                if (f.used >= slab.size()) {
                    f.in_ring = false;
                    --available;
                    ++head;
                }
                // The kernel says the same: "more" while it keeps the buffer.
                assert(((cqe_flags & uring_abi::cqe_f_buf_more) != 0) == f.in_ring);
            }
            return at;
        }
        /// `taken` for a bundle completion (`options::bundles`): `res` bytes from buffer
        /// `id` (the head) on, in ring order, each buffer filled before the next. Returns
        /// how many buffers hold them; the second and later are chained from `id` through
        /// `next`, with their byte counts in `length`, for `reap` to hand out one each
        /// (the ring's own entries may be rewritten by then). Adds the first piece's
        /// offset to `flags`, or drops its buffer flag when the bundle got no bytes (the
        /// kernel then keeps the buffer in the ring).
        std::uint32_t take_bundle(std::uint64_t& flags, int res) noexcept {
            auto id = static_cast<std::uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
            const auto cqe_flags = static_cast<std::uint32_t>(flags);
            if (res <= 0 && !fills) {
                flags &= ~std::uint64_t{IORING_CQE_F_BUFFER};
                return 1;
            }
            auto left = static_cast<std::uint32_t>(std::max(res, 0));
            const std::uint32_t room = slab.size() - (fills ? fills[id].used : 0);
            if (left <= room) {  // one buffer: an ordinary completion
                flags |= std::uint64_t{taken(id, res, cqe_flags)} << 32;
                return 1;
            }
            // Every buffer but the last is full: the kernel moved past it ("more" is the
            // last one's).
            flags |= std::uint64_t{taken(id, static_cast<int>(room), cqe_flags & ~uring_abi::cqe_f_buf_more)} << 32;
            left -= room;
            std::uint32_t count = 1;
            while (left > 0) {
                const std::uint16_t at = id_at(head);
                next[id] = at;
                id = at;
                const std::uint32_t n = std::min(left, slab.size());
                left -= n;
                [[maybe_unused]] const std::uint32_t offset =
                    taken(id, static_cast<int>(n), left > 0 ? cqe_flags & ~uring_abi::cqe_f_buf_more : cqe_flags);
                assert(offset == 0);
                length[id] = n;
                ++count;
            }
            return count;
        }
        /// The buffer at ring position `pos` (the kernel's positions: 16 bits, wrapping).
        std::uint16_t id_at(std::uint16_t pos) const noexcept {
            return ring->bufs[pos & io_uring_buf_ring_mask(slab.count())].bid;
        }
        void give_back(std::uint16_t id) noexcept override {
            if (fills) {
                fill& f = fills[id];
                // Other pieces of it are still out, or the kernel still fills it.
                if (--f.pieces > 0 || f.in_ring) return;
                f.used = 0;
                f.in_ring = true;
            }
            io_uring_buf_ring_add(ring, slab.at(id), slab.size(), id, io_uring_buf_ring_mask(slab.count()), 0);
            io_uring_buf_ring_advance(ring, 1);
            ++available;
            owner.buffer_returned();
        }
        /// Incremental consumption: how far the kernel has filled a buffer, how many
        /// completions hold a piece of it, and whether the kernel may still fill it.
        struct fill {
            std::uint32_t used = 0;    ///< bytes the kernel has put in it since it was (re)added
            std::uint32_t pieces = 0;  ///< completions with a piece of it not yet given back
            bool in_ring = true;       ///< the kernel may still receive into it
        };
        uring& owner;
        detail::buffer_slab slab;
        std::unique_ptr<fill[]> fills;  ///< per buffer; null unless consumed incrementally
        /// Bundles: the buffer after this one in its bundle, and its byte count (per buffer,
        /// valid from `reap` taking it to `reap` handing it out; null without bundles).
        std::unique_ptr<std::uint16_t[]> next;
        std::unique_ptr<std::uint32_t[]> length;  ///< (see `next`)
        /// The ring position the kernel takes the next buffer from, as we follow it.
        std::uint16_t head = 0;
        io_uring_buf_ring* ring = nullptr;
        void* memory = nullptr;
        std::size_t memory_size = 0;
        std::size_t available = 0;  ///< buffers the kernel can still receive into
    };

    /// Heap copies of read-ahead bytes taken out of provided buffers because a receive
    /// was waiting for one (`reclaim_read_ahead`): the stream's next receive gets a lease
    /// on the copy, and giving it back frees it. Used only under buffer pressure.
    struct spill_store final : detail::buffer_source {
        void give_back(std::uint16_t id) noexcept override { chunks[id].reset(); }
        /// A copy of [data, data+n) and its id, or -1 when memory (or ids) run out.
        int store(const std::byte* data, std::size_t n) noexcept {
            std::size_t id = 0;
            while (id < chunks.size() && chunks[id]) ++id;
            if (id > 0xffff) return -1;
            try {
                if (id == chunks.size()) chunks.emplace_back();
                chunks[id] = std::make_unique_for_overwrite<std::byte[]>(n);
            } catch (...) {
                return -1;
            }
            std::memcpy(chunks[id].get(), data, n);
            return static_cast<int>(id);
        }
        std::vector<std::unique_ptr<std::byte[]>> chunks;  ///< by id; null when free
    };
    /// Marks a queued receive completion whose bytes moved to the spill store (its id in
    /// the buffer-id bits). Never set by the kernel together with `IORING_CQE_F_BUFFER`,
    /// which every receive completion that carries data has.
    static constexpr unsigned spill_flag = 1u << 14;
    static bool spilled(std::uint64_t flags) noexcept { return (flags & spill_flag) && !(flags & IORING_CQE_F_BUFFER); }
    /// Where the bytes of a receive completion are (its buffer, at the offset `reap` put
    /// in the flags' high half).
    std::byte* bytes_of(std::uint64_t flags) noexcept {
        auto id = static_cast<std::uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
        return spilled(flags) ? spill_.chunks[id].get() : buffers_->slab.at(id) + (flags >> 32);
    }

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
        int err = -EINVAL;  // (without incremental consumption: register plainly below)
        if (opts_.incremental_buffers) {
            uring_abi::set_ring_flags(reg, uring_abi::pbuf_ring_inc);
            err = io_uring_register_buf_ring(&ring_, &reg, 0);
            if (err == 0) {
                b->fills = std::unique_ptr<buffer_ring::fill[]>(new (std::nothrow) buffer_ring::fill[count]);
                if (!b->fills) {
                    (void)io_uring_unregister_buf_ring(&ring_, buffer_group);
                    err = -ENOMEM;
                }
            }
            uring_abi::set_ring_flags(reg, 0);
        }
        if (err == -EINVAL || err == -ENOMEM) err = io_uring_register_buf_ring(&ring_, &reg, 0);  // before 6.12
        if (err < 0) {
            ::munmap(b->memory, b->memory_size);
            return err;
        }
        features_.incremental_buffers = b->fills != nullptr;
        if (features_.bundles) {  // (no multishot recv is armed before this: it is the first receive)
            b->next = std::unique_ptr<std::uint16_t[]>(new (std::nothrow) std::uint16_t[count]);
            b->length = std::unique_ptr<std::uint32_t[]>(new (std::nothrow) std::uint32_t[count]);
            if (!b->next || !b->length) {
                features_.bundles = false;
                b->next.reset();
                b->length.reset();
            }
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
            op->buffer_woken = true;
            prepare(*op);
            break;
        }
    }

    /// `user_data` of SQEs whose completions nobody awaits (cancels, the wake-up poll).
    static constexpr std::uint64_t internal_tag = 0;
    static constexpr std::uint64_t wake_tag = 1;
    /// `user_data` of the completion another loop's MSG_RING posts here (a wake-up).
    static constexpr std::uint64_t msg_tag = 9;  // (no multishot or cancel bit: 0b1001)
    /// Low bits of a MSG_RING's own `user_data` (the target backend's address), seen
    /// only when the kernel refused the message.
    static constexpr std::uint64_t msg_failed_bits = 5;

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
        features_.bundles = opts.bundles && (p.features & uring_abi::feat_recvsend_bundle) != 0;
        if (opts.register_ring_fd) features_.registered_ring_fd = io_uring_register_ring_fd(&ring_) == 1;
        if (io_uring_probe* probe = io_uring_get_probe_ring(&ring_)) {
            features_.msg_ring = io_uring_opcode_supported(probe, IORING_OP_MSG_RING) != 0;
            io_uring_free_probe(probe);
        }
        if (opts.fixed_files) register_file_table();
        return 0;
    }

    /// A sparse registered file table with a slot per fd number the process may open
    /// (`RLIMIT_NOFILE`, at most `max_fixed_file_slots`): the kernel refuses more than
    /// the limit, and a kernel before 5.19 refuses sparse tables (then no socket is
    /// registered and nothing else changes).
    void register_file_table() noexcept {
        rlimit lim{};
        if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
        const auto slots = static_cast<unsigned>(std::min<rlim_t>(lim.rlim_cur, max_fixed_file_slots));
        if (slots > 0 && io_uring_register_files_sparse(&ring_, slots) == 0) features_.fixed_file_slots = slots;
    }
    /// The registered file table's size cap: 64 Ki slots take the kernel 512 KiB per ring.
    static constexpr rlim_t max_fixed_file_slots = 65536;

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

    /// Unlinks an operation waiting in backend state: an accept or receive waiting on its
    /// fd's multishot request, or a receive waiting for a provided buffer.
    void release_held(detail::proactor_op& op) noexcept {
        op.held = false;
        for (auto& w : buffer_waiters_)
            if (w == &op) w = nullptr;
        if (multishot* m = find_multishot(op.fd); m && m->waiter == &op) m->waiter = nullptr;
    }

    /// Per fd number: which directions have an operation in flight, and which socket
    /// (generation) currently owns the number.
    struct fd_slot {
        std::uint32_t generation = 0;  ///< moves on at every detach (the socket is closing)
        std::uint8_t busy = 0;         ///< bit 0 a read, bit 1 a write in flight
        bool fixed = false;            ///< the socket is in the registered file table
    };
    fd_slot* find_slot(int fd) noexcept {
        return slots_.find(fd);
    }
    /// Records `op` in flight on its fd and stamps it with the fd's generation: 0,
    /// `-EBUSY` if an operation of the same direction already is, or `-ENOMEM` when the
    /// table cannot grow (then the op could not be told apart from a later socket's, so
    /// it is refused rather than risk resubmitting it onto a reused number). A negative
    /// fd (a file-less op) needs no slot.
    int mark(detail::proactor_op& op) noexcept {
        op.fixed = false;
        if (op.fd < 0) return 0;
        fd_slot* slot = slots_.entry(op.fd);
        if (!slot) return -ENOMEM;
        auto bit = static_cast<std::uint8_t>(1u << static_cast<unsigned>(op.dir));
        if (slot->busy & bit) return -EBUSY;
        slot->busy |= bit;
        op.generation = slot->generation;
        op.fixed = slot->fixed;
        return 0;
    }
    /// True once `op`'s socket has been detached (closed): its fd number may already
    /// belong to another socket, so nothing of `op` may be submitted again.
    /// `slot` is `op`'s fd's (`find_slot`), looked up once by the caller.
    static bool stale(const detail::proactor_op& op, const fd_slot* slot) noexcept {
        return slot && slot->generation != op.generation;
    }
    /// Clears `op`'s busy bit, unless its socket has been detached (the bits belong to the
    /// number's new owner then). `slot` as for `stale`.
    static void unmark(const detail::proactor_op& op, fd_slot* slot) noexcept {
        if (slot && slot->generation == op.generation)
            slot->busy &= static_cast<std::uint8_t>(~(1u << static_cast<unsigned>(op.dir)));
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
        if (p.immediate()) settle(op, p.result(), p.flags());
    }

    /// One fd's multishot request: a listener's multishot accept, or a stream's
    /// multishot recv behind `receive()`. Completions that arrive while nobody awaits
    /// queue here (up to a cap, then the request is cancelled until they are taken) and
    /// are handed out in order; the next operation re-arms the request once the kernel
    /// has ended it.
    struct multishot {
        /// Which request: multishot accept or multishot recv.
        enum class kind : std::uint8_t { accept, recv };
        /// One queued completion: an accepted fd, or a received buffer (id in `flags`).
        struct completion {
            int res = 0;         ///< the CQE's result
            std::uint64_t flags = 0;  ///< the CQE's flags, and the bytes' offset in their buffer (see `reap`)
        };
        int fd = -1;                            ///< the listener or stream
        kind what = kind::accept;               ///< the request's kind
        int accept_flags = 0;                   ///< flags for accepted sockets
        detail::proactor_op* waiter = nullptr;  ///< the operation waiting for the next completion
        detail::ring_queue<completion> queued;  ///< arrived, not yet handed out
        bool armed = false;                     ///< the request is in the kernel
        bool cancelling = false;                ///< we asked the kernel to end it
        bool closing = false;                   ///< detached: freed at its last completion
        int lost = 0;                           ///< -ENOMEM if a completion could not be queued
    };
    /// Connections a listener's multishot accept queues before it is cancelled.
    static constexpr std::size_t max_queued_connections = 1024;
    /// `user_data` tag bit of multishot completions (records are 8-byte aligned).
    static constexpr std::uint64_t multishot_bit = 2;
    /// `user_data` tag bit of the completions of an operation's async cancel.
    static constexpr std::uint64_t cancel_bit = 4;
    /// Every tag bit: `user_data` without any is an operation record (or `internal_tag`;
    /// liburing's `LIBURING_UDATA_TIMEOUT` is all ones).
    static constexpr std::uint64_t tag_bits = wake_tag | multishot_bit | cancel_bit;
    static_assert((LIBURING_UDATA_TIMEOUT & tag_bits) != 0);

    /// The multishot state of `fd`, if it has one (of kind `what`, if given).
    multishot* find_multishot(int fd) const noexcept {
        if (fd < 0 || static_cast<std::size_t>(fd) >= multishots_.size()) return nullptr;
        return multishots_[static_cast<std::size_t>(fd)].get();
    }
    multishot* find_multishot(int fd, multishot::kind what) const noexcept {
        multishot* m = find_multishot(fd);
        return m && m->what == what ? m : nullptr;
    }
    /// The multishot state of `fd`, created on first use; null when `fd` has one of the
    /// other kind or memory runs out (the caller then falls back to single-shot).
    multishot* multishot_for(int fd, multishot::kind what) noexcept {
        std::unique_ptr<multishot>* entry = detail::fd_entry(multishots_, fd);
        if (!entry) return nullptr;
        if (!*entry) {
            try {
                auto m = std::make_unique<multishot>();
                m->fd = fd;
                m->what = what;
                // A stream's read-ahead queue gets its room now, with the state: it
                // holds at most max_read_ahead completions plus the few already on their
                // way when the request is cancelled, so it normally never grows later,
                // mid-stream (a bigger batch of completions makes it grow, not fail).
                if (what == multishot::kind::recv) m->queued.reserve(2 * max_read_ahead);
                *entry = std::move(m);
            } catch (...) {
                return nullptr;
            }
        }
        return (*entry)->what == what ? entry->get() : nullptr;
    }

    /// Hands the oldest queued completion to `p`'s operation, if there is one.
    bool take_queued(multishot& m, preparer& p) noexcept {
        if (m.lost < 0) {
            p.complete_now(std::exchange(m.lost, 0));
            return true;
        }
        if (m.queued.empty()) return false;
        auto c = pop_queued(m);
        p.complete_now(c.res, c.flags);
        return true;
    }

    /// Takes `m`'s oldest queued completion off its queue.
    multishot::completion pop_queued(multishot& m) noexcept {
        multishot::completion c = m.queued.pop();
        if (m.what == multishot::kind::recv && (c.flags & IORING_CQE_F_BUFFER)) --read_ahead_buffers_;
        return c;
    }

    /// Parks receive `op` behind the receives already waiting for a provided buffer, if
    /// any wait (buffers are handed out in order: see `recv_provided`). False when none
    /// waits, or the stream's multishot is still armed (its bytes come first).
    bool queue_for_buffer(detail::proactor_op& op) noexcept {
        if (!someone_waits_for_buffer()) return false;
        if (const multishot* m = find_multishot(op.fd, multishot::kind::recv); m && m->armed) return false;
        try {
            buffer_waiters_.push_back(&op);
        } catch (...) {
            return false;
        }
        op.held = true;
        return true;
    }

    /// True if a receive waits for a provided buffer (drops the entries of receives that
    /// left from the front first: amortised O(1)).
    bool someone_waits_for_buffer() noexcept {
        while (!buffer_waiters_.empty() && buffer_waiters_.front() == nullptr) buffer_waiters_.pop_front();
        return !buffer_waiters_.empty();
    }

    /// Receives that wait for a provided buffer.
    std::size_t waiting_for_buffers() const noexcept {
        return static_cast<std::size_t>(std::count_if(buffer_waiters_.begin(), buffer_waiters_.end(),
                                                      [](const detail::proactor_op* w) { return w != nullptr; }));
    }

    /// No receive waits for a provided buffer while read-ahead holds one: a stream's
    /// newest read-ahead bytes are copied to the heap (`spill_store`) and their buffer
    /// goes back to the ring, waking a waiter; that stream stops reading ahead (its
    /// multishot is cancelled) and its next receive gets the copy, in order. Without
    /// this, idle streams whose peers keep sending could hold every buffer while an
    /// active stream waits for one that never comes back (a buffer goes back only when
    /// its stream's application receives). Rare by design: read-ahead stops at half the
    /// ring first (`on_multishot`).
    void reclaim_read_ahead() noexcept {
        while (buffers_ && read_ahead_buffers_ > 0 && waiting_for_buffers() > buffers_->available) {
            multishot* victim = nullptr;
            std::size_t at = 0;
            for (auto& e : multishots_) {
                if (!e || e->what != multishot::kind::recv) continue;
                for (std::size_t i = e->queued.size(); i-- > 0;) {
                    if (e->queued[i].flags & IORING_CQE_F_BUFFER) {
                        victim = e.get();
                        at = i;
                        break;
                    }
                }
                if (victim) break;
            }
            if (!victim) return;  // (cannot happen: the count says one exists)
            multishot::completion& c = victim->queued[at];
            const std::uint64_t old = c.flags;
            int id = spill_.store(bytes_of(old), static_cast<std::size_t>(c.res));
            if (id < 0) return;  // no memory: the waiter waits for a lease to come back
            c.flags = spill_flag | (static_cast<unsigned>(id) << IORING_CQE_BUFFER_SHIFT);
            --read_ahead_buffers_;
            cancel_multishot(*victim);
            give_back_buffer(old);  // last: it may resume a waiter, which may touch queues
        }
    }

    /// Parks `op` on `m` until its next completion, arming the request if needed.
    void wait_on(multishot& m, detail::proactor_op& op) noexcept {
        m.waiter = &op;
        op.held = true;
        if (m.armed) return;  // (if a cancel of ours is in flight, its final CQE re-arms)
        io_uring_sqe* s = get_sqe();
        if (m.what == multishot::kind::accept) {
            io_uring_prep_multishot_accept(s, m.fd, nullptr, nullptr, m.accept_flags | SOCK_CLOEXEC);
        } else {
            io_uring_prep_recv_multishot(s, m.fd, nullptr, 0, 0);
            s->flags |= IOSQE_BUFFER_SELECT;
            s->buf_group = buffer_group;
            if (features_.bundles) s->ioprio |= uring_abi::recvsend_bundle;  // (liburing 2.3 has no helper)
        }
        if (fixed_file(m.fd)) s->flags |= IOSQE_FIXED_FILE;
        io_uring_sqe_set_data64(s, reinterpret_cast<std::uintptr_t>(&m) | multishot_bit);
        m.armed = true;
    }

    /// Asks the kernel to end `m`'s request (once); its final CQE says when it has.
    void cancel_multishot(multishot& m) noexcept {
        if (!m.armed || m.cancelling) return;
        m.cancelling = true;
        io_uring_sqe* s = get_sqe();
        io_uring_prep_cancel64(s, reinterpret_cast<std::uintptr_t>(&m) | multishot_bit, 0);
        io_uring_sqe_set_data64(s, internal_tag);
    }

    /// An accept on listener `fd`: a connection already accepted, or a wait on the
    /// listener's multishot accept. False when there is no state to wait on (no memory).
    bool accept_from_multishot(detail::proactor_op& op, int fd, int flags, preparer& p) noexcept {
        multishot* m = multishot_for(fd, multishot::kind::accept);
        if (!m) return false;
        m->accept_flags = flags;
        if (!take_queued(*m, p)) wait_on(*m, op);
        return true;
    }

    /// A `receive()` on stream `fd`: a completion read ahead, or a wait on the stream's
    /// multishot recv. False when there is no state to wait on (no memory).
    bool recv_from_multishot(detail::proactor_op& op, int fd, preparer& p) noexcept {
        multishot* m = multishot_for(fd, multishot::kind::recv);
        if (!m) return false;
        if (!take_queued(*m, p)) wait_on(*m, op);
        return true;
    }

    /// A plain read (`read_some`, `read_exact`, `readv`) on a stream whose multishot
    /// `receive()` may have read ahead: bytes already taken from the socket go first, so
    /// mixing the two APIs keeps the byte order. True if it dealt with `op` (copied read-
    /// ahead bytes into `iov`, or parked `op` until the multishot has ended); false when
    /// the read can go to the kernel.
    bool read_through(detail::proactor_op& op, int fd, std::span<const iovec> iov, preparer& p) noexcept {
        multishot* m = find_multishot(fd, multishot::kind::recv);
        if (!m) return false;
        if (m->lost < 0 || m->queued.empty() || m->queued.front().res <= 0) {
            if (take_queued(*m, p)) return true;  // an error or EOF, in order
            if (!m->armed) return false;
            // Bytes could still land in the multishot's buffers: end it, then read.
            m->waiter = &op;
            op.held = true;
            cancel_multishot(*m);
            return true;
        }
        multishot::completion& c = m->queued.front();
        std::byte* src = bytes_of(c.flags);
        const auto have = static_cast<std::size_t>(c.res);
        std::size_t n = 0;
        for (const iovec& v : iov) {
            std::size_t k = std::min(v.iov_len, have - n);
            std::memcpy(v.iov_base, src + n, k);
            n += k;
            if (n == have) break;
        }
        if (n == have) {
            give_back_buffer(pop_queued(*m).flags);
        } else {  // the rest stays queued, at the buffer's start
            std::memmove(src, src + n, have - n);
            c.res = static_cast<int>(have - n);
        }
        p.complete_now(static_cast<int>(n));
        return true;
    }

    /// Every completion of a multishot request.
    void on_multishot(multishot& m, int res, std::uint64_t flags) noexcept {
        const bool more = (flags & IORING_CQE_F_MORE) != 0;
        if (!more) {
            m.armed = false;  // the kernel ended the request
            m.cancelling = false;
        }
        if (m.closing) {
            discard(m, {res, flags});
            if (!m.armed) std::erase_if(closing_, [&](const auto& p) { return p.get() == &m; });
            return;
        }
        detail::proactor_op* w = m.waiter;
        if (!more && res == -EINVAL && !features_.defer_taskrun) {
            // A kernel before 6.1 (no DEFER_TASKRUN) may lack multishot accept (5.19) or
            // recv (6.0): it refuses the flag with EINVAL. Single-shot from now on. (On
            // 6.1 and later both exist, and EINVAL is the operation's own error.)
            (m.what == multishot::kind::accept ? features_.multishot_accept : features_.multishot_recv) = false;
            if (w) resubmit_waiter(m);
            return;
        }
        if (!more && (res == -ECANCELED || res == -ENOBUFS)) {
            // Ended by our own cancel (cap reached, or a plain read wants the socket), or
            // the buffer ring ran dry. A receive waiting for buffers parks in `settle`.
            if (w && res == -ENOBUFS && m.what == multishot::kind::recv && w->uses_buffers) {
                m.waiter = nullptr;
                w->held = false;
                settle(*w, res);
            } else if (w) {
                resubmit_waiter(m);  // re-arms, or reads with a plain recv
            }
            return;
        }
        if (w && !(m.what == multishot::kind::recv && !w->uses_buffers)) {
            // The hot path: an accept or receive is waiting for exactly this.
            m.waiter = nullptr;
            w->held = false;
            // While other receives wait for a buffer, this stream's multishot must not
            // take the next one before them: it ends, and the stream queues like others.
            if (m.what == multishot::kind::recv && someone_waits_for_buffer()) cancel_multishot(m);
            settle(*w, res, flags);  // errors (EMFILE...) go to the op, which knows what to do
            return;
        }
        if (m.what == multishot::kind::accept && res < 0) return;  // nobody asked; the next accept sees it again
        if (!m.queued.push({res, flags})) {
            discard(m, {res, flags});  // no memory: the next operation reports it, in place of the data
            m.lost = -ENOMEM;
            cancel_multishot(m);
        } else if (m.what == multishot::kind::recv && (flags & IORING_CQE_F_BUFFER)) {
            ++read_ahead_buffers_;
        }
        const std::size_t cap = m.what == multishot::kind::accept ? max_queued_connections : max_read_ahead;
        if (m.queued.size() >= cap) cancel_multishot(m);
        if (m.what == multishot::kind::recv && buffers_) {
            // All streams together read ahead into at most half the ring, so streams
            // that receive keep buffers to receive into; and a receive already waiting
            // for one gets this one (its bytes are copied out).
            if (2 * read_ahead_buffers_ >= buffers_->slab.count()) cancel_multishot(m);
            if (someone_waits_for_buffer()) {
                cancel_multishot(m);
                reclaim_read_ahead();
            }
        }
        if (w) resubmit_waiter(m);  // a plain read waiting for the read-ahead: copy it now
    }

    /// A bundle completion of stream `m`'s multishot recv (`options::bundles`): handed
    /// on as one completion per buffer, in order, as if the kernel had posted them
    /// separately. The first has the bytes from its offset to the buffer's end, every
    /// later one starts at its buffer's start (`take_bundle` chained them); all but the
    /// last say "more" (the request goes on), the last has the CQE's own flags.
    void on_bundle(multishot& m, std::uint64_t flags, std::uint32_t count) noexcept {
        constexpr std::uint64_t more = IORING_CQE_F_BUFFER | IORING_CQE_F_MORE;
        auto id = static_cast<std::uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
        const std::uint32_t offset = static_cast<std::uint32_t>(flags >> 32);
        for (std::uint32_t i = 0; i < count; ++i) {
            const std::uint64_t piece = std::uint64_t{id} << IORING_CQE_BUFFER_SHIFT;
            if (i + 1 == count) {
                on_multishot(m, static_cast<int>(buffers_->length[id]),
                             (flags & ((1u << IORING_CQE_BUFFER_SHIFT) - 1)) | piece);
                break;
            }
            // Read before handing the piece on: its buffer may come back to the ring, and
            // be taken again, while it is handled.
            const std::uint16_t following = buffers_->next[id];
            const int bytes = static_cast<int>(i == 0 ? buffers_->slab.size() - offset : buffers_->length[id]);
            on_multishot(m, bytes, more | piece | (i == 0 ? std::uint64_t{offset} << 32 : 0));
            id = following;
        }
    }

    /// Prepares `m`'s waiter again, now that the request's state changed.
    void resubmit_waiter(multishot& m) noexcept {
        detail::proactor_op* w = std::exchange(m.waiter, nullptr);
        w->held = false;
        prepare(*w);
    }

    /// Lets go of a completion nobody will take: closes an accepted fd, gives a buffer back.
    void discard(multishot& m, multishot::completion c) noexcept {
        if (m.what == multishot::kind::accept) {
            if (c.res >= 0) sys::close(c.res);
        } else {
            give_back_buffer(c.flags);
        }
    }

    /// Returns the provided buffer a completion with CQE `flags` carries, if it has one.
    void give_back_buffer(std::uint64_t flags) noexcept {
        if (spilled(flags))
            spill_.give_back(static_cast<std::uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT));
        else if ((flags & IORING_CQE_F_BUFFER) && buffers_)
            buffers_->give_back(static_cast<std::uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT));
    }

    /// Before `fd` closes: its waiter completes cancelled, queued completions are let
    /// go, and its state lives on until the kernel's last completion.
    void drop_multishot(int fd) noexcept {
        if (!find_multishot(fd)) return;
        std::unique_ptr<multishot> m = std::move(multishots_[static_cast<std::size_t>(fd)]);
        if (detail::proactor_op* w = std::exchange(m->waiter, nullptr)) {
            w->held = false;
            settle(*w, -ECANCELED);
        }
        multishot& raw = *m;
        while (!raw.queued.empty()) discard(raw, pop_queued(raw));
        if (!raw.armed) return;  // nothing in the kernel refers to it
        raw.closing = true;
        try {
            closing_.push_back(std::move(m));  // the cancel_fd in detach ends the request
        } catch (...) {
            // Cannot keep it: wait for the kernel to let go of it now instead.
            cancel_multishot(raw);
            while (raw.armed) {
                flush();
                io_uring_cqe* cqe = nullptr;
                if (io_uring_wait_cqe(&ring_, &cqe) < 0) break;
                reap();
            }
        }
    }

    /// Hands one result to `op`: completes it, or submits its next step.
    void settle(detail::proactor_op& op, int res, std::uint64_t flags = 0) noexcept {
        fd_slot* slot = find_slot(op.fd);
        if (stale(op, slot)) [[unlikely]]
            return settle_closed(op, res, flags);
        if ((res == -ENOBUFS || res == -EINTR) && settle_retry(op, res)) [[unlikely]]
            return;
        if (op.abandoned) [[unlikely]]
            return settle_abandoned(op, res, flags);
        bool done = op.finish(op, res, flags);
        if (!done && !op.cancel_requested) {
            prepare(op);  // partial progress (write_all, read_exact...): submit the rest
            return;
        }
        if (!done) op.res = -ECANCELED;  // cancelled between two steps: the rest never happened
        unmark(op, slot);  // (finishing an operation opens no fd: the table has not moved)
        finish_settled(op, flags);
    }

    /// `settle` for `ENOBUFS` and `EINTR`: true if `op` was submitted again or parked for
    /// a buffer; otherwise `res` is what to complete it with.
    [[gnu::noinline]] bool settle_retry(detail::proactor_op& op, int& res) noexcept {
        if (res == -ENOBUFS && (op.cancel_requested || op.abandoned)) res = -ECANCELED;  // it was not waiting any more
        if (res == -EINTR) {
            // Sockets here are blocking: a request the kernel ran on a worker thread ends
            // with EINTR when it is cancelled. Without a cancel it was interrupted, and is
            // submitted again, as a syscall would be retried.
            if (!op.cancel_requested && !op.abandoned) {
                prepare(op);
                return true;
            }
            res = -ECANCELED;
        }
        if (res == -ENOBUFS && op.uses_buffers) {
            // The ring is empty: wait for a lease to come back, then submit again.
            try {
                buffer_waiters_.push_back(&op);
                op.held = true;
                // A lease may have come back since the kernel found the ring empty: no
                // receive waits while a buffer is free, nor while read-ahead holds one.
                if (buffers_ && buffers_->available > 0)
                    buffer_returned();
                else
                    reclaim_read_ahead();
                return true;
            } catch (...) {
            }
        }
        return false;
    }

    /// `settle` for an operation whose socket was closed under it (its CQE arrived after
    /// `detach`): a result it really got is delivered (bytes read, a connection accepted),
    /// but nothing is submitted again (a partial write's rest would go to whichever
    /// socket now has the number), no error handling of the op runs (an accept's EMFILE
    /// shedding would use the closed listener's reserve fd), and the busy bits, which
    /// belong to the number's new owner, are left alone.
    void settle_closed(detail::proactor_op& op, int res, std::uint64_t flags) noexcept {
        if (op.abandoned) return settle_abandoned(op, res, flags);
        if (res >= 0 && op.finish(op, res, flags)) return finish_settled(op, flags);  // delivered
        if (res < 0) give_back_buffer(flags);
        // A partial operation's rest never happened; ENOBUFS only meant "wait", EINTR is
        // how a cancelled worker-thread request ends, and nothing waits for a closed socket.
        op.res = res >= 0 || res == -ENOBUFS || res == -EINTR ? -ECANCELED : res;
        finish_settled(op, flags);
    }

    /// `settle` for an operation whose frame is being destroyed (`forget` waits for
    /// this): nobody resumes, a received buffer goes back, and `res` is kept as the
    /// kernel gave it, so the awaiter's destructor can release what it owns (an
    /// accepted connection's fd).
    void settle_abandoned(detail::proactor_op& op, int res, std::uint64_t flags) noexcept {
        give_back_buffer(flags);
        op.res = res;
        unmark(op, find_slot(op.fd));
        finish_settled(op, flags);
    }

    /// The last step of `settle`: resumes the awaiter (unless its frame is going away),
    /// and passes a provided-buffer wake-up on when this receive leaves without a buffer.
    void finish_settled(detail::proactor_op& op, std::uint64_t flags) noexcept {
        op.buffer_woken = false;
        if (op.abandoned)
            op.state = detail::op_state::idle;  // its frame is going away: resume nobody
        else
            core_.complete(op, op.res);
        // A receive woken for a returned buffer may end (cancelled, closed) without taking
        // one: the next waiter must get the wake-up instead (DESIGN invariant 11). With
        // incremental consumption a receive that took a piece usually leaves the buffer
        // in the ring, and the next waiter can receive into the rest of it.
        if (op.uses_buffers && buffers_ && buffers_->available > 0 && (!(flags & IORING_CQE_F_BUFFER) || buffers_->fills))
            buffer_returned();
    }

    /// Takes every available completion off the ring. Each batch is copied out and the
    /// ring advanced before any is handled: handling one may submit, and a full ring's
    /// submit may need to reap again.
    void reap() noexcept {
        struct completion {
            std::uint64_t tag;
            int res;
            std::uint64_t flags;  ///< the CQE's flags; a provided buffer's offset in the high half
            std::uint32_t buffers;  ///< provided buffers it holds: more than one for a bundle
        };
        for (;;) {
            completion batch[64];
            unsigned n = 0;
            unsigned head;
            io_uring_cqe* cqe;
            io_uring_for_each_cqe(&ring_, head, cqe) {
                batch[n++] = {io_uring_cqe_get_data64(cqe), cqe->res, cqe->flags, 1};
                WEFT_TRACE_LINE(
                    "cqe res %s%s%s%s%s", WEFT_TRACE_RES(cqe->res),
                    (cqe->user_data & multishot_bit) && cqe->user_data != LIBURING_UDATA_TIMEOUT ? " (multishot)" : "",
                    cqe->flags & IORING_CQE_F_BUFFER ? " in a provided buffer" : "",
                    cqe->user_data == wake_tag  ? " (the loop's wake-up)"
                    : cqe->user_data == msg_tag ? " (MSG_RING from another loop)"
                                                : "",
                    (cqe->user_data & cancel_bit) && cqe->user_data != LIBURING_UDATA_TIMEOUT ? " (a cancel)" : "");
                if (n == 64) break;
            }
            if (n == 0) break;
            io_uring_cq_advance(&ring_, n);
            reaped_ += n;
            // Where each receive's bytes start, in the order the kernel filled the buffers:
            // for the whole batch before any is handled, since handling one may reap the
            // next batch.
            for (unsigned i = 0; i < n; ++i) {
                completion& c = batch[i];
                if (!(c.flags & IORING_CQE_F_BUFFER) || !buffers_) continue;
                if (buffers_->next && (c.tag & multishot_bit) && c.tag != LIBURING_UDATA_TIMEOUT)
                    c.buffers = buffers_->take_bundle(c.flags, c.res);  // (every multishot recv takes bundles)
                else
                    c.flags |= std::uint64_t{buffers_->taken(static_cast<std::uint16_t>(c.flags >> IORING_CQE_BUFFER_SHIFT),
                                                             c.res, static_cast<std::uint32_t>(c.flags))}
                               << 32;
            }
            for (unsigned i = 0; i < n; ++i) {
                const completion& c = batch[i];
                // The common case first: an operation's own completion (an 8-byte aligned
                // record, no tag bit). The tags below all have a low bit set, or are 0.
                if ((c.tag & tag_bits) == 0 && c.tag != internal_tag) [[likely]] {
                    settle(*reinterpret_cast<detail::proactor_op*>(c.tag), c.res, c.flags);
                } else if (c.tag == wake_tag) {
                    std::uint64_t value;
                    [[maybe_unused]] long r = sys::read(wake_fd_, &value, sizeof value);
                    if (!(c.flags & IORING_CQE_F_MORE) && !quiesced_) arm_wake();  // the kernel ended the multishot
                } else if (c.tag == msg_tag) {
                    // another loop's wake-up: this iteration looks at its inbox anyway
                } else if ((c.tag & 7) == msg_failed_bits && c.tag != LIBURING_UDATA_TIMEOUT) {
                    features_.msg_ring = false;  // this kernel refuses: eventfds from now on
                    reinterpret_cast<uring*>(c.tag & ~std::uint64_t{7})->wake();
                } else if (c.tag == internal_tag || c.tag == LIBURING_UDATA_TIMEOUT) {
                    // a cancel's own completion, or liburing's timeout: nothing waits for it
                } else if (c.tag & cancel_bit) {
                    on_cancel(*reinterpret_cast<detail::proactor_op*>(c.tag & ~cancel_bit), c.res);
                } else if (c.tag & multishot_bit) {
                    auto& m = *reinterpret_cast<multishot*>(c.tag & ~multishot_bit);
                    if (c.buffers > 1) [[unlikely]] {
                        ++bundles_received_;
                        on_bundle(m, c.flags, c.buffers);
                    } else {
                        on_multishot(m, c.res, c.flags);
                    }
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
        WEFT_TRACE_LINE("io_uring_enter: submit, no wait -> %s", WEFT_TRACE_RES(r));
    }

    detail::loop_core& core_;
    io_uring ring_{};
    feature_set features_;
    int wake_fd_ = -1;
    unsigned reaped_ = 0;                                 ///< completions reaped so far (quiesce() watches it move)
    bool quiesced_ = false;                               ///< quiesce() ran: the loop is being torn down
    detail::fd_table<fd_slot> slots_;                     ///< per fd: busy bits and generation
    std::vector<std::unique_ptr<multishot>> multishots_;  ///< multishot accept/recv state, per fd
    std::vector<std::unique_ptr<multishot>> closing_;     ///< detached states the kernel still refers to
    options opts_;
    std::unique_ptr<buffer_ring> buffers_;             ///< provided buffers, registered on first receive()
    spill_store spill_;                                ///< read-ahead copied out of the ring under pressure
    std::size_t read_ahead_buffers_ = 0;               ///< queued receive completions holding a provided buffer
    std::size_t bundles_received_ = 0;                 ///< (see `bundles_received`)
    std::deque<detail::proactor_op*> buffer_waiters_;  ///< receives that found the ring empty
};

static_assert(proactor_backend<uring>);

}  // namespace weft::backend

// SPDX-License-Identifier: MIT
/// @file
/// @brief `channel<T>`: a bounded queue from any loops (or threads) to one receiving task,
/// with awaitable `send` and `receive`, lock-free while it is neither full nor empty.
#pragma once

#include <atomic>
#include <cerrno>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <thread>
#include <type_traits>
#include <utility>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core.hpp"
#include "result.hpp"
#include "stop.hpp"

namespace weft {

/// A bounded multi-producer, single-consumer channel of `T`: tasks on any loops, and
/// plain threads (`try_send`), send; one task at a time receives.
///
/// - **Awaitable both ways.** `co_await ch.send(v)` waits while the channel is full;
///   `co_await ch.receive()` waits while it is empty. Both honour the task's stop token
///   (`operation_canceled`) and work on every backend; on `backend::blocking` they block
///   the task's thread instead of suspending.
/// - **Lock-free on the hot path.** A send claims a slot of a ring with one
///   compare-and-swap and publishes it with one store; a receive takes it with one load
///   and one store (Vyukov's bounded queue). A sleeping receiver on another loop is woken
///   through that loop's inbox (`loop_core::send_remote`): no lock, and a wake-up (an
///   eventfd write, or `IORING_OP_MSG_RING` between io_uring loops) only when it sleeps.
///   Only senders that find the channel full take a mutex, and so does the receive that
///   makes room for them.
/// - **No allocation per message.** Values live in the ring (allocated once, with the
///   channel); waiters live in the awaiters, in the coroutine frames.
/// - **Nothing lost silently.** `send` moves from its argument only when the value is in
///   the channel: on `channel_closed` (or a cancelled send) the caller still has it.
///   After `close()`, the receiver still gets what was sent before, then
///   `channel_closed`. When the receiving task's frame is destroyed while it waits (its
///   loop is torn down), the channel closes itself: later sends fail with
///   `channel_closed`, and what is left in it can still be taken with `try_receive`.
///   Once the receiving loop (the loop of the first `receive`) has started its teardown,
///   sends fail with `channel_closed`, even when that loop is destroyed. Senders already
///   waiting for room in a full channel then stay parked until their own loop is torn
///   down (in a `runtime` all loops are torn down together).
///
/// `T` must be nothrow move-constructible (a value half moved into a slot would wedge the
/// ring). The channel must outlive every task that uses it.
template <class T>
class channel {
    static_assert(std::is_nothrow_move_constructible_v<T>, "channel<T> needs a nothrow move constructor");
    static_assert(std::is_nothrow_destructible_v<T>, "channel<T> needs a nothrow destructor");

    /// A task parked on the channel, woken by whoever takes it out of its place. `deliver`
    /// (the remote item's) runs on the waiter's loop thread when a wake-up arrives.
    struct waiter : detail::remote_op {
        detail::loop_core* loop = nullptr;  ///< where to resume it; unused when `blocks`
        bool blocks = false;                ///< a thread-per-task (or loop-less) waiter: it blocks its thread
        std::atomic<std::uint32_t> wakers{0};  ///< wakers still inside `wake` (they touch this record)
        std::atomic<std::uint32_t> signal{0};  ///< `blocks`: bumped by each wake-up; the futex word
        /// Waits until no waker touches this record any more: one may still be inside
        /// `wake` when the task has already been resumed.
        void settle() const noexcept {
            while (wakers.load(std::memory_order_acquire) != 0) std::this_thread::yield();
        }
        /// A parked task on a loop whose frame is being destroyed: takes a wake-up that
        /// already reached the loop back out of it.
        void forget_wakeup() noexcept {
            settle();
            if (!blocks && loop) {
                loop->collect_inbox();
                loop->unqueue(*this);
            }
        }
    };

    /// Wakes `w` with `res`: delivered on its own loop at once when the waker runs there,
    /// through that loop's inbox otherwise, or by waking its blocked thread.
    static void wake(waiter& w, int res, detail::loop_core* from) noexcept {
        w.wakers.fetch_add(1, std::memory_order_acq_rel);
        w.res = res;
        if (w.blocks) {
            w.signal.fetch_add(1, std::memory_order_release);
            futex(w.signal, FUTEX_WAKE_PRIVATE, 1);
        } else if (from == w.loop) {
            w.deliver(*w.loop, w);  // the waker runs on the waiter's loop thread
        } else {
            (void)w.loop->send_remote(w, from);  // false: the loop is torn down with the waiter
        }
        w.wakers.fetch_sub(1, std::memory_order_release);
    }

    /// A blocking waiter's wait, on its own thread, until `signal` moves past `seen`.
    static void block_until_woken(waiter& w, std::uint32_t seen) noexcept {
        while (w.signal.load(std::memory_order_acquire) == seen) futex(w.signal, FUTEX_WAIT_PRIVATE, seen);
    }

    /// The futex call itself. (`std::atomic::wait` spins and calls `sched_yield` before it
    /// sleeps, which with more threads than cores made a full channel 10 times slower.)
    static void futex(std::atomic<std::uint32_t>& word, int op, std::uint32_t value) noexcept {
        static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
        (void)::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), op, value, nullptr, nullptr, 0);
    }

    /// The stop-token callback of a parked waiter.
    template <class Awaiter>
    struct canceller {
        Awaiter* self;
        void operator()() const noexcept { self->cancel(); }
    };

public:
    /// The awaiter of `send`.
    class [[nodiscard("send does nothing until it is awaited")]] send_awaiter : waiter {
    public:
        /// An awaiter that sends `value` (by reference: moved from only on success) on `ch`.
        send_awaiter(channel & ch, T & value) noexcept : ch_(&ch), value_(&value) {}
        /// Moves an awaiter that has not been awaited yet (`with_timeout` takes it by value).
        send_awaiter(send_awaiter && o) noexcept : waiter(), ch_(o.ch_), value_(o.value_) {}
        send_awaiter(const send_awaiter&) = delete;
        send_awaiter& operator=(const send_awaiter&) = delete;
        /// A frame destroyed while parked takes itself out of the channel (or takes a
        /// wake-up already sent to its loop back).
        ~send_awaiter() {
            stop_.reset();
            if (!parked_) return;
            {
                std::lock_guard lock(ch_->mutex_);
                if (linked_) {
                    ch_->unlink(*this);
                    return;
                }
            }
            this->forget_wakeup();
        }

        /// Always goes to `await_suspend`, which knows the sender's loop.
        bool await_ready() const noexcept { return false; }

        /// Puts the value in the channel, or parks until the receiver makes room.
        template <class P>
        bool await_suspend(std::coroutine_handle<P> h) {
            const detail::task_env env = detail::env_of(h);
            from_ = env.loop;
            channel& ch = *ch_;
            if (ch.refuses_sends()) {
                this->res = detail::negative(errc::channel_closed);
                return false;
            }
            if (ch.waiting_senders_.load(std::memory_order_relaxed) == 0 && ch.try_push(*value_)) {
                ch.notify_receiver(from_);
                return false;
            }
            if (env.token.stop_requested()) {
                this->res = -ECANCELED;
                return false;
            }
            std::uint32_t seen = 0;
            {
                std::lock_guard lock(ch.mutex_);
                // Against the receiver's pop (see pop_and_refill): both sides read-modify-write
                // waiting_senders_, so one of them sees the other's earlier write.
                ch.waiting_senders_.fetch_add(1, std::memory_order_seq_cst);
                if (ch.refuses_sends()) {
                    ch.waiting_senders_.fetch_sub(1, std::memory_order_relaxed);
                    this->res = detail::negative(errc::channel_closed);
                    return false;
                }
                if (ch.try_push(*value_)) {
                    ch.waiting_senders_.fetch_sub(1, std::memory_order_relaxed);
                    ch.notify_receiver(from_);
                    return false;
                }
                this->continuation = h;
                this->loop = from_;
                this->blocks = !from_ || from_->threaded();
                seen = this->signal.load(std::memory_order_relaxed);
                ch.link(*this);
                parked_ = true;
            }
            if (env.token.stop_possible()) stop_.emplace(env.token, canceller<send_awaiter>{this});
            if (this->blocks) {
                block_until_woken(*this, seen);
                return false;
            }
            return true;
        }

        /// Success once the value is in the channel (the argument was moved from);
        /// `channel_closed` or `operation_canceled` with the argument untouched.
        result<void> await_resume() noexcept {
            stop_.reset();
            if (parked_) this->settle();
            parked_ = false;
            return detail::to_result(this->res);
        }

    private:
        friend class channel;
        void cancel() noexcept {
            std::lock_guard lock(ch_->mutex_);
            if (!linked_) return;  // already woken: that result stands
            ch_->unlink(*this);
            wake(*this, -ECANCELED, nullptr);
        }
        channel* ch_;
        T* value_;
        detail::loop_core* from_ = nullptr;
        send_awaiter* prev_ = nullptr;
        send_awaiter* next_ = nullptr;
        bool linked_ = false;
        bool parked_ = false;
        std::optional<detail::stop_callback<canceller<send_awaiter>>> stop_;
    };

    /// The awaiter of `receive`.
    class [[nodiscard("receive does nothing until it is awaited")]] receive_awaiter : waiter {
    public:
        /// An awaiter that receives from `ch`.
        explicit receive_awaiter(channel & ch) noexcept : ch_(&ch) { this->deliver = &arrive; }
        /// Moves an awaiter that has not been awaited yet (`with_timeout` takes it by value).
        receive_awaiter(receive_awaiter && o) noexcept : waiter(), ch_(o.ch_) { this->deliver = &arrive; }
        receive_awaiter(const receive_awaiter&) = delete;
        receive_awaiter& operator=(const receive_awaiter&) = delete;
        /// A frame destroyed while the receiver waits (its loop torn down): the channel
        /// closes, since nobody will receive what is sent next.
        ~receive_awaiter() {
            stop_.reset();
            if (!parked_) return;
            dying_ = true;  // a wake-up that arrives now completes instead of parking again
            waiter* me = this;
            if (!ch_->receiver_.compare_exchange_strong(me, nullptr, std::memory_order_acq_rel)) {
                // A waker took us out first: wait until it is done with this record (it
                // counted itself in before it took us), then take its wake-up back.
                ch_->settle_receiver_wakers();
                this->forget_wakeup();
            }
            ch_->close();
        }

        /// Always goes to `await_suspend`, which knows the receiver's loop.
        bool await_ready() const noexcept { return false; }

        /// Takes a value, or parks until one is published (or the channel closes).
        template <class P>
        bool await_suspend(std::coroutine_handle<P> h) {
            const detail::task_env env = detail::env_of(h);
            from_ = env.loop;
            channel& ch = *ch_;
            if (from_ && !ch.receiver_bound_.load(std::memory_order_relaxed) &&
                !ch.receiver_bound_.exchange(true, std::memory_order_acq_rel)) {  // the first receive
                ch.receiver_gone_owner_ = from_->teardown_flag();
                ch.receiver_gone_.store(ch.receiver_gone_owner_.get(), std::memory_order_release);
            }
            if (ch.head_ready() || ch.closed_.load(std::memory_order_acquire)) return false;
            if (env.token.stop_requested()) {
                this->res = -ECANCELED;
                return false;
            }
            this->continuation = h;
            this->loop = from_;
            this->blocks = !from_ || from_->threaded();
            std::uint32_t seen = this->signal.load(std::memory_order_relaxed);
            if (int parked = park(); parked <= 0) {
                this->res = parked;  // 0: a value (or the close) came first; -EBUSY: another receiver
                return false;
            }
            parked_ = true;
            if (env.token.stop_possible()) stop_.emplace(env.token, canceller<receive_awaiter>{this});
            if (!this->blocks) return true;
            for (;;) {  // thread per task: this thread waits
                block_until_woken(*this, seen);
                if (!spurious()) return false;
                if (cancel_wanted_.load(std::memory_order_acquire)) {
                    this->res = -ECANCELED;
                    return false;
                }
                seen = this->signal.load(std::memory_order_relaxed);
                if (park() <= 0) return false;
            }
        }

        /// The oldest value; `channel_closed` once the channel is closed and empty;
        /// `operation_canceled`; `EBUSY` if another task was already receiving.
        result<T> await_resume() noexcept {
            stop_.reset();
            if (parked_) ch_->settle_receiver_wakers();
            parked_ = false;
            if (this->res < 0) {
                // Cancelled by its loop's teardown (backend::blocking cancels its task
                // threads): nobody will receive here again.
                if (from_ && from_->inbox_closed_for_good()) ch_->close();
                return detail::errno_code(-this->res);
            }
            return ch_->take(from_);
        }

    private:
        friend class channel;

        /// Installs this receiver in the channel, then looks again (against a sender that
        /// published meanwhile, see notify_receiver): 1 parked (a waker will come), 0 not
        /// parked (a value or the close is there), -EBUSY another receiver is parked.
        int park() noexcept {
            channel& ch = *ch_;
            waiter* none = nullptr;
            if (!ch.receiver_.compare_exchange_strong(none, this, std::memory_order_seq_cst)) return -EBUSY;
            // The compare-and-swap above and a sender's read-modify-write of receiver_ are
            // ordered: either the sender sees this receiver parked, or this sees its value.
            if (ch.head_ready() || ch.closed_.load(std::memory_order_seq_cst)) {
                waiter* me = this;
                if (ch.receiver_.compare_exchange_strong(me, nullptr, std::memory_order_acq_rel)) return 0;
                // A sender took us out first and is waking us: wait for that wake-up.
            }
            return 1;
        }

        /// A wake-up with nothing to take: a sender saw this receiver parked and the head
        /// published, but the receiver it saw was an earlier park of this same awaiter,
        /// which took that value and parked again since (the address is the same).
        bool spurious() const noexcept {
            return this->res == 0 && !ch_->head_ready() && !ch_->closed_.load(std::memory_order_acquire);
        }

        /// A wake-up reaching the receiver's loop: resumes it, unless it is spurious, in
        /// which case the receiver parks again (it runs on the receiver's thread, before
        /// any resumption, so the awaiting task never sees it).
        static void arrive(detail::loop_core & core, detail::remote_item & item) noexcept {
            auto& self = static_cast<receive_awaiter&>(static_cast<detail::remote_op&>(item));
            if (self.spurious()) {
                // A stop requested while the spurious wake-up was on its way found this
                // receiver taken and left it to the wake-up: honour it here.
                if (self.cancel_wanted_.load(std::memory_order_acquire))
                    self.res = -ECANCELED;
                else if (!self.dying_ && self.park() == 1)
                    return;
            }
            core.complete(self, self.res);
        }

        void cancel() noexcept {
            cancel_wanted_.store(true, std::memory_order_release);
            ch_->receiver_wakers_.fetch_add(1, std::memory_order_seq_cst);
            waiter* me = this;
            if (ch_->receiver_.compare_exchange_strong(me, nullptr, std::memory_order_acq_rel))
                wake(*this, -ECANCELED, nullptr);
            // else a sender is waking us: that wake-up stands (the value stays queued), or,
            // if it turns out spurious, completes the receive cancelled (arrive).
            ch_->receiver_wakers_.fetch_sub(1, std::memory_order_release);
        }
        channel* ch_;
        detail::loop_core* from_ = nullptr;
        bool parked_ = false;
        bool dying_ = false;
        std::atomic<bool> cancel_wanted_{false};  ///< set by the stop callback (any thread)
        std::optional<detail::stop_callback<canceller<receive_awaiter>>> stop_;
    };

    /// A channel for up to `capacity` values in flight (rounded up to a power of two, at
    /// least 2). Throws `std::bad_alloc`.
    explicit channel(std::size_t capacity) {
        std::size_t n = 2;
        while (n < capacity) n *= 2;
        cells_ = std::make_unique<cell[]>(n);
        for (std::size_t i = 0; i < n; ++i) cells_[i].seq.store(i, std::memory_order_relaxed);
        mask_ = n - 1;
    }
    channel(const channel&) = delete;
    channel& operator=(const channel&) = delete;
    /// Destroys the values still in the channel. No task may still wait on it.
    ~channel() {
        while (try_pop()) {
        }
    }

    /// Sends `value`, waiting while the channel is full. `value` is moved from only on
    /// success. Awaitable from any loop (or thread-per-task task) at the same time as
    /// other senders. Yields success, `errc::channel_closed`, or `operation_canceled`.
    send_awaiter send(T& value) noexcept { return send_awaiter(*this, value); }
    /// Sends an rvalue: `co_await ch.send(std::move(v))` (moved from only on success).
    send_awaiter send(T&& value) noexcept { return send_awaiter(*this, value); }

    /// Receives the oldest value, waiting while the channel is empty. One task receives
    /// at a time (a second one gets `EBUSY`); it may be on any loop, and the receiver's
    /// loop is the one woken by senders. Yields the value, `errc::channel_closed` once the
    /// channel is closed and drained, or `operation_canceled`.
    receive_awaiter receive() noexcept { return receive_awaiter(*this); }

    /// Sends without waiting, from any thread (also one without a loop): success, or
    /// `errc::channel_full` / `errc::channel_closed` with `value` untouched.
    result<void> try_send(T& value) noexcept {
        if (refuses_sends()) return errc::channel_closed;
        if (!try_push(value)) return errc::channel_full;
        notify_receiver(nullptr);
        return {};
    }
    /// `try_send` for an rvalue (moved from only on success).
    result<void> try_send(T&& value) noexcept { return try_send(value); }

    /// Takes the oldest value without waiting: the value, `errc::channel_empty`, or
    /// `errc::channel_closed` once closed and drained. The same single-receiver rule holds
    /// (not while a task of this channel is receiving); after the receiving loop is gone it
    /// recovers what was left in the channel.
    result<T> try_receive() noexcept {
        std::optional<T> v = pop_and_refill(nullptr);
        if (v) return std::move(*v);
        if (closed_.load(std::memory_order_acquire) && drained()) return errc::channel_closed;
        return errc::channel_empty;
    }

    /// Closes the channel, from any thread: later sends fail with `channel_closed`, and
    /// so do senders waiting for room (keeping their values); the receiver gets what is
    /// already in it, then `channel_closed`. Idempotent.
    void close() noexcept {
        closed_.store(true, std::memory_order_seq_cst);
        receiver_wakers_.fetch_add(1, std::memory_order_seq_cst);
        if (waiter* r = receiver_.exchange(nullptr, std::memory_order_acq_rel)) wake(*r, 0, nullptr);
        receiver_wakers_.fetch_sub(1, std::memory_order_release);
        std::lock_guard lock(mutex_);
        while (send_awaiter* w = first_) {
            unlink(*w);
            wake(*w, detail::negative(errc::channel_closed), nullptr);
        }
    }

    /// True once `close()` was called (or the receiver's frame was destroyed while it waited).
    bool is_closed() const noexcept { return closed_.load(std::memory_order_acquire); }
    /// How many values fit.
    std::size_t capacity() const noexcept { return mask_ + 1; }
    /// Values sent and not yet received (a snapshot: other threads may change it).
    std::size_t size() const noexcept {
        const std::size_t head = head_.load(std::memory_order_acquire);
        const std::size_t tail = tail_.load(std::memory_order_acquire);
        return tail >= head ? tail - head : 0;
    }

private:
    struct cell {
        std::atomic<std::size_t> seq{0};  ///< == index: free; == index + 1: holds a value
        alignas(T) unsigned char storage[sizeof(T)];
        T* value() noexcept { return std::launder(reinterpret_cast<T*>(storage)); }
    };

    bool refuses_sends() const noexcept {
        if (closed_.load(std::memory_order_acquire)) return true;
        const std::atomic<bool>* gone = receiver_gone_.load(std::memory_order_acquire);
        return gone && gone->load(std::memory_order_acquire);
    }

    /// Claims the tail slot and moves `v` in; false when full.
    bool try_push(T& v) noexcept {
        std::size_t pos = tail_.load(std::memory_order_relaxed);
        for (;;) {
            cell& c = cells_[pos & mask_];
            const std::size_t seq = c.seq.load(std::memory_order_acquire);
            const auto diff = static_cast<std::ptrdiff_t>(seq - pos);
            if (diff == 0) {
                if (tail_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
                    ::new (static_cast<void*>(c.storage)) T(std::move(v));
                    c.seq.store(pos + 1, std::memory_order_release);
                    return true;
                }
            } else if (diff < 0) {
                return false;  // the slot still holds a value from a lap ago: full
            } else {
                pos = tail_.load(std::memory_order_relaxed);
            }
        }
    }

    /// True when the head slot holds a published value.
    bool head_ready() const noexcept {
        const std::size_t head = head_.load(std::memory_order_acquire);
        return cells_[head & mask_].seq.load(std::memory_order_acquire) == head + 1;
    }
    /// True when nothing is claimed beyond the head (no send half done).
    bool drained() const noexcept {
        return head_.load(std::memory_order_acquire) == tail_.load(std::memory_order_acquire);
    }

    /// Receiver: takes the head value, if published.
    std::optional<T> try_pop() noexcept {
        const std::size_t head = head_.load(std::memory_order_relaxed);
        cell& c = cells_[head & mask_];
        if (c.seq.load(std::memory_order_acquire) != head + 1) return std::nullopt;
        std::optional<T> v(std::move(*c.value()));
        c.value()->~T();
        head_.store(head + 1, std::memory_order_release);
        c.seq.store(head + mask_ + 1, std::memory_order_release);  // free for the next lap
        return v;
    }

    /// Receiver: `try_pop`, then moves the values of senders waiting for room into the
    /// slots that are free now, and wakes them. (Handing over in the receiver, rather
    /// than waking a sender to try again, means a woken sender has always succeeded: no
    /// wake-up is lost to a sender that leaves, nor to one that loses the race for the slot.)
    std::optional<T> pop_and_refill(detail::loop_core* from) noexcept {
        std::optional<T> v = try_pop();
        if (!v) return v;
        // Against a sender's increment-then-retry: either it sees the free slot, or this
        // sees it waiting. A read-modify-write, not a load: the two sides' operations on
        // waiting_senders_ are then ordered (a fence would do on x86, but ThreadSanitizer
        // does not model fences).
        if (waiting_senders_.fetch_add(0, std::memory_order_seq_cst) != 0) {
            std::lock_guard lock(mutex_);
            while (send_awaiter* w = first_) {
                if (!try_push(*w->value_)) break;
                unlink(*w);
                wake(*w, 0, from);
            }
        }
        return v;
    }

    /// The receive's result after a wake-up (or without waiting).
    result<T> take(detail::loop_core* from) noexcept {
        for (;;) {
            if (std::optional<T> v = pop_and_refill(from)) return std::move(*v);
            if (!closed_.load(std::memory_order_acquire))
                return errc::channel_empty;  // cannot happen: woken only when ready
            if (drained()) return errc::channel_closed;
            std::this_thread::yield();  // a send that claimed its slot before the close is finishing
        }
    }

    /// Waits until no thread is inside a wake-up of the receiver (see receiver_wakers_).
    void settle_receiver_wakers() const noexcept {
        while (receiver_wakers_.load(std::memory_order_seq_cst) != 0) std::this_thread::yield();
    }

    /// After a push: wakes the receiver if it sleeps and the head value is published (if
    /// not, the sender of the head value, still publishing, does it).
    void notify_receiver(detail::loop_core* from) noexcept {
        // A read-modify-write of receiver_ (adding 0), against the receiver's park: see
        // receive_awaiter::await_suspend.
        waiter* r = receiver_.fetch_add(0, std::memory_order_seq_cst);
        if (!r || !head_ready()) return;
        receiver_wakers_.fetch_add(1, std::memory_order_seq_cst);
        if (receiver_.compare_exchange_strong(r, nullptr, std::memory_order_acq_rel)) wake(*r, 0, from);
        receiver_wakers_.fetch_sub(1, std::memory_order_release);
    }

    void link(send_awaiter& w) noexcept {
        w.prev_ = last_;
        w.next_ = nullptr;
        if (last_)
            last_->next_ = &w;
        else
            first_ = &w;
        last_ = &w;
        w.linked_ = true;
    }
    void unlink(send_awaiter& w) noexcept {
        if (w.prev_)
            w.prev_->next_ = w.next_;
        else
            first_ = w.next_;
        if (w.next_)
            w.next_->prev_ = w.prev_;
        else
            last_ = w.prev_;
        w.prev_ = w.next_ = nullptr;
        w.linked_ = false;
        waiting_senders_.fetch_sub(1, std::memory_order_relaxed);
    }

    std::unique_ptr<cell[]> cells_;
    std::size_t mask_ = 0;
    alignas(64) std::atomic<std::size_t> tail_{0};  ///< next slot a sender claims
    alignas(64) std::atomic<std::size_t> head_{0};  ///< next slot the receiver takes
    std::atomic<waiter*> receiver_{nullptr};        ///< the parked receiver, taken by whoever wakes it
    /// The teardown flag of the first receive's loop (`loop_core::teardown_flag`): set
    /// once, by the receiver, before any sender reads it.
    std::shared_ptr<const std::atomic<bool>> receiver_gone_owner_;
    std::atomic<const std::atomic<bool>*> receiver_gone_{nullptr};
    std::atomic<bool> receiver_bound_{false};  ///< claimed by the first receive that sets receiver_gone_
    /// Threads between taking the parked receiver out of receiver_ and finishing its
    /// wake-up (counted in before they try): a receiver destroyed after losing that race
    /// waits for them, since they still write its record.
    std::atomic<std::uint32_t> receiver_wakers_{0};
    std::atomic<bool> closed_{false};
    alignas(64) std::atomic<std::size_t> waiting_senders_{0};  ///< senders parked (or about to): read on every receive
    std::mutex mutex_;  ///< guards the list of parked senders: taken only when the channel is full
    send_awaiter* first_ = nullptr;
    send_awaiter* last_ = nullptr;
};

}  // namespace weft

// SPDX-License-Identifier: MIT
/// @file
/// @brief The parts of a loop that do not depend on the backend: the operation
/// record, the ready queue, the timer heap, and the environment a task inherits.
#pragma once

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <new>
#include <thread>
#include <utility>
#include <vector>

#include "stop.hpp"

namespace weft {

/// The clock of every timer and deadline: monotonic, never moved by wall-clock changes.
using clock = std::chrono::steady_clock;

namespace detail {

/// Internal result code of a reactor operation that made progress and has more to do
/// but has held the loop long enough (`send_file`'s bulk transfer): it is retried on
/// the next iteration without waiting for readiness, which is still there (under edge
/// triggering no new edge would come).
inline constexpr int yield_res = -4098;

/// Where an operation is in its life; only the loop thread changes it.
enum class op_state : std::uint8_t {
    idle,    ///< not known to the loop or the backend
    parked,  ///< the backend (or the timer heap) holds a pointer to it
    ready,   ///< completed: `res` is final and it sits in the ready queue
};

/// An operation record. It lives inside an awaiter, so inside a coroutine frame:
/// no allocation per operation, and it is never moved while the loop points at it.
struct op_base {
    std::coroutine_handle<> continuation{};  ///< resumed when the operation completes
    op_base* next = nullptr;                 ///< intrusive links of the ready queue
    op_base* prev = nullptr;
    int res = 0;  ///< >= 0 result, or -errno (io_uring convention)
    op_state state = op_state::idle;
};

/// Intrusive FIFO of completed operations. Doubly linked, so a frame destroyed while
/// its completion is still queued can take itself out in O(1).
class op_queue {
public:
    bool empty() const noexcept { return head_ == nullptr; }
    std::size_t size() const noexcept { return size_; }
    void push(op_base* op) noexcept {
        op->next = nullptr;
        op->prev = tail_;
        if (tail_)
            tail_->next = op;
        else
            head_ = op;
        tail_ = op;
        ++size_;
    }
    op_base* pop() noexcept {
        op_base* op = head_;
        if (op) remove(op);
        return op;
    }
    void remove(op_base* op) noexcept {
        if (op->prev)
            op->prev->next = op->next;
        else
            head_ = op->next;
        if (op->next)
            op->next->prev = op->prev;
        else
            tail_ = op->prev;
        op->next = op->prev = nullptr;
        --size_;
    }

private:
    op_base* head_ = nullptr;
    op_base* tail_ = nullptr;
    std::size_t size_ = 0;
};

/// A timer record: an operation with a deadline and its position in the heap.
struct timer_op : op_base {
    clock::time_point deadline{};
    std::uint64_t seq = 0;  ///< insertion order: ties fire first-in, first-out
    std::size_t heap_index = 0;
};

/// Binary min-heap of timer records keyed by (deadline, seq). Insert, erase and
/// pop-min are O(log n); each record knows its index, so cancellation needs no search.
class timer_heap {
public:
    bool empty() const noexcept { return heap_.empty(); }
    std::size_t size() const noexcept { return heap_.size(); }
    timer_op* top() const noexcept { return heap_.front(); }

    void push(timer_op* t) {
        t->seq = next_seq_++;
        t->heap_index = heap_.size();
        heap_.push_back(t);
        sift_up(t->heap_index);
    }
    void erase(timer_op* t) noexcept {
        std::size_t i = t->heap_index;
        assert(i < heap_.size() && heap_[i] == t);
        std::size_t last = heap_.size() - 1;
        if (i != last) {
            place(i, heap_[last]);
            heap_.pop_back();
            if (i > 0 && less(heap_[i], heap_[(i - 1) / 2]))
                sift_up(i);
            else
                sift_down(i);
        } else {
            heap_.pop_back();
        }
    }
    timer_op* pop() noexcept {
        timer_op* t = heap_.front();
        erase(t);
        return t;
    }

private:
    static bool less(const timer_op* a, const timer_op* b) noexcept {
        return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
    }
    void place(std::size_t i, timer_op* t) noexcept {
        heap_[i] = t;
        t->heap_index = i;
    }
    void sift_up(std::size_t i) noexcept {
        timer_op* t = heap_[i];
        while (i > 0) {
            std::size_t parent = (i - 1) / 2;
            if (!less(t, heap_[parent])) break;
            place(i, heap_[parent]);
            i = parent;
        }
        place(i, t);
    }
    void sift_down(std::size_t i) noexcept {
        timer_op* t = heap_[i];
        std::size_t n = heap_.size();
        for (;;) {
            std::size_t child = 2 * i + 1;
            if (child >= n) break;
            if (child + 1 < n && less(heap_[child + 1], heap_[child])) ++child;
            if (!less(heap_[child], t)) break;
            place(i, heap_[child]);
            i = child;
        }
        place(i, t);
    }
    std::vector<timer_op*> heap_;
    std::uint64_t next_seq_ = 0;
};

/// The entry for `fd` in a table indexed by fd number, growing the table (at least
/// doubling) as needed; null for a negative fd or when memory runs out.
template <class T>
T* fd_entry(std::vector<T>& table, int fd) noexcept {
    if (fd < 0) return nullptr;
    auto i = static_cast<std::size_t>(fd);
    if (i >= table.size()) {
        try {
            table.resize(std::max<std::size_t>(i + 1, table.size() * 2));
        } catch (...) {
            return nullptr;
        }
    }
    return &table[i];
}

/// A table indexed by file descriptor, grown (doubling) on demand: the backends' per-fd
/// state. A lookup is one unsigned comparison (a negative fd wraps above any size) and
/// an index; growing is out of line. (A `std::vector` cost a division by the element
/// size per bounds check and an out-of-line lookup: 30 to 50 instructions per message.)
template <class T>
class fd_table {
public:
    /// Entries (`fd` from 0 to size()-1).
    std::size_t size() const noexcept { return size_; }
    /// The entry at index `i` (< size()).
    T& operator[](std::size_t i) noexcept { return data_[i]; }
    /// The entry at index `i` (< size()).
    const T& operator[](std::size_t i) const noexcept { return data_[i]; }
    /// The entry of `fd`, or null when `fd` is negative or past the end.
    T* find(int fd) noexcept {
        const auto i = static_cast<std::size_t>(static_cast<unsigned>(fd));
        return i < size_ ? data_.get() + i : nullptr;
    }
    /// The entry of `fd`, or null when `fd` is negative or past the end.
    const T* find(int fd) const noexcept {
        const auto i = static_cast<std::size_t>(static_cast<unsigned>(fd));
        return i < size_ ? data_.get() + i : nullptr;
    }
    /// The entry of `fd`, growing the table if needed; null for a negative fd or when
    /// memory runs out.
    T* entry(int fd) noexcept {
        if (T* e = find(fd)) return e;
        return grow(fd);
    }
    /// Iteration over every entry.
    T* begin() noexcept { return data_.get(); }
    /// Iteration over every entry.
    T* end() noexcept { return data_.get() + size_; }
    /// Iteration over every entry.
    const T* begin() const noexcept { return data_.get(); }
    /// Iteration over every entry.
    const T* end() const noexcept { return data_.get() + size_; }

private:
    [[gnu::noinline, gnu::cold]] T* grow(int fd) noexcept {
        if (fd < 0) return nullptr;
        const auto i = static_cast<std::size_t>(fd);
        const std::size_t n = std::max({i + 1, size_ * 2, std::size_t{64}});
        T* bigger = new (std::nothrow) T[n]();
        if (!bigger) return nullptr;
        std::move(data_.get(), data_.get() + size_, bigger);
        data_.reset(bigger);
        size_ = n;
        return bigger + i;
    }
    std::unique_ptr<T[]> data_;
    std::size_t size_ = 0;
};

/// A FIFO on a circular buffer that grows (doubling) and never shrinks: once it has
/// reached its working size, pushing and popping allocate nothing (`std::deque`
/// allocates and frees a block every few dozen elements).
template <class T>
class ring_queue {
public:
    bool empty() const noexcept { return size_ == 0; }
    std::size_t size() const noexcept { return size_; }
    /// Appends `v`; false (and nothing changed) when memory runs out.
    bool push(T v) noexcept {
        if (size_ == slots_.size()) {
            try {
                std::vector<T> bigger(std::max<std::size_t>(8, slots_.size() * 2));
                for (std::size_t i = 0; i < size_; ++i) bigger[i] = std::move(slots_[(head_ + i) & (slots_.size() - 1)]);
                slots_ = std::move(bigger);
            } catch (...) {
                return false;
            }
            head_ = 0;
        }
        slots_[(head_ + size_) & (slots_.size() - 1)] = std::move(v);
        ++size_;
        return true;
    }
    /// Makes room for `n` elements (rounded up to a power of two) while empty, so the
    /// first pushes allocate nothing; throws `std::bad_alloc` like `std::vector`.
    void reserve(std::size_t n) {
        if (size_ != 0 || n <= slots_.size()) return;
        std::size_t cap = 8;
        while (cap < n) cap *= 2;
        slots_.resize(cap);
        head_ = 0;
    }
    T& front() noexcept { return slots_[head_]; }
    /// The `i`-th oldest element (`i < size()`).
    T& operator[](std::size_t i) noexcept { return slots_[(head_ + i) & (slots_.size() - 1)]; }
    T pop() noexcept {
        T v = std::move(slots_[head_]);
        head_ = (head_ + 1) & (slots_.size() - 1);
        --size_;
        return v;
    }
    /// Calls `f` on each element, oldest first, and empties the queue.
    template <class F>
    void drain(F&& f) noexcept {
        while (!empty()) f(pop());
    }

private:
    std::vector<T> slots_;  ///< a power-of-two size
    std::size_t head_ = 0;
    std::size_t size_ = 0;
};

/// A spawned task's frame as its loop tracks it: the loop destroys the frames still
/// linked when it dies.
struct spawn_link {
    spawn_link* prev = nullptr;
    spawn_link* next = nullptr;
    std::coroutine_handle<> frame{};
};

class loop_core;

/// Work handed to a loop from another thread through its inbox (`loop_core::send_remote`):
/// a spawned frame, a task moving to this loop, or a wake-up of an operation parked on
/// this loop. It lives in whatever it delivers (a promise, an awaiter), so handing it
/// over allocates nothing. `deliver` runs on the receiving loop's thread.
struct remote_item {
    remote_item* next = nullptr;                                   ///< the inbox's link
    void (*deliver)(loop_core&, remote_item&) noexcept = nullptr;  ///< called once, on the loop
};

/// An operation completed from another thread: the sender stores `res`, then hands the
/// record to the operation's loop, which completes it on its own thread.
struct remote_op : op_base, remote_item {
    remote_op() noexcept { deliver = &arrive; }
    static void arrive(loop_core& core, remote_item& item) noexcept;
};

/// A hand-over to another loop that waits until the current resumption has returned
/// (`loop_core::send_later`): a task moving away (`switch_to`) or going home at its end
/// must be fully suspended before the other loop can resume it, and while it is still
/// being resumed here, the code that resumed it (an awaiter starting a child inline)
/// may still be writing its frame.
struct deferred_send {
    remote_item* item = nullptr;    ///< what to send
    loop_core* to = nullptr;        ///< where
    deferred_send* next = nullptr;  ///< links of the running loop's list
    /// Called on the sending loop's thread if `to` refuses (it is torn down); null: nothing to do.
    void (*refused)(deferred_send&, loop_core& here) noexcept = nullptr;
    void* owner = nullptr;  ///< for `refused`
};

/// The way back of a task that moved to another loop (`switch_to`): when it ends, its
/// awaiter is resumed on `home` through this record.
struct homeward : remote_op {
    loop_core* home = nullptr;  ///< the loop the task started on
    deferred_send send;         ///< this record's hand-over to `home`
    bool sent = false;          ///< handed to home's inbox (or about to be)
    bool delivered = false;     ///< home took it out of its inbox
    homeward() noexcept { deliver = &arrive_home; }
    static void arrive_home(loop_core& core, remote_item& item) noexcept;
};

/// An operation a worker thread runs for a readiness loop (blocking file IO, which
/// epoll, poll and select cannot wait for: a regular file is always "ready"). It lives
/// in the awaiter, so submitting one allocates nothing; its `op_base` links it into
/// the pool's queues while the pool owns it, and into the ready queue afterwards.
struct pool_job : op_base {
    /// Where the job is; changed only under the pool's mutex.
    enum class phase : std::uint8_t { none, queued, running, done };
    int (*run)(pool_job&) noexcept = nullptr;  ///< the blocking call: a result >= 0 or -errno
    phase where = phase::none;
};

/// The loop's worker threads for blocking calls (see `loop_core::set_worker_threads`).
/// Threads start on demand, up to the limit, and stay until the loop dies. A finished
/// job goes to a done list and wakes the loop, which completes it on its own thread, so
/// the awaiting coroutine never runs on a worker.
class worker_pool {
public:
    worker_pool(loop_core& core, unsigned max_threads) : core_(core), max_threads_(max_threads ? max_threads : 1) {}
    worker_pool(const worker_pool&) = delete;
    worker_pool& operator=(const worker_pool&) = delete;
    ~worker_pool() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        work_.notify_all();
        for (auto& t : threads_) t.join();
    }

    /// Queues `job` (its `run` set); 0, or `-EAGAIN` when no thread could be started.
    int submit(pool_job& job) noexcept {
        std::unique_lock lock(mutex_);
        if (idle_ == 0 && threads_.size() < max_threads_) {
            try {
                threads_.emplace_back([this] { work(); });
            } catch (...) {
                if (threads_.empty()) return -EAGAIN;  // nobody would ever run it
            }
        }
        job.where = pool_job::phase::queued;
        queued_.push(&job);
        lock.unlock();
        work_.notify_one();
        return 0;
    }

    /// Cancels `job` if no worker has started it: it completes with `-ECANCELED` (true).
    /// A running job cannot be stopped; it completes with its real result (false).
    bool cancel(pool_job& job) noexcept;

    /// `job`'s frame is being destroyed: unlinks it, waiting for a worker that runs it
    /// to finish first (its buffer lives in that frame).
    void forget(pool_job& job) noexcept {
        std::unique_lock lock(mutex_);
        if (job.where == pool_job::phase::queued) queued_.remove(&job);
        finished_.wait(lock, [&] { return job.where != pool_job::phase::running; });
        if (job.where == pool_job::phase::done) done_.remove(&job);
        job.where = pool_job::phase::none;
    }

    /// Loop thread: completes every finished job into the ready queue.
    void deliver() noexcept;

    /// Threads started so far (diagnostics and tests).
    std::size_t threads() const noexcept {
        std::lock_guard lock(mutex_);
        return threads_.size();
    }

private:
    void work() noexcept;

    loop_core& core_;
    const unsigned max_threads_;
    mutable std::mutex mutex_;
    std::condition_variable work_;      ///< a job was queued, or the pool is stopping
    std::condition_variable finished_;  ///< a running job finished
    op_queue queued_;
    op_queue done_;
    std::vector<std::thread> threads_;
    unsigned idle_ = 0;
    bool stopping_ = false;
};

/// Everything a loop owns that does not depend on its backend. Backends and
/// awaiters hold a `loop_core&`; `loop<Backend>` derives from it.
class loop_core {
public:
    /// Synchronous completions a resumed coroutine may make before it must yield to
    /// the loop (tokio's cooperative budget): one firehose socket cannot starve others.
    static constexpr int sync_budget = 64;

    loop_core() : owner_(std::this_thread::get_id()) {}
    loop_core(const loop_core&) = delete;
    loop_core& operator=(const loop_core&) = delete;

    /// Completes `op` with `res` and queues its continuation; resumed by the run step only.
    void complete(op_base& op, int res) noexcept {
        op.res = res;
        op.state = op_state::ready;
        ready_.push(&op);
    }

    /// Takes one unit of the cooperative budget; false means "yield to the loop now".
    bool take_budget() noexcept {
        if (budget_ <= 0) return false;
        --budget_;
        return true;
    }

    /// Takes a completed `op` out of the ready queue without resuming it (its frame is
    /// being destroyed); does nothing for an operation that is not queued.
    void unqueue(op_base& op) noexcept {
        if (op.state != op_state::ready) return;
        ready_.remove(&op);
        op.state = op_state::idle;
    }

    /// Starts `t`, which must hold a deadline. Marked parked only once it is in the heap,
    /// so a failed insertion (bad_alloc) leaves nothing to unlink.
    void add_timer(timer_op& t) {
        timers_.push(&t);
        t.state = op_state::parked;
    }
    /// Removes a parked timer without completing it (its frame is being destroyed).
    void forget_timer(timer_op& t) noexcept {
        assert(t.state == op_state::parked);
        timers_.erase(&t);
        t.state = op_state::idle;
    }
    /// Cancels a parked timer: it completes with `-ECANCELED`. A timer that already
    /// fired is left alone and reports success (the deadline did pass).
    void cancel_timer(timer_op& t) noexcept {
        assert_loop_thread();
        if (t.state != op_state::parked) return;
        timers_.erase(&t);
        complete(t, -ECANCELED);
    }

    /// The time cached at the start of this loop iteration.
    clock::time_point now() const noexcept { return now_; }

    /// Number of pending timers (for tests and diagnostics).
    std::size_t pending_timers() const noexcept { return timers_.size(); }

    /// Records a newly spawned task's frame.
    void link_spawned(spawn_link& l) noexcept {
        l.prev = nullptr;
        l.next = spawned_;
        if (spawned_) spawned_->prev = &l;
        spawned_ = &l;
        ++live_;
    }
    /// Forgets a spawned task's frame (it ended, or the loop is destroying it).
    void unlink_spawned(spawn_link& l) noexcept {
        if (l.prev)
            l.prev->next = l.next;
        else
            spawned_ = l.next;
        if (l.next) l.next->prev = l.prev;
        l.prev = l.next = nullptr;
        --live_;
    }
    /// Number of spawned tasks that have not finished yet.
    std::size_t live_tasks() const noexcept { return live_; }

    /// Replaces what happens to an exception escaping a spawned task (default: print
    /// it to stderr and `std::terminate()`).
    void set_exception_handler(std::function<void(std::exception_ptr)> handler) { on_exception_ = std::move(handler); }
    /// Passes an exception that escaped a spawned task to the handler (which may throw).
    void report_exception(std::exception_ptr e) { on_exception_(std::move(e)); }

    /// Makes the current resumption throw `e` once it returns (a spawned task's
    /// exception handler threw: its frame is gone, the exception goes to `run()`'s caller).
    void rethrow_after_resume(std::exception_ptr e) noexcept { escaped_ = std::move(e); }

    /// Debug check of DESIGN invariant 9: loop state is touched from its own thread only.
    void assert_loop_thread() const noexcept { assert(threaded_ || std::this_thread::get_id() == owner_); }

    /// True for a thread-per-task loop (`backend::blocking`): timers sleep and
    /// combinators start their children on threads instead of going through the loop.
    bool threaded() const noexcept { return threaded_; }

    /// Queues `fn` to run on the loop thread; safe from any thread.
    void post(std::function<void()> fn) {
        {
            std::lock_guard lock(post_mutex_);
            posted_.push_back(std::move(fn));
        }
        wake_from_any_thread();
    }

    /// Makes the next iteration look at posted work and finished worker jobs, waking a
    /// sleeping loop; safe from any thread.
    void wake_from_any_thread() noexcept {
        if (!wake_pending_.exchange(true, std::memory_order_acq_rel)) wake_backend();
    }

    /// Hands `item` to this loop from any thread: its `deliver` runs on this loop's
    /// thread during the next iteration. Lock-free (one compare-and-swap onto the inbox,
    /// and a wake-up only when none is pending yet). `from` is the sender's own loop when
    /// the sender runs on one (io_uring loops then wake each other with `MSG_RING`).
    /// False, with nothing done, once the loop has closed its inbox for good (it is being
    /// torn down): the caller still owns `item`.
    bool send_remote(remote_item& item, loop_core* from = nullptr) noexcept {
        // The count keeps close_inbox() from finishing while a sender is between its check
        // and its push; the high bit is "closed".
        if (inbox_users_.fetch_add(1, std::memory_order_acquire) & inbox_closed) {
            inbox_users_.fetch_sub(1, std::memory_order_release);
            return false;
        }
        remote_item* head = inbox_.load(std::memory_order_relaxed);
        do item.next = head;
        while (!inbox_.compare_exchange_weak(head, &item, std::memory_order_acq_rel, std::memory_order_relaxed));
        if (!wake_pending_.exchange(true, std::memory_order_acq_rel)) wake_backend_from(from);
        inbox_users_.fetch_sub(1, std::memory_order_release);
        return true;
    }

    /// Loop thread: delivers everything in the inbox, oldest first. (Also called by an
    /// awaiter whose frame is being destroyed while a wake-up for it may sit in the inbox:
    /// it then finds itself in the ready queue and can take itself out.)
    void collect_inbox() noexcept {
        // acq_rel on both sides: the loop's clearing of wake_pending_ (before this) then
        // happens-before a sender's test of it (after its push), so a sender whose item
        // this exchange missed finds the flag clear and wakes the loop again.
        remote_item* list = inbox_.exchange(nullptr, std::memory_order_acq_rel);
        remote_item* fifo = nullptr;  // the inbox is a stack: reverse it
        while (list) {
            remote_item* next = list->next;
            list->next = fifo;
            fifo = list;
            list = next;
        }
        while (fifo) {
            remote_item* next = fifo->next;
            fifo->deliver(*this, *fifo);
            fifo = next;
        }
    }

    /// Sends `d` once the current resumption has returned, when the frame that owns it is
    /// fully suspended (see `deferred_send`). Loop thread.
    void send_later(deferred_send& d) noexcept {
        d.next = hops_;
        hops_ = &d;
    }
    /// Takes `d` back out of the list of `send_later` (its frame is being destroyed first).
    void cancel_send_later(deferred_send& d) noexcept {
        for (deferred_send** p = &hops_; *p; p = &(*p)->next)
            if (*p == &d) {
                *p = d.next;
                return;
            }
    }

    /// True once the loop has closed its inbox (it is being torn down); safe from any thread.
    bool inbox_closed_for_good() const noexcept {
        return (inbox_users_.load(std::memory_order_acquire) & inbox_closed) != 0;
    }

    /// A flag that turns true when this loop starts its teardown (`close_inbox`), owned
    /// jointly: it outlives the loop, so whoever keeps it (a channel whose receiver runs
    /// here) can tell a gone loop from a live one without touching the loop.
    std::shared_ptr<const std::atomic<bool>> teardown_flag() const noexcept { return torn_down_; }

    /// True when `other` is a `loop<Backend>` of the same `Backend` as this one.
    bool is_same_loop_type(const loop_core& other) const noexcept { return loop_type_ == other.loop_type_; }

    /// Whether a cross-loop wake-up from another io_uring loop may use `IORING_OP_MSG_RING`
    /// (the default when the kernel has it) instead of this loop's eventfd.
    void set_msg_ring_wakeups(bool on) noexcept { msg_ring_wakeups_ = on; }
    /// See `set_msg_ring_wakeups`.
    bool msg_ring_wakeups() const noexcept { return msg_ring_wakeups_; }

    /// Sets how many worker threads may run blocking calls (file IO on the readiness
    /// backends) for this loop; default 4. Takes effect when the first such call is
    /// made; later calls to this function change nothing.
    void set_worker_threads(unsigned n) noexcept {
        if (!pool_) worker_threads_ = n ? n : 1;
    }
    /// The loop's worker pool, started on first use (throws `std::bad_alloc`).
    worker_pool& workers() {
        if (!pool_) pool_ = std::make_unique<worker_pool>(*this, worker_threads_);
        return *pool_;
    }
    /// Whether file operations on a readiness backend first try their non-blocking
    /// form on the loop thread (a read from the page cache with `RWF_NOWAIT`, an open
    /// from the lookup caches, a stat) before they go to a worker; default on. Off, every
    /// file operation is a worker's (for a file system whose attribute calls may block,
    /// or to measure the pool).
    void set_inline_file_attempts(bool on) noexcept { inline_file_attempts_ = on; }
    /// See `set_inline_file_attempts`.
    bool inline_file_attempts() const noexcept { return inline_file_attempts_; }
    /// Worker threads started so far (0 until the first blocking call).
    std::size_t worker_threads_started() const noexcept { return pool_ ? pool_->threads() : 0; }

protected:
    ~loop_core() = default;

    /// Called by `loop<Backend>`'s constructor with an address unique to `Backend`.
    void set_loop_type(const void* key) noexcept { loop_type_ = key; }

    /// Called by a thread-per-task loop's constructor (see `threaded()`).
    void set_threaded() noexcept { threaded_ = true; }

    /// Interrupts the backend's wait; must be thread-safe and async-signal-safe.
    virtual void wake_backend() noexcept = 0;
    /// Interrupts the backend's wait on behalf of `from`, the sender's own loop (null for
    /// a thread without one); io_uring overrides it to wake ring to ring.
    virtual void wake_backend_from(loop_core* /*from*/) noexcept { wake_backend(); }

    /// Loop teardown, before the frames go: refuses further `send_remote` calls, waits for
    /// senders already inside one, and delivers what they left (spawned frames are linked,
    /// so destroy_spawned() destroys them; wake-ups reach the ready queue).
    void close_inbox() noexcept {
        torn_down_->store(true, std::memory_order_release);
        inbox_users_.fetch_or(inbox_closed, std::memory_order_acq_rel);
        while ((inbox_users_.load(std::memory_order_acquire) & ~inbox_closed) != 0) std::this_thread::yield();
        collect_inbox();
    }

    /// Moves every expired timer to the ready queue.
    void expire_timers() noexcept {
        while (!timers_.empty() && timers_.top()->deadline <= now_) complete(*timers_.pop(), 0);
    }

    /// Runs what other threads posted. Clears the wake flag first, so a post that
    /// races with this call wakes the next wait instead of being stranded. If a function
    /// throws, the ones after it are put back (they run on the next iteration).
    bool run_posted() {
        if (!wake_pending_.load(std::memory_order_acquire)) return false;
        wake_pending_.store(false, std::memory_order_release);
        collect_inbox();
        if (pool_) pool_->deliver();
        std::vector<std::function<void()>> batch;
        {
            std::lock_guard lock(post_mutex_);
            batch.swap(posted_);
        }
        std::size_t i = 0;
        try {
            for (; i < batch.size(); ++i) batch[i]();
        } catch (...) {
            std::lock_guard lock(post_mutex_);
            posted_.insert(posted_.begin(), std::make_move_iterator(batch.begin() + static_cast<long>(i) + 1),
                           std::make_move_iterator(batch.end()));
            wake_pending_.store(true, std::memory_order_release);
            throw;
        }
        return !batch.empty();
    }

    /// How long the backend may sleep: 0 when work is queued, else until the next timer
    /// (`clock::duration::max()` = no timer, sleep until woken).
    clock::duration wait_budget() const noexcept {
        if (!ready_.empty() || wake_pending_.load(std::memory_order_acquire)) return clock::duration::zero();
        if (timers_.empty()) return clock::duration::max();
        auto deadline = timers_.top()->deadline;
        // Compare first: subtracting a deadline far in the past (time_point::min()) overflows.
        return deadline <= now_ ? clock::duration::zero() : deadline - now_;
    }

    /// Resumes everything completed so far. Items queued while doing so wait for the
    /// next iteration, so a coroutine that keeps re-queuing itself cannot starve IO.
    /// Each item leaves the queue just before it is resumed, so an exception thrown
    /// by one resumption leaves the others queued, not lost.
    std::size_t resume_ready() {
        std::size_t n = ready_.size();
        for (std::size_t i = 0; i < n; ++i) {
            op_base* op = ready_.pop();
            op->state = op_state::idle;
            budget_ = sync_budget;
            op->continuation.resume();
            if (hops_) [[unlikely]]
                send_hops();
            if (escaped_) [[unlikely]]
                std::rethrow_exception(std::exchange(escaped_, nullptr));
        }
        return n;
    }

    /// Sends what `send_later` kept, if anything.
    void send_deferred() noexcept {
        if (hops_) [[unlikely]]
            send_hops();
    }

    /// Sends what `send_later` kept (tasks moving away, tasks going home).
    void send_hops() noexcept {
        while (deferred_send* d = hops_) {
            hops_ = d->next;
            if (!d->to->send_remote(*d->item, this) && d->refused) d->refused(*d, *this);
        }
    }

    /// Forgets every queued completion without resuming it (loop teardown).
    void drop_ready() noexcept {
        while (op_base* op = ready_.pop()) op->state = op_state::idle;
    }

    /// Joins the worker threads (loop teardown, after the frames: no job is left, and
    /// none may wake a backend that is being destroyed).
    void stop_workers() noexcept { pool_.reset(); }

    /// Drops posted work without running it (loop teardown).
    void drop_posted() noexcept {
        std::lock_guard lock(post_mutex_);
        posted_.clear();
    }

    /// Destroys the frames of spawned tasks that are still suspended (loop teardown).
    void destroy_spawned() noexcept {
        while (spawned_) {
            spawn_link* l = spawned_;
            unlink_spawned(*l);
            l->frame.destroy();
        }
    }

    void update_now() noexcept { now_ = clock::now(); }
    bool has_ready() const noexcept { return !ready_.empty(); }

private:
    op_queue ready_;
    timer_heap timers_;
    clock::time_point now_ = clock::now();
    int budget_ = sync_budget;
    std::thread::id owner_;
    std::mutex post_mutex_;
    std::vector<std::function<void()>> posted_;
    std::atomic<bool> wake_pending_{false};
    const void* loop_type_ = nullptr;
    deferred_send* hops_ = nullptr;  ///< hand-overs to send once the current resumption returns
    static constexpr std::uint32_t inbox_closed = 0x8000'0000u;
    std::atomic<remote_item*> inbox_{nullptr};   ///< pushed by any thread, taken whole by the loop
    std::atomic<std::uint32_t> inbox_users_{0};  ///< senders inside send_remote, | inbox_closed
    bool msg_ring_wakeups_ = true;
    std::shared_ptr<std::atomic<bool>> torn_down_ = std::make_shared<std::atomic<bool>>(false);
    std::exception_ptr escaped_;
    spawn_link* spawned_ = nullptr;
    std::size_t live_ = 0;
    bool threaded_ = false;
    std::function<void(std::exception_ptr)> on_exception_ = &default_exception_handler;
    unsigned worker_threads_ = 4;
    bool inline_file_attempts_ = true;
    std::unique_ptr<worker_pool> pool_;  ///< last: its threads end before the rest goes

    static void default_exception_handler(std::exception_ptr e) noexcept {
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& ex) {
            std::fprintf(stderr, "weft: exception escaped a spawned task: %s\n", ex.what());
        } catch (...) {
            std::fprintf(stderr, "weft: non-standard exception escaped a spawned task\n");
        }
        std::terminate();
    }
};

inline bool worker_pool::cancel(pool_job& job) noexcept {
    std::unique_lock lock(mutex_);
    if (job.where != pool_job::phase::queued) return false;
    queued_.remove(&job);
    job.where = pool_job::phase::none;
    lock.unlock();
    core_.complete(job, -ECANCELED);
    return true;
}

inline void remote_op::arrive(loop_core& core, remote_item& item) noexcept {
    auto& op = static_cast<remote_op&>(item);
    core.complete(op, op.res);
}

inline void homeward::arrive_home(loop_core& core, remote_item& item) noexcept {
    auto& h = static_cast<homeward&>(static_cast<remote_op&>(item));
    h.delivered = true;
    core.complete(h, h.res);
}

inline void worker_pool::deliver() noexcept {
    std::lock_guard lock(mutex_);
    while (op_base* op = done_.pop()) {
        static_cast<pool_job*>(op)->where = pool_job::phase::none;
        core_.complete(*op, op->res);
    }
}

inline void worker_pool::work() noexcept {
    std::unique_lock lock(mutex_);
    for (;;) {
        ++idle_;
        work_.wait(lock, [&] { return stopping_ || !queued_.empty(); });
        --idle_;
        if (stopping_) return;
        auto* job = static_cast<pool_job*>(queued_.pop());
        job->where = pool_job::phase::running;
        lock.unlock();
        int res = job->run(*job);
        lock.lock();
        job->res = res;
        job->where = pool_job::phase::done;
        done_.push(job);
        finished_.notify_all();
        core_.wake_from_any_thread();
    }
}

/// What a task inherits from whoever awaits it: the loop that runs it and the stop
/// token that cancels its operations (with_timeout, when_any and spawn set it).
struct task_env {
    loop_core* loop = nullptr;
    stop_token token;  ///< weft's own (`stop.hpp`): a plain pointer, nothing allocated
};

/// True for promise types that carry a `task_env` (weft's own tasks).
template <class P>
concept has_env = requires(P& p) {
    { p.env } -> std::convertible_to<task_env&>;
};

/// The environment of the coroutine behind `h`, or an empty one for foreign coroutines.
template <class P>
task_env env_of(std::coroutine_handle<P> h) noexcept {
    if constexpr (has_env<P>)
        return h.promise().env;
    else
        return {};
}

}  // namespace detail
}  // namespace weft

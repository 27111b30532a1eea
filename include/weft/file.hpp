// SPDX-License-Identifier: MIT
/// @file
/// @brief `file<B>`: asynchronous file IO on every backend, and `send_file`.
///
/// A regular file is always "ready" to epoll, poll and select (and has no `O_ASYNC`
/// for sigio): a read that misses the page cache blocks the thread that makes it, and
/// a readiness loop cannot wait for it. So each model gets what it can do:
/// - `uring`: the kernel does it (`IORING_OP_OPENAT`, `READ`, `WRITE`, `READV`,
///   `WRITEV`, `FSYNC`, `STATX`, `CLOSE`, `SPLICE`), no thread of ours;
/// - the readiness backends: the call runs on the loop's worker pool (a few threads,
///   started on first use, see `loop_core::set_worker_threads`) and completes through
///   the loop's cross-thread wake-up; the awaiter is the job, so nothing is allocated
///   per operation;
/// - `blocking`: the call itself, on the task's thread.
///
/// Lifetime: an operation holds its file open. Closing (or destroying) a `file` while
/// operations on it are in flight lets them finish (file IO always finishes; there is
/// no peer to wait for), and the descriptor is closed when the last one ends: its
/// number is never released while anything may still act on it (DESIGN invariant 10).
///
/// Cancellation: a job no worker has started, or an SQE the kernel can still cancel,
/// completes with `operation_canceled`; a read already running on a worker completes
/// with its real result (the data is delivered, into a buffer that stayed valid).
#pragma once

#include <array>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <utility>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "backend/concepts.hpp"
#include "core.hpp"
#include "io.hpp"
#include "loop.hpp"
#include "result.hpp"

namespace weft {

/// What `file<B>::stat()` reports (from `statx(2)`).
struct file_info {
    std::uint64_t size = 0;      ///< bytes
    mode_t mode = 0;             ///< type and permission bits (`S_IFREG`, 0644, ...)
    std::int64_t mtime_sec = 0;  ///< last modification, seconds since the epoch
    std::uint32_t mtime_nsec = 0;  ///< and nanoseconds
    /// A regular file.
    bool is_regular() const noexcept { return S_ISREG(mode); }
    /// A directory.
    bool is_directory() const noexcept { return S_ISDIR(mode); }
};

template <class Backend>
class file;

namespace detail {

/// A file's descriptor and the operations that hold it open. Shared by the `file`
/// object and its in-flight operations; the last of them to let go closes the fd.
/// Counted atomically: on `backend::blocking`, tasks on several threads share a file.
struct file_state {
    int fd = -1;
    std::atomic<unsigned> refs{1};  ///< the file object's reference plus one per operation
};

/// Drops one reference; the last one closes the descriptor (synchronously) and frees
/// the state. The result of that `close(2)` (0 or -errno).
inline int release_file(file_state* s) noexcept {
    if (!s || s->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return 0;
    int r = s->fd >= 0 ? sys::close(s->fd) : 0;
    delete s;
    return r;
}

/// An operation's reference on its file: taken when the operation is made, dropped
/// when its awaiter dies (after its completion: the awaiter outlives the kernel's use).
class file_ref {
public:
    file_ref() = default;
    explicit file_ref(file_state* s) noexcept : s_(s) {
        if (s_) s_->refs.fetch_add(1, std::memory_order_relaxed);
    }
    file_ref(file_ref&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
    file_ref& operator=(file_ref&&) = delete;
    ~file_ref() { release_file(s_); }
    int fd() const noexcept { return s_ ? s_->fd : -1; }

private:
    file_state* s_ = nullptr;
};

/// `r` for a syscall result: the value, or -errno.
inline int sys_result(long r) noexcept { return r < 0 ? -errno : static_cast<int>(r); }

/// The largest count one call moves (its result must fit in an `int`).
inline std::size_t clamp_count(std::size_t n) noexcept { return n > 0x7ffff000u ? 0x7ffff000u : n; }

/// What every file operation shares: no fd of its own for the backend's per-socket
/// bookkeeping (`fd = -1`: several reads of one file may be in flight at once), a
/// direction for the op contract, and no edge-trigger hint.
struct file_op_base {
    int fd = -1;
    static constexpr interest dir = interest::read;
    bool drained(int) const noexcept { return false; }
};

/// A read that never waits for the disk (`preadv2` with `RWF_NOWAIT`): the bytes, or
/// `-EAGAIN` when they are not all in the page cache (the caller then hands the read to
/// a worker; positional reads can be made again). File systems without the flag
/// (`EOPNOTSUPP`) also get `-EAGAIN`. `RWF_NOWAIT` may stop where the cached part ends,
/// so a short count is passed on only once a further probe finds the end of the file:
/// `read_at`'s promise, "fewer bytes only at the end", holds on this path too.
inline int nowait_read(int fd, const iovec* iov, unsigned count, std::uint64_t offset) noexcept {
    auto nowait = [fd](const iovec* v, unsigned n, std::uint64_t off) noexcept -> long {
        long r = ::preadv2(fd, v, static_cast<int>(n), static_cast<off_t>(off), RWF_NOWAIT);
        if (r >= 0) return r;
        return errno == EINTR || errno == EOPNOTSUPP || errno == EAGAIN ? -EAGAIN : -errno;
    };
    long r = nowait(iov, count, offset);
    if (r < 0) return static_cast<int>(r);
    std::size_t want = 0;
    for (unsigned i = 0; i < count; ++i) want += iov[i].iov_len;
    if (static_cast<std::size_t>(r) == want || r == 0) return static_cast<int>(r);
    if (count != 1) return -EAGAIN;  // vectored and short: the worker reads it whole
    // One buffer, short: continue where it stopped until the end of the file or a miss.
    std::size_t got = static_cast<std::size_t>(r);
    for (int probes = 0; probes < 4 && got < want; ++probes) {
        iovec rest{static_cast<char*>(iov->iov_base) + got, want - got};
        long more = nowait(&rest, 1, offset + got);
        if (more < 0) return static_cast<int>(more);
        if (more == 0) return static_cast<int>(got);  // the end of the file
        got += static_cast<std::size_t>(more);
    }
    return got == want ? static_cast<int>(got) : -EAGAIN;
}

/// `pread(2)` / `pwrite(2)` of one buffer at an offset.
template <bool Write>
struct positional_op : file_op_base {
    int file_fd;
    std::conditional_t<Write, std::span<const std::byte>, std::span<std::byte>> buf;
    std::uint64_t offset;
    int run() noexcept {
        for (;;) {
            long r = Write ? ::pwrite(file_fd, buf.data(), clamp_count(buf.size()), static_cast<off_t>(offset))
                           : ::pread(file_fd, const_cast<std::byte*>(buf.data()), clamp_count(buf.size()),
                                     static_cast<off_t>(offset));
            if (r < 0 && errno == EINTR) continue;
            return sys_result(r);
        }
    }
    /// Reactors first try a read from the page cache without blocking
    /// (`preadv2(RWF_NOWAIT)`): `-EAGAIN` when it would have to wait for the disk (or
    /// the file system cannot say), and then a worker makes the call.
    int try_inline() noexcept {
        if constexpr (Write) {
            return -EAGAIN;  // buffered writes may wait for memory or journal: a worker's
        } else {
            iovec one{buf.data(), clamp_count(buf.size())};
            return nowait_read(file_fd, &one, 1, offset);
        }
    }
    template <class P>
    void prepare(P& p) noexcept {
        if constexpr (Write)
            p.write_at(file_fd, buf.data(), buf.size(), offset);
        else
            p.read_at(file_fd, const_cast<std::byte*>(buf.data()), buf.size(), offset);
    }
    result<std::size_t> make(int res) const noexcept { return to_result<std::size_t>(res); }
};

/// `preadv(2)` / `pwritev(2)` at an offset (at most `IOV_MAX` entries per call: a
/// longer array is a short transfer, as with the syscall).
template <bool Write>
struct positional_vector_op : file_op_base {
    int file_fd;
    std::span<const iovec> iov;
    std::uint64_t offset;
    unsigned count() const noexcept { return static_cast<unsigned>(iov.size() < IOV_MAX ? iov.size() : IOV_MAX); }
    int run() noexcept {
        for (;;) {
            long r = Write ? ::pwritev(file_fd, iov.data(), static_cast<int>(count()), static_cast<off_t>(offset))
                           : ::preadv(file_fd, iov.data(), static_cast<int>(count()), static_cast<off_t>(offset));
            if (r < 0 && errno == EINTR) continue;
            return sys_result(r);
        }
    }
    /// See `positional_op::try_inline`.
    int try_inline() noexcept {
        if constexpr (Write)
            return -EAGAIN;
        else
            return nowait_read(file_fd, iov.data(), count(), offset);
    }
    template <class P>
    void prepare(P& p) noexcept {
        if constexpr (Write)
            p.writev_at(file_fd, iov.data(), count(), offset);
        else
            p.readv_at(file_fd, iov.data(), count(), offset);
    }
    result<std::size_t> make(int res) const noexcept { return to_result<std::size_t>(res); }
};

/// `fsync(2)` or `fdatasync(2)`.
struct sync_op : file_op_base {
    int file_fd;
    bool data_only;
    int run() noexcept { return sys_result(data_only ? ::fdatasync(file_fd) : ::fsync(file_fd)); }
    template <class P>
    void prepare(P& p) noexcept {
        p.fsync(file_fd, data_only);
    }
    result<void> make(int res) const noexcept { return to_result(res); }
};

/// `statx(2)` of an open file (`AT_EMPTY_PATH`).
struct stat_op : file_op_base {
    int file_fd;
    struct statx out {};
    int run() noexcept { return sys_result(::statx(file_fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &out)); }
    /// The attributes of an open file are in memory (a network file system is not asked
    /// again: `AT_STATX_DONT_SYNC`), so reactors make this call on the loop thread.
    int try_inline() noexcept {
        return sys_result(::statx(file_fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_BASIC_STATS, &out));
    }
    template <class P>
    void prepare(P& p) noexcept {
        p.statx(file_fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &out);
    }
    result<file_info> make(int res) const noexcept {
        if (res < 0) return errno_code(-res);
        file_info i;
        i.size = out.stx_size;
        i.mode = out.stx_mode;
        i.mtime_sec = out.stx_mtime.tv_sec;
        i.mtime_nsec = out.stx_mtime.tv_nsec;
        return i;
    }
};

/// `close(2)` of a file no operation holds any more.
struct close_op : file_op_base {
    int file_fd;
    int run() noexcept { return sys_result(::close(file_fd)); }
    template <class P>
    void prepare(P& p) noexcept {
        p.close(file_fd);
    }
    result<void> make(int res) const noexcept {
        // Like close(2) itself: the descriptor is gone even when an error is reported.
        return to_result(res == -EINTR ? 0 : res);
    }
};

/// `openat(2)`, or `openat2(2)` with `RESOLVE_BENEATH` relative to a directory.
/// `O_CLOEXEC` is always added (DESIGN invariant 8).
template <class Backend>
struct open_op : file_op_base {
    Backend* backend;
    int dirfd;
    std::string path;
    open_how how{};
    bool beneath;
    int run() noexcept {
        if (!beneath) return sys_result(::openat(dirfd, path.c_str(), static_cast<int>(how.flags), how.mode));
        long r = ::syscall(SYS_openat2, dirfd, path.c_str(), &how, sizeof how);
        if (r < 0 && errno == ENOSYS) return open_beneath_without_openat2();
        return sys_result(r);
    }
    /// Reactors first open from the kernel's lookup caches alone (`openat2` with
    /// `RESOLVE_CACHED`, Linux 5.12): `-EAGAIN` when a path component is not cached or
    /// the open would create or truncate, and then a worker makes the call.
    int try_inline() noexcept {
        open_how cached = how;
        cached.resolve |= RESOLVE_CACHED;
        long r = ::syscall(SYS_openat2, dirfd, path.c_str(), &cached, sizeof cached);
        if (r < 0) return errno == EAGAIN || errno == ENOSYS || errno == EINVAL || errno == EINTR ? -EAGAIN : -errno;
        return static_cast<int>(r);
    }
    template <class P>
    void prepare(P& p) noexcept {
        if (beneath)
            p.openat2(dirfd, path.c_str(), &how);
        else
            p.openat(dirfd, path.c_str(), static_cast<int>(how.flags), static_cast<mode_t>(how.mode));
    }
    /// Kernels before 5.6: a relative path without `..` components, and no symbolic
    /// link as its last component (`O_NOFOLLOW`). Weaker than `RESOLVE_BENEATH` (a link
    /// in a middle component is followed), which is why openat2 is preferred.
    int open_beneath_without_openat2() noexcept {
        std::string_view rest = path;
        if (rest.empty() || rest.front() == '/') return -EXDEV;
        while (!rest.empty()) {
            auto slash = rest.find('/');
            std::string_view part = rest.substr(0, slash);
            if (part == "..") return -EXDEV;
            rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
        }
        return sys_result(::openat(dirfd, path.c_str(), static_cast<int>(how.flags) | O_NOFOLLOW, 0));
    }
    /// An opened fd nobody will take (the awaiting frame is gone) is closed.
    void discard(int res) const noexcept {
        if (res >= 0) sys::close(res);
    }
    result<file<Backend>> make(int res) const noexcept;
};

/// The pipes `send_file` splices through on io_uring, kept for the next call: creating
/// one (`pipe2` and a `F_SETPIPE_SZ`) and closing it (two closes) would otherwise cost
/// four syscalls per file sent. Per thread (a loop is used from one thread), at most
/// four, all close-on-exec; only an empty pipe comes back (one left holding bytes by a
/// cancel is closed instead).
class pipe_cache {
public:
    /// A pipe: read end, write end, and how many bytes it holds.
    struct pipe {
        int r = -1, w = -1;
        std::size_t capacity = 0;
    };
    pipe_cache() = default;
    pipe_cache(const pipe_cache&) = delete;
    pipe_cache& operator=(const pipe_cache&) = delete;
    ~pipe_cache() {
        for (std::size_t i = 0; i < n_; ++i) close_pipe(pipes_[i]);
    }
    /// A cached pipe, or a new one (256 KiB if the system allows, else its default);
    /// -errno when none can be made.
    int take(pipe& out) noexcept {
        if (n_ > 0) {
            out = pipes_[--n_];
            return 0;
        }
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) < 0) return -errno;
        out.r = fds[0];
        out.w = fds[1];
        int cap = ::fcntl(fds[1], F_SETPIPE_SZ, 256 << 10);
        if (cap < 0) cap = ::fcntl(fds[1], F_GETPIPE_SZ);
        out.capacity = cap > 0 ? static_cast<std::size_t>(cap) : 65536;
        return 0;
    }
    /// Returns an empty pipe (or closes it when the cache is full).
    void give(const pipe& p) noexcept {
        if (n_ < pipes_.size())
            pipes_[n_++] = p;
        else
            close_pipe(p);
    }
    static void close_pipe(const pipe& p) noexcept {
        if (p.r >= 0) sys::close(p.r);
        if (p.w >= 0) sys::close(p.w);
    }
    /// This thread's cache.
    static pipe_cache& local() noexcept {
        static thread_local pipe_cache cache;
        return cache;
    }

private:
    std::array<pipe, 4> pipes_{};
    std::size_t n_ = 0;
};

/// Set by `weft::ignore_sigpipe()`: SIGPIPE is ignored process-wide, so `send_file`
/// need not block it around each `sendfile(2)`.
inline std::atomic<bool> sigpipe_ignored{false};

/// Blocks SIGPIPE in the calling thread while it lives (for `sendfile(2)`, which cannot
/// be told `MSG_NOSIGNAL`). `raised()` after an `EPIPE` takes back the SIGPIPE the call
/// left pending, unless the thread had SIGPIPE blocked already (then a pending one may
/// be the application's, and it stays).
class sigpipe_guard {
public:
    sigpipe_guard() noexcept : active_(!sigpipe_ignored.load(std::memory_order_relaxed)) {
        if (!active_) return;
        sigemptyset(&pipe_);
        sigaddset(&pipe_, SIGPIPE);
        ::pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
    }
    sigpipe_guard(const sigpipe_guard&) = delete;
    sigpipe_guard& operator=(const sigpipe_guard&) = delete;
    ~sigpipe_guard() {
        if (active_) ::pthread_sigmask(SIG_SETMASK, &old_, nullptr);
    }
    void raised() noexcept {
        if (!active_ || sigismember(&old_, SIGPIPE)) return;
        timespec zero{};
        while (::sigtimedwait(&pipe_, nullptr, &zero) < 0 && errno == EINTR) {
        }
    }

private:
    bool active_;
    sigset_t pipe_{}, old_{};
};

/// Sends `count` bytes of a file from `offset` to a stream socket (`fd`: the socket,
/// so the backend's one-writer-per-socket rule applies).
/// - Reactors and `blocking`: `sendfile(2)` on the non-blocking socket, parked for
///   writability on `EAGAIN`; progress survives the wait.
/// - `uring`: `IORING_OP_SPLICE` file -> pipe -> socket; each splice is one step of
///   the operation (`finish` asks for the next), the pipe is the operation's own.
/// The result is the bytes sent. Like `write(2)` interrupted after it moved data, a
/// cancel or an error after some bytes went out reports those bytes (fewer than
/// `count`); a file that ends early reports what it had.
struct send_file_op {
    int fd;
    int file_fd;
    std::uint64_t offset;
    std::size_t count;
    std::span<const std::byte> header;  ///< sent first, with `MSG_MORE` when a body follows
    std::size_t header_done = 0;
    std::size_t done = 0;
    // uring: the pipe the bytes go through, and how many of them are in it
    pipe_cache::pipe pipe{};
    std::size_t in_pipe = 0;
    bool to_socket = false;
    bool ended = false;  ///< the file had no more bytes
    static constexpr interest dir = interest::write;

    send_file_op(int sock, int f, std::uint64_t off, std::size_t n, std::span<const std::byte> head) noexcept
        : fd(sock), file_fd(f), offset(off), count(n), header(head) {}
    send_file_op(send_file_op&& o) noexcept
        : fd(o.fd), file_fd(o.file_fd), offset(o.offset), count(o.count), header(o.header),
          header_done(o.header_done), done(o.done),
          pipe(std::exchange(o.pipe, {})), in_pipe(o.in_pipe), to_socket(o.to_socket), ended(o.ended) {}
    send_file_op& operator=(send_file_op&&) = delete;
    /// The pipe goes back to the cache if it is empty, else it is closed (its bytes
    /// belong to this transfer). The awaiter dies after the kernel let go of it.
    ~send_file_op() {
        if (pipe.r < 0) return;
        if (in_pipe == 0)
            pipe_cache::local().give(pipe);
        else
            pipe_cache::close_pipe(pipe);
    }

    /// Bytes one `sendfile(2)` call may move, and one turn of the loop: on loopback the
    /// reader drains as fast as we write, so a single uncapped call can run for many
    /// milliseconds while every other connection waits (nginx's `sendfile_max_chunk`
    /// answers the same problem). After a turn's worth the operation yields. Measured
    /// with the stutter benchmark (4 downloads, 4 small clients, epoll_et): 1 MiB per
    /// turn gave the small requests a p99 of 8.2 ms, 256 KiB 2.9 ms, for 40% less
    /// download throughput (3.9 -> 2.4 GB/s on loopback).
    static constexpr std::size_t max_per_call = 256u << 10;
    static constexpr std::size_t max_per_turn = 256u << 10;
    /// The reactor retries after `yield_res` without waiting for readiness.
    static constexpr bool yields = true;

    int try_now() noexcept {
        // sendfile(2) has no MSG_NOSIGNAL: a peer that is gone raises SIGPIPE, which
        // would kill the process (DESIGN invariant 5). Blocked in this thread for the
        // call, and a SIGPIPE it raised is taken back before the mask is restored.
        // The header first, held back by MSG_MORE until the body joins it: one segment
        // for a small response instead of two (what nginx's tcp_nopush does with
        // two setsockopt calls).
        while (header_done < header.size()) {
            long r = sys::send(fd, header.data() + header_done, header.size() - header_done, more());
            if (r < 0) return static_cast<int>(r);
            header_done += static_cast<std::size_t>(r);
        }
        sigpipe_guard guard;
        std::size_t turn = 0;
        while (done < count && !ended) {
            if (turn >= max_per_turn) return yield_res;
            auto off = static_cast<off_t>(offset + done);
            long r = sys::sendfile(fd, file_fd, &off, std::min(count - done, max_per_call));
            if (r < 0) {
                if (r == -EPIPE) guard.raised();
                return static_cast<int>(r);
            }
            if (r == 0) ended = true;
            done += static_cast<std::size_t>(r);
            turn += static_cast<std::size_t>(r);
        }
        return 0;
    }
    bool drained(int) const noexcept { return false; }

    /// `MSG_MORE` while a body is to follow the header.
    int more() const noexcept { return count > 0 ? MSG_MORE : 0; }

    template <class P>
    void prepare(P& p) noexcept {
        if (header_done < header.size())
            return p.send(fd, header.data() + header_done, header.size() - header_done, more());
        if (done + in_pipe >= count && in_pipe == 0) return p.nop();
        if (pipe.r < 0) {
            if (int err = pipe_cache::local().take(pipe); err < 0) return p.complete_now(err);
        }
        if (to_socket)
            p.splice(pipe.r, -1, fd, -1, static_cast<unsigned>(in_pipe));
        else
            p.splice(file_fd, static_cast<std::int64_t>(offset + done), pipe.w, -1,
                     static_cast<unsigned>(std::min(count - done, pipe.capacity)));
    }
    /// One splice finished: the next one, or the end.
    bool finish(int& res) noexcept {
        if (res < 0) return true;
        if (header_done < header.size()) {
            header_done += static_cast<std::size_t>(res);
            return false;  // the rest of the header, or the body
        }
        if (!to_socket) {
            if (res == 0) {  // the file ended (or nothing was left to send: the nop)
                ended = done < count;
                res = 0;
                return true;
            }
            in_pipe = static_cast<std::size_t>(res);
            to_socket = true;
            return false;
        }
        in_pipe -= static_cast<std::size_t>(res);
        done += static_cast<std::size_t>(res);
        if (in_pipe == 0) to_socket = false;
        if (done >= count) {
            res = 0;
            return true;
        }
        return false;
    }
    result<std::size_t> make(int res) const noexcept {
        if (res < 0 && header_done + done == 0) return errno_code(-res);
        return header_done + done;
    }
};

/// The awaiter of a file operation on a readiness backend: the operation is a job for
/// the loop's worker pool (the awaiter is the job: no allocation). On `blocking` the
/// call is made on the task's own thread.
template <class Backend, class Op>
class [[nodiscard("a file operation does nothing until it is awaited: is a co_await missing?")]] pool_awaiter
    : private pool_job {
    static constexpr bool is_blocking = Backend::kind == backend_kind::blocking;

public:
    pool_awaiter(Backend* backend, Op op) noexcept : backend_(backend), op_(std::move(op)) {}
    pool_awaiter(pool_awaiter&& o) noexcept : pool_job(), backend_(o.backend_), op_(std::move(o.op_)) {
        assert(o.state == op_state::idle);
    }
    pool_awaiter& operator=(pool_awaiter&&) = delete;
    /// A frame destroyed while a worker runs the job waits for the worker (the job's
    /// buffer is in this frame); a result it produced that owns a resource is released.
    ~pool_awaiter() {
        if constexpr (!is_blocking) {
            stop_.reset();
            if (this->state == op_state::parked) {
                backend_->core().workers().forget(*this);
                if (this->state == op_state::parked) {  // it never reached the ready queue
                    this->state = op_state::idle;
                    if constexpr (requires { op_.discard(0); })
                        if (ran_) op_.discard(this->res);
                }
            }
            if (this->state == op_state::ready) {
                backend_->core().unqueue(*this);
                if constexpr (requires { op_.discard(0); }) op_.discard(this->res);
            }
        }
    }

    /// A reactor first tries the operation's non-blocking form (`try_inline`: a read
    /// from the page cache, an open from the lookup caches); it completes here unless
    /// that would block. Without a backend (a closed file) it fails with `EBADF` at once.
    bool await_ready() noexcept {
        if (!backend_) [[unlikely]] {
            this->res = -EBADF;
            return true;
        }
        if constexpr (!is_blocking && requires { op_.try_inline(); }) {
            if (!backend_->core().inline_file_attempts()) return false;
            // What can be done without waiting is done here, as nginx does it, with no
            // round trip through a worker; only what would block goes to the pool.
            this->res = op_.try_inline();
            return this->res != -EAGAIN;
        }
        return false;
    }

    /// Queues the job (or, on `blocking`, makes the call) and arms cancellation.
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) {
        task_env env = env_of(h);
        if (env.token.stop_requested()) {
            this->res = -ECANCELED;
            return false;
        }
        if constexpr (is_blocking) {
            this->res = op_.run();
            return false;
        } else {
            this->continuation = h;
            this->run = &pool_awaiter::run_;
            this->state = op_state::parked;
            if (int err = backend_->core().workers().submit(*this); err < 0) {
                this->state = op_state::idle;
                this->res = err;
                return false;
            }
            if (env.token.stop_possible()) stop_.emplace(env.token, canceller{this});
            return true;
        }
    }

    /// The operation's result.
    auto await_resume() noexcept {
        if constexpr (!is_blocking) stop_.reset();
        return op_.make(this->res);
    }

private:
    /// On a worker thread: the blocking call. Touches only the op (the frame is kept
    /// alive until this returns, see the destructor).
    static int run_(pool_job& job) noexcept {
        auto& self = static_cast<pool_awaiter&>(job);
        self.ran_ = true;
        return self.op_.run();
    }
    struct canceller {
        pool_awaiter* self;
        void operator()() const noexcept {
            self->backend_->core().assert_loop_thread();
            self->backend_->core().workers().cancel(*self);
        }
    };
    Backend* backend_;
    Op op_;
    bool ran_ = false;  ///< written by the worker before it finishes; read after forget()
    std::optional<detail::stop_callback<canceller>> stop_;
};

/// The awaiter of file operation `Op` on `Backend`: the kernel's on a proactor, the
/// worker pool's on a reactor, the call itself on `blocking`.
template <class Backend, class Op>
using file_awaiter_t = std::conditional_t<Backend::kind == backend_kind::proactor, io_awaiter<Backend, Op>,
                                          pool_awaiter<Backend, Op>>;

/// An operation plus the reference that keeps its file open until the awaiter dies
/// (the reference is declared first, so it is released after the operation).
template <class Inner>
class [[nodiscard("a file operation does nothing until it is awaited: is a co_await missing?")]] file_awaiter {
public:
    template <class Backend, class Op>
    file_awaiter(file_state* s, Backend* backend, Op op) noexcept : ref_(s), inner_(backend, std::move(op)) {}
    file_awaiter(file_awaiter&&) noexcept = default;
    file_awaiter& operator=(file_awaiter&&) = delete;
    /// See `io_awaiter` / `pool_awaiter`.
    bool await_ready() noexcept { return inner_.await_ready(); }
    /// See `io_awaiter` / `pool_awaiter`.
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) {
        return inner_.await_suspend(h);
    }
    /// The operation's result.
    auto await_resume() noexcept { return inner_.await_resume(); }

private:
    file_ref ref_;
    Inner inner_;
};

template <class Backend>
file_state* state_of(const file<Backend>& f) noexcept;

}  // namespace detail

/// Ignores SIGPIPE for the whole process (as nginx does), and tells `send_file` so.
/// `sendfile(2)` cannot be told `MSG_NOSIGNAL`; without this call `send_file` blocks
/// SIGPIPE in its thread around each call (two `pthread_sigmask` calls per operation),
/// which leaves the process's disposition alone. Call it once at start-up, and do not
/// give SIGPIPE a default disposition again afterwards. False if `sigaction` failed.
inline bool ignore_sigpipe() noexcept {
    struct sigaction sa {};
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    if (::sigaction(SIGPIPE, &sa, nullptr) != 0) return false;
    detail::sigpipe_ignored.store(true, std::memory_order_relaxed);
    return true;
}

/// An open file on the loop of backend `Backend`, with positional reads and writes
/// that never block the loop (see the header comment for how each model does it).
///
/// Move-only. Every operation is an awaitable yielding a `result<T>`; several may be in
/// flight on one file at once (they are positional). Destroying a `file` closes it once
/// its in-flight operations have finished.
template <class Backend>
class file {
public:
    /// A closed file: every operation fails with `EBADF`.
    file() noexcept = default;
    /// Takes over `o`'s file; `o` becomes closed.
    file(file&& o) noexcept : backend_(std::exchange(o.backend_, nullptr)), state_(std::exchange(o.state_, nullptr)) {}
    /// Closes this file (once its operations end) and takes over `o`'s.
    file& operator=(file&& o) noexcept {
        if (this != &o) {
            detail::release_file(state_);
            backend_ = std::exchange(o.backend_, nullptr);
            state_ = std::exchange(o.state_, nullptr);
        }
        return *this;
    }
    /// Closes the file now, or when its last in-flight operation ends.
    ~file() { detail::release_file(state_); }

    /// Takes ownership of an open descriptor `fd` (made close-on-exec); `std::bad_alloc`
    /// aside, it cannot fail.
    static file adopt(loop<Backend>& l, int fd) {
        ::fcntl(fd, F_SETFD, FD_CLOEXEC);
        return file(&l.backend(), fd);
    }

    /// Opens `path` (`openat(2)` flags and mode; `O_CLOEXEC` is always added): yields
    /// `result<file>`. A relative path is relative to the working directory.
    static auto open(loop<Backend>& l, std::string path, int flags = O_RDONLY, mode_t mode = 0644) {
        return open_in(&l.backend(), AT_FDCWD, std::move(path), flags, mode, false);
    }

    /// Opens `relative_path` inside the directory `dir` (opened with `O_DIRECTORY`,
    /// `O_PATH` is enough), refusing any path that resolves outside it: `..` past `dir`,
    /// an absolute path, a symbolic link that leads out, `/proc` magic links
    /// (`openat2(2)` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`; such a path fails
    /// with `EXDEV` or `ELOOP`). What a static-file server needs to stay in its root.
    static auto open_beneath(const file& dir, std::string relative_path, int flags = O_RDONLY) {
        return open_in(dir.backend_, dir.native_handle(), std::move(relative_path), flags, 0, true, dir.state_);
    }

    /// Reads up to `buf.size()` bytes at `offset`: yields `result<std::size_t>`, the bytes
    /// read, fewer at the end of the file, 0 at or past it.
    auto read_at(std::span<std::byte> buf, std::uint64_t offset) noexcept {
        return make_op(detail::positional_op<false>{{}, native_handle(), buf, offset});
    }
    /// Writes up to `buf.size()` bytes at `offset`: yields the bytes written.
    auto write_at(std::span<const std::byte> buf, std::uint64_t offset) noexcept {
        return make_op(detail::positional_op<true>{{}, native_handle(), buf, offset});
    }
    /// Vectored read at `offset` (`preadv`): fills the entries in order; yields the total.
    auto read_at(std::span<const iovec> iov, std::uint64_t offset) noexcept {
        return make_op(detail::positional_vector_op<false>{{}, native_handle(), iov, offset});
    }
    /// Vectored write at `offset` (`pwritev`): yields the total written.
    auto write_at_vectored(std::span<const iovec> iov, std::uint64_t offset) noexcept {
        return make_op(detail::positional_vector_op<true>{{}, native_handle(), iov, offset});
    }
    /// Size, type, permissions and modification time: yields `result<file_info>`.
    auto stat() noexcept { return make_op(detail::stat_op{{}, native_handle(), {}}); }
    /// Flushes the file's data (and, unless `data_only`, its metadata) to storage:
    /// yields `result<void>`.
    auto sync(bool data_only = false) noexcept { return make_op(detail::sync_op{{}, native_handle(), data_only}); }

    /// Closes the file: yields `result<void>`. With operations still in flight, the
    /// descriptor is closed when the last one ends, and this reports success at once.
    /// On `uring` the close is an `IORING_OP_CLOSE`. Afterwards the file is closed.
    auto close() noexcept {
        detail::file_state* s = std::exchange(state_, nullptr);
        Backend* b = std::exchange(backend_, nullptr);
        int fd = -1;
        if (s) {
            // Nothing else holds it: this close is the one that closes the descriptor.
            if (s->refs.load(std::memory_order_acquire) == 1) fd = std::exchange(s->fd, -1);
            detail::release_file(s);  // else the last operation closes it
        }
        return close_awaiter(b, fd);
    }

    /// The descriptor, or -1 when closed.
    int native_handle() const noexcept { return state_ ? state_->fd : -1; }
    /// True until closed (or moved from).
    bool is_open() const noexcept { return state_ != nullptr; }

private:
    template <class>
    friend struct detail::open_op;
    friend detail::file_state* detail::state_of<Backend>(const file&) noexcept;

    /// Wraps `fd` (opened with `O_CLOEXEC`, or made so by `adopt`).
    file(Backend* b, int fd) : backend_(b), state_(new detail::file_state) { state_->fd = fd; }

    static auto open_in(Backend* b, int dirfd, std::string path, int flags, mode_t mode, bool beneath,
                        detail::file_state* dir = nullptr) {
        detail::open_op<Backend> op{{}, b, dirfd, std::move(path), {}, beneath};
        op.how.flags = static_cast<std::uint64_t>(flags | O_CLOEXEC);
        op.how.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0;
        if (beneath) op.how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
        return detail::file_awaiter<detail::file_awaiter_t<Backend, detail::open_op<Backend>>>(dir, b, std::move(op));
    }

    template <class Op>
    auto make_op(Op op) noexcept {
        return detail::file_awaiter<detail::file_awaiter_t<Backend, Op>>(state_, state_ ? backend_ : nullptr,
                                                                          std::move(op));
    }

    /// `close()`'s awaitable: an `IORING_OP_CLOSE` or a `close(2)` when there is a
    /// descriptor to close now, else success at once.
    class close_awaiter {
    public:
        close_awaiter(Backend* b, int fd) noexcept : fd_(fd), inner_(fd >= 0 ? b : nullptr, detail::close_op{{}, fd}) {}
        close_awaiter(close_awaiter&& o) noexcept
            : fd_(std::exchange(o.fd_, -1)), res_(o.res_), inner_(std::move(o.inner_)) {}
        close_awaiter& operator=(close_awaiter&&) = delete;
        /// Never awaited: the descriptor is closed all the same.
        ~close_awaiter() {
            if (fd_ >= 0 && !started_) sys::close(fd_);
        }
        bool await_ready() noexcept {
            if (fd_ < 0) return true;
            started_ = true;
            if constexpr (Backend::kind != backend_kind::proactor) {
                // close(2) of a regular file does not wait for a peer: made here,
                // without a round trip through the worker pool.
                res_ = detail::close_op{{}, fd_}.run();
                return true;
            } else {
                return inner_.await_ready();
            }
        }
        template <class P>
        bool await_suspend(std::coroutine_handle<P> h) {
            return inner_.await_suspend(h);
        }
        result<void> await_resume() noexcept {
            if (fd_ < 0) return {};
            if constexpr (Backend::kind != backend_kind::proactor)
                return detail::close_op{{}, fd_}.make(res_);
            else
                return inner_.await_resume();
        }

    private:
        int fd_;
        int res_ = 0;
        bool started_ = false;
        detail::file_awaiter_t<Backend, detail::close_op> inner_;
    };

    Backend* backend_ = nullptr;
    detail::file_state* state_ = nullptr;
};

namespace detail {
template <class Backend>
result<file<Backend>> open_op<Backend>::make(int res) const noexcept {
    if (res < 0) return errno_code(-res);
    try {
        return file<Backend>(backend, res);
    } catch (...) {
        sys::close(res);
        return errno_code(ENOMEM);
    }
}
}  // namespace detail

/// Sends `header` (if any), then `count` bytes of `f` starting at `offset`, on stream `s`
/// (TCP or Unix): yields `result<std::size_t>`, the bytes sent, header included. Fewer
/// than `header.size() + count` means it stopped early:
/// the file ended, or a cancel or an error came after some bytes went out (as with
/// `write(2)`; the next call reports the error). The header (an HTTP response's, say)
/// goes out with `MSG_MORE`, so the kernel sends it in one segment with the start of the
/// body instead of a segment of its own. Zero-copy: `sendfile(2)` on the
/// readiness backends and `blocking` (the socket parked for writability on `EAGAIN`),
/// `IORING_OP_SPLICE` through a pipe on `uring`. The file stays open until it ends.
///
/// On the readiness backends `sendfile(2)` runs on the loop thread: it reads the page
/// cache, and a miss waits for the disk there (there is no non-blocking `sendfile`).
/// For files that are likely not cached, `read_at` (a worker's on a miss) followed by
/// `write_all` keeps the loop free at the cost of a copy; on `uring` the kernel's own
/// workers take the wait.
template <class Stream, class Backend>
auto send_file(Stream& s, file<Backend>& f, std::uint64_t offset, std::size_t count,
               std::span<const std::byte> header = {}) noexcept {
    detail::send_file_op op(s.native_handle(), f.native_handle(), offset, count, header);
    Backend* b = f.is_open() && s.is_open() ? s.backend() : nullptr;
    return detail::file_awaiter<io_awaiter<Backend, detail::send_file_op>>(detail::state_of(f), b, std::move(op));
}

namespace detail {
template <class Backend>
file_state* state_of(const file<Backend>& f) noexcept {
    return f.state_;
}
}  // namespace detail

}  // namespace weft

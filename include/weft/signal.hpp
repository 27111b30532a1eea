// SPDX-License-Identifier: MIT
/// @file
/// @brief `signal_set<Backend>`: awaitable POSIX signals (`co_await signals.next()`), the
/// first half of a graceful shutdown.
///
/// Why a handler and a socket, not `signalfd`: a signalfd only sees a signal that is
/// blocked in *every* thread of the process, or the kernel delivers it to some thread
/// that has it unblocked (a resolver thread, a `blocking` task, a library's thread) and
/// its default action ends the process; and `sigio` cannot watch a signalfd at all (it
/// has no `O_ASYNC`). So each watched signal gets a handler that writes the signal's
/// number into a socket of every `signal_set` watching it, and a set reads its socket
/// like any other: the same code on every backend (libuv and Tokio do the same).
#pragma once

#include <array>
#include <atomic>
#include <bitset>
#include <cerrno>
#include <csignal>
#include <initializer_list>
#include <mutex>
#include <thread>
#include <utility>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "io.hpp"
#include "loop.hpp"
#include "result.hpp"
#include "sys.hpp"

namespace weft {

namespace detail {

/// Which sockets each signal is written to. The handler reads it without a lock (it
/// runs inside a signal), so the slots are atomics; registration takes a mutex.
class signal_registry {
public:
    static constexpr int max_sets = 8;  ///< `signal_set`s that may watch one signal at a time

    static signal_registry& instance() {
        static signal_registry* r = new signal_registry;  // never destroyed: a late signal may still come
        return *r;
    }

    /// Makes `signo` write to `fd`; installs the handler on the first watcher. 0 or -errno
    /// (`EINVAL`: a signal that cannot be caught, or one weft uses; `EBUSY`: too
    /// many sets watch it).
    int add(int signo, int fd) noexcept {
        if (signo <= 0 || signo >= NSIG || signo == SIGKILL || signo == SIGSTOP || signo == SIGIO ||
            (signo >= SIGRTMIN && signo <= SIGRTMIN + 3))  // the real-time signals weft uses (sigio, blocking)
            return -EINVAL;
        std::lock_guard lock(mutex_);
        auto& slots = fds_[static_cast<std::size_t>(signo)];
        int free = -1, used = 0;
        for (int i = 0; i < max_sets; ++i) {
            int v = slots[static_cast<std::size_t>(i)].load(std::memory_order_relaxed);
            if (v == fd) return 0;
            if (v < 0 && free < 0) free = i;
            if (v >= 0) ++used;
        }
        if (free < 0) return -EBUSY;
        if (used == 0) {
            struct sigaction sa {};
            sa.sa_handler = &on_signal;
            sigemptyset(&sa.sa_mask);
            sa.sa_flags = SA_RESTART;
            if (::sigaction(signo, &sa, &saved_[static_cast<std::size_t>(signo)]) < 0) return -errno;
        }
        slots[static_cast<std::size_t>(free)].store(fd, std::memory_order_release);
        return 0;
    }

    /// Stops writing `signo` to `fd`; the last watcher puts back the disposition that was
    /// there before the first.
    void remove(int signo, int fd) noexcept {
        std::lock_guard lock(mutex_);
        auto& slots = fds_[static_cast<std::size_t>(signo)];
        int used = 0;
        for (auto& s : slots) {
            int expected = fd;
            s.compare_exchange_strong(expected, -1);
            if (s.load(std::memory_order_relaxed) >= 0) ++used;
        }
        if (used == 0) ::sigaction(signo, &saved_[static_cast<std::size_t>(signo)], nullptr);
    }

    /// Waits until no handler is running anywhere. After `remove`, a handler on another
    /// thread may still hold the old fd number; closing it before that handler is done
    /// could let its byte land in whatever socket takes the number next.
    void quiesce() const noexcept {
        while (in_handler_.load() != 0) std::this_thread::yield();
    }

private:
    signal_registry() {
        for (auto& slots : fds_)
            for (auto& s : slots) s.store(-1, std::memory_order_relaxed);
    }
    /// Async-signal-safe: a non-blocking one-byte `write` per watcher; `errno` restored.
    /// A full socket drops the byte (the set has that signal queued already).
    static void on_signal(int signo) noexcept {
        const int saved = errno;
        signal_registry& r = instance();
        r.in_handler_.fetch_add(1);  // seq_cst: ordered against remove()'s store and quiesce()'s load
        unsigned char b = static_cast<unsigned char>(signo);
        for (auto& s : r.fds_[static_cast<std::size_t>(signo)]) {
            int fd = s.load();
            if (fd >= 0) [[maybe_unused]]
                auto n = ::write(fd, &b, 1);
        }
        r.in_handler_.fetch_sub(1);
        errno = saved;
    }
    std::mutex mutex_;
    std::atomic<int> in_handler_{0};  // handlers running now (lock-free: usable in a handler)
    std::array<std::array<std::atomic<int>, max_sets>, NSIG> fds_;
    std::array<struct sigaction, NSIG> saved_{};
};

/// Reads one signal number from a set's socket.
struct signal_read_op {
    int fd;
    unsigned char signo = 0;
    static constexpr interest dir = interest::read;
    int try_now() noexcept { return static_cast<int>(sys::recv(fd, &signo, 1, 0)); }
    template <class P>
    void prepare(P& p) noexcept {
        p.recv(fd, &signo, 1);
    }
    /// One byte says nothing about the next: never "drained" before `EAGAIN`.
    bool drained(int) const noexcept { return false; }
    result<int> make(int res) const noexcept {
        if (res < 0) return to_result<int>(res);
        if (res == 0) return errc::eof;  // the write end is gone: cannot happen while the set is open
        return static_cast<int>(signo);
    }
};

}  // namespace detail

/// A set of POSIX signals to await on a loop: `co_await signals.next()` yields the next
/// one that arrived (`result<int>`, the signal number).
///
/// A signal that arrives while nobody awaits is kept until the next `next()` (in the
/// order the handlers ran; several of one kind that arrive before any handler runs are
/// one, as POSIX merges them).
/// While a set watches a signal, the signal no longer has its default action (SIGTERM
/// no longer ends the process); when the last set watching it closes, the disposition
/// from before comes back. Works the same on every backend (`blocking`: `next()` blocks
/// the task's thread; `sigio`: the set's socket raises its real-time signal like any
/// other socket). Signals weft uses itself (`SIGIO`, `SIGRTMIN`..`SIGRTMIN+3`) and
/// ones that cannot be caught are refused with `EINVAL`. At most 8 sets may watch one
/// signal at once (`EBUSY`). Move-only; must not outlive its loop.
template <class Backend>
class signal_set {
public:
    /// A closed set.
    signal_set() noexcept = default;
    /// Takes over `o`'s signals.
    signal_set(signal_set&& o) noexcept
        : backend_(o.backend_),
          read_fd_(std::exchange(o.read_fd_, -1)),
          write_fd_(std::exchange(o.write_fd_, -1)),
          watched_(std::exchange(o.watched_, {})) {}
    /// Closes this set and takes over `o`'s signals.
    signal_set& operator=(signal_set&& o) noexcept {
        if (this != &o) {
            close();
            backend_ = o.backend_;
            read_fd_ = std::exchange(o.read_fd_, -1);
            write_fd_ = std::exchange(o.write_fd_, -1);
            watched_ = std::exchange(o.watched_, {});
        }
        return *this;
    }
    /// Stops watching; the signals' earlier dispositions come back.
    ~signal_set() { close(); }

    /// A set watching `signals` (e.g. `{SIGTERM, SIGINT}`) on `l`.
    static result<signal_set> open(loop<Backend>& l, std::initializer_list<int> signals) noexcept {
        int sv[2];
        if (int r = sys::socketpair(AF_UNIX, SOCK_STREAM | Backend::socket_flags, 0, sv); r < 0)
            return detail::errno_code(-r);
        // The handler's end never blocks, whatever the backend's sockets do.
        ::fcntl(sv[1], F_SETFL, ::fcntl(sv[1], F_GETFL) | O_NONBLOCK);
        signal_set s;
        s.write_fd_ = sv[1];
        if (int r = l.backend().attach(sv[0]); r < 0) {
            sys::close(sv[0]);
            return detail::errno_code(-r);
        }
        s.backend_ = &l.backend();
        s.read_fd_ = sv[0];
        for (int signo : signals)
            if (auto r = s.add(signo); !r) return r.error();
        return s;
    }

    /// Watches `signo` too. Errors: `EINVAL` (see above), `EBUSY`.
    result<void> add(int signo) noexcept {
        if (write_fd_ < 0) return detail::errno_code(EBADF);
        if (int r = detail::signal_registry::instance().add(signo, write_fd_); r < 0) return detail::errno_code(-r);
        watched_.set(static_cast<std::size_t>(signo));
        return {};
    }

    /// Waits for the next signal; yields its number. Cancelled by the task's stop token
    /// (a signal that arrives meanwhile is kept for the next call).
    auto next() noexcept { return io_awaiter<Backend, detail::signal_read_op>(backend_, {read_fd_}); }

    /// Stops watching every signal; a pending `next()` completes with `operation_canceled`.
    void close() noexcept {
        // The read end first: a pending next() must end cancelled, not see the EOF that
        // closing the write end would cause.
        if (read_fd_ >= 0) backend_->detach(read_fd_);
        if (write_fd_ >= 0) {
            auto& registry = detail::signal_registry::instance();
            for (int signo = 1; signo < NSIG; ++signo)
                if (watched_.test(static_cast<std::size_t>(signo))) registry.remove(signo, write_fd_);
            watched_.reset();
            registry.quiesce();
            sys::close(std::exchange(write_fd_, -1));
        }
        if (read_fd_ >= 0) sys::close(std::exchange(read_fd_, -1));
    }

    /// True while the set is open.
    bool is_open() const noexcept { return read_fd_ >= 0; }

private:
    Backend* backend_ = nullptr;
    int read_fd_ = -1;
    int write_fd_ = -1;
    std::bitset<NSIG> watched_;  // bit n: watching signal n
};

}  // namespace weft

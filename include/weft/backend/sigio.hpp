// SPDX-License-Identifier: MIT
/// @file
/// @brief Signal-driven IO (`backend::sigio`): `O_ASYNC` and a real-time signal per event.
#pragma once

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <string_view>
#include <system_error>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../sys.hpp"
#include "poll.hpp"
#include "reactor.hpp"

namespace weft::backend {

/// Signal-driven IO as a `reactor` demultiplexer.
///
/// Each socket gets `O_ASYNC`, `F_SETOWN_EX` naming the loop's thread and `F_SETSIG`
/// naming a real-time signal (`SIGRTMIN + 2`). The kernel then queues one signal per
/// readiness change (data arrived, send space came back after `EAGAIN`, a connection
/// completed or arrived, a hang-up or an error), carrying the fd in `si_fd` and what
/// happened in `si_band`. The loop's thread keeps the signal (and `SIGIO`) blocked and
/// dequeues signals itself: up to 64 per `read` of a signalfd, and with
/// `sigtimedwait` when it has to sleep. Nothing runs in a signal handler.
///
/// Signals say "something changed", once, like an edge: the reactor runs this model
/// edge-triggered, except that only `EAGAIN` counts as drained (see `short_io_drains`). When the real-time queue is full
/// (`RLIMIT_SIGPENDING`), the kernel drops the event and raises plain `SIGIO` instead,
/// with no fd: weft then treats every watched fd as ready, so the reactor retries every
/// waiting operation and nothing is lost (`overflows()` counts these).
///
/// The loop must run on the thread that created it (signals are directed at that
/// thread), and that thread keeps `SIGRTMIN + 2` and `SIGIO` blocked afterwards: a
/// straggling signal unblocked later would kill the process (their default action).
/// `post()` and `stop()` from other threads send the same signal with `tgkill`.
class sigio_demux {
public:
    /// "sigio".
    static constexpr std::string_view name = "sigio";
    /// One signal per change: the reactor must drain, like epoll's `EPOLLET`.
    static constexpr bool edge_triggered = true;
    /// ...but only `EAGAIN` proves a socket drained. A half-close's FIN raises the same
    /// `POLL_IN` as data, so data and FIN can come as two signals read in one batch;
    /// taking a short read as "drained" would then wait forever for the EOF.
    static constexpr bool short_io_drains = false;
    /// Signal-driven IO is in every Linux kernel.
    static bool available() noexcept { return true; }

    /// Blocks the signals in this thread and opens the signalfd; throws `std::system_error`.
    sigio_demux() : tid_(static_cast<pid_t>(::syscall(SYS_gettid))), pid_(::getpid()), signo_(SIGRTMIN + 2) {
        sigemptyset(&set_);
        sigaddset(&set_, signo_);
        sigaddset(&set_, SIGIO);
        if (int e = ::pthread_sigmask(SIG_BLOCK, &set_, nullptr); e != 0)
            throw std::system_error(e, std::system_category(), "pthread_sigmask");
        sfd_ = ::signalfd(-1, &set_, SFD_NONBLOCK | SFD_CLOEXEC);
        if (sfd_ < 0) throw std::system_error(errno, std::system_category(), "signalfd");
    }
    sigio_demux(const sigio_demux&) = delete;
    sigio_demux& operator=(const sigio_demux&) = delete;
    /// Closes the signalfd; signals still queued are dropped with the fds' `O_ASYNC`.
    ~sigio_demux() {
        drain();
        sys::close(sfd_);
    }

    /// Told by the reactor which fd is its wake-up eventfd (a `tgkill` stands for it).
    void set_wake_fd(int fd) noexcept { wake_fd_ = fd; }

    /// Directs `fd`'s readiness signals at the loop's thread; 0 or -errno.
    int add(int fd, unsigned) noexcept {
        if (fd == wake_fd_) return 0;  // eventfd has no O_ASYNC: wake() signals instead
        f_owner_ex owner{F_OWNER_TID, tid_};
        if (::fcntl(fd, F_SETOWN_EX, &owner) < 0 || ::fcntl(fd, F_SETSIG, signo_) < 0) return -errno;
        int fl = ::fcntl(fd, F_GETFL);
        if (fl < 0 || ::fcntl(fd, F_SETFL, fl | O_ASYNC) < 0) return -errno;
        return watched_.add(fd, POLLIN | POLLOUT);
    }
    /// Signals cover both directions: nothing to change.
    int modify(int, unsigned) noexcept { return 0; }
    /// Stops `fd`'s signals (clears `O_ASYNC`).
    int remove(int fd) noexcept {
        if (fd == wake_fd_) return 0;
        int fl = ::fcntl(fd, F_GETFL);
        if (fl >= 0) ::fcntl(fd, F_SETFL, fl & ~O_ASYNC);
        return watched_.remove(fd);
    }

    /// Interrupts `wait` from any thread or signal handler: `tgkill` of the signal. When
    /// the real-time queue is full (`RLIMIT_SIGPENDING`: `EAGAIN`), plain `SIGIO` instead:
    /// a classic signal is marked pending without a queue entry, so it always arrives,
    /// and the loop answers it with the overflow sweep, which includes the wake-up fd.
    void wake() noexcept {
        if (::syscall(SYS_tgkill, pid_, tid_, signo_) != 0) ::syscall(SYS_tgkill, pid_, tid_, SIGIO);
    }

    /// Times the real-time queue overflowed (plain `SIGIO`) and every fd was retried.
    std::uint64_t overflows() const noexcept { return overflows_; }

    /// Dequeues pending signals (sleeping up to `timeout` for the first) and reports
    /// each fd they name as `on_ready(fd, readable, writable, closed)`; after an
    /// overflow, every watched fd. Returns the number of signals or -errno.
    template <class F>
    int wait(clock::duration timeout, F&& on_ready) noexcept {
        std::size_t none = 0;
        if (int e = sys::detail::inject(sys::call::wait, -1, none); e != 0) return e;
        signalfd_siginfo batch[64];
        long got = sys::detail::check(::read(sfd_, batch, sizeof batch));
        WEFT_TRACE_LINE("read(signalfd) -> %s",
                        got >= 0 ? WEFT_TRACE_RES(got / static_cast<long>(sizeof batch[0])) : WEFT_TRACE_RES(got));
        int n = 0;
        if (got > 0) {
            n = static_cast<int>(static_cast<std::size_t>(got) / sizeof batch[0]);
        } else if (got == -EAGAIN && timeout != clock::duration::zero()) {
            siginfo_t info{};
            timespec ts{};
            int s = ::sigtimedwait(&set_, &info, detail::to_timespec(timeout, ts));
            WEFT_TRACE_LINE("sigtimedwait(timeout %s) -> %s", WEFT_TRACE_TIMEOUT(timeout),
                            s < 0 ? WEFT_TRACE_RES(-errno) : "a signal");
            if (s < 0) return errno == EAGAIN ? 0 : -errno;  // EAGAIN: the timeout passed
            batch[0] = {};
            batch[0].ssi_signo = static_cast<std::uint32_t>(s);
            batch[0].ssi_code = info.si_code;
            batch[0].ssi_fd = info.si_fd;
            batch[0].ssi_band = static_cast<std::uint32_t>(info.si_band);
            n = 1;
        } else if (got < 0 && got != -EAGAIN) {
            return static_cast<int>(got);
        }
        bool overflow = false;
        for (int i = 0; i < n; ++i) {
            const signalfd_siginfo& si = batch[i];
#if WEFT_TRACE
            if (static_cast<int>(si.ssi_signo) == SIGIO)
                WEFT_TRACE_LINE("signal SIGIO: the real-time queue overflowed, retry every fd");
            else if (si.ssi_code <= 0)
                WEFT_TRACE_LINE("signal SIGRTMIN+%d: the loop's wake-up", static_cast<int>(si.ssi_signo) - SIGRTMIN);
            else
                WEFT_TRACE_LINE("signal SIGRTMIN+%d: fd %d band%s%s%s", static_cast<int>(si.ssi_signo) - SIGRTMIN,
                                si.ssi_fd, si.ssi_band & POLLIN ? " in" : "", si.ssi_band & POLLOUT ? " out" : "",
                                si.ssi_band & (POLLERR | POLLHUP) ? " hup" : "");
#endif
            if (static_cast<int>(si.ssi_signo) == SIGIO) {
                overflow = true;  // the queue was full: some event was dropped
            } else if (si.ssi_code <= 0) {
                on_ready(wake_fd_, true, false, false);  // tgkill from wake()
            } else {
                const std::uint32_t band = si.ssi_band;
                const bool gone = (band & (POLLERR | POLLHUP)) != 0;
                on_ready(si.ssi_fd, gone || (band & (POLLIN | POLLPRI | POLLRDNORM | POLLMSG)) != 0,
                         gone || (band & (POLLOUT | POLLWRNORM | POLLWRBAND)) != 0, gone);
            }
        }
        if (overflow) {
            ++overflows_;
            for (pollfd& p : watched_.fds()) p.revents = POLLIN | POLLOUT;  // ready, not hung up
            watched_.report(static_cast<int>(watched_.fds().size()), on_ready);
            on_ready(wake_fd_, true, false, false);
        }
        return n;
    }

private:
    /// Takes every queued signal off (used at teardown).
    void drain() noexcept {
        signalfd_siginfo batch[64];
        while (::read(sfd_, batch, sizeof batch) > 0) {
        }
    }

    pid_t tid_;
    pid_t pid_;
    int signo_;
    sigset_t set_{};
    int sfd_ = -1;
    int wake_fd_ = -1;
    std::uint64_t overflows_ = 0;
    detail::pollfd_table watched_;  ///< every fd with O_ASYNC, for the overflow sweep
};

/// Signal-driven IO: readiness arrives as queued real-time signals (edge-like).
using sigio = reactor<sigio_demux>;
static_assert(reactor_backend<sigio>);

}  // namespace weft::backend

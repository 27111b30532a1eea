// SPDX-License-Identifier: MIT
/// @file
/// @brief The epoll demultiplexer, level-triggered (`backend::epoll_lt`) and
/// edge-triggered (`backend::epoll_et`).
#pragma once

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <string_view>
#include <system_error>

#include <sys/epoll.h>

#include "../sys.hpp"
#include "reactor.hpp"

namespace weft::backend {

/// epoll as a `reactor` demultiplexer; `Edge` selects `EPOLLET`. `Eager` (level-triggered
/// only) removes interest as soon as an operation completes instead of lazily: it exists
/// to measure the two policies against each other (`benchmarks/lt_interest.sh`).
///
/// The kernel keeps the interest list, so a wait costs O(ready fds), not O(watched fds).
/// Waits use `epoll_pwait2` (nanosecond timeouts; no early wake-up that would spin on a
/// sub-millisecond timer) and fall back to `epoll_wait`, rounding the timeout up.
template <bool Edge, bool Eager = false>
class epoll_demux {
public:
    static_assert(!(Edge && Eager), "the eager interest policy is level-triggered only");
    /// "epoll_et", "epoll_lt", or "epoll_lt_eager".
    static constexpr std::string_view name = Edge ? "epoll_et" : Eager ? "epoll_lt_eager" : "epoll_lt";
    /// Whether readiness is reported once per change (the reader must drain).
    static constexpr bool edge_triggered = Edge;
    /// Level-triggered: drop interest when an operation completes (true) or lazily when
    /// the fd reports ready with nobody waiting (false, the default).
    static constexpr bool eager_interest = Eager;
    /// epoll exists on every Linux weft supports.
    static bool available() noexcept { return true; }

    /// Creates the epoll instance; throws `std::system_error` (e.g. `EMFILE`).
    epoll_demux() {
        fd_ = ::epoll_create1(EPOLL_CLOEXEC);
        if (fd_ < 0) throw std::system_error(errno, std::system_category(), "epoll_create1");
    }
    epoll_demux(const epoll_demux&) = delete;
    epoll_demux& operator=(const epoll_demux&) = delete;
    ~epoll_demux() { sys::close(fd_); }

    /// Starts watching `fd` for `mask` (1 read, 2 write); 0 or -errno (`-EPERM` for regular files).
    int add(int fd, unsigned mask) noexcept { return ctl(EPOLL_CTL_ADD, fd, mask); }
    /// Changes what `fd` is watched for.
    int modify(int fd, unsigned mask) noexcept { return ctl(EPOLL_CTL_MOD, fd, mask); }
    /// Stops watching `fd`.
    int remove(int fd) noexcept { return ctl(EPOLL_CTL_DEL, fd, 0); }

    /// Waits up to `timeout` and reports each ready fd as `on_ready(fd, readable,
    /// writable, closed)` (`closed`: the peer hung up, an error is pending, or urgent
    /// data arrived: states after which a short read no longer proves the socket drained
    /// and no further edge may come); returns the count or -errno (`-EINTR` is an empty
    /// return).
    template <class F>
    int wait(clock::duration timeout, F&& on_ready) noexcept {
        std::size_t none = 0;
        int n = sys::detail::inject(sys::call::wait, fd_, none);
        if (n == 0) n = do_wait(timeout);
        WEFT_TRACE_LINE("%s(timeout %s) -> %s ready", use_pwait2_ ? "epoll_pwait2" : "epoll_wait",
                        WEFT_TRACE_TIMEOUT(timeout), WEFT_TRACE_RES(n));
        if (n < 0) return n;
        for (int i = 0; i < n; ++i) {
            std::uint32_t e = events_[i].events;
            bool err = (e & (EPOLLERR | EPOLLHUP)) != 0;
            on_ready(events_[i].data.fd, err || (e & (EPOLLIN | EPOLLRDHUP | EPOLLPRI)) != 0,
                     err || (e & EPOLLOUT) != 0, err || (e & (EPOLLRDHUP | EPOLLPRI)) != 0);
        }
        return n;
    }

private:
    static constexpr int max_events = 256;

    int ctl(int op, int fd, unsigned mask) noexcept {
        epoll_event ev{};
        // Edge-triggered also watches EPOLLPRI: TCP urgent data makes recv stop short at
        // the urgent mark with in-band bytes still queued, and no new edge announces them.
        ev.events = (mask & 1 ? EPOLLIN | EPOLLRDHUP | (Edge ? EPOLLPRI : 0u) : 0u) | (mask & 2 ? EPOLLOUT : 0u) |
                    (Edge ? EPOLLET : 0u);
        ev.data.fd = fd;
        WEFT_TRACE_LINE("epoll_ctl %s fd %d%s%s%s",
                        op == EPOLL_CTL_ADD   ? "ADD"
                        : op == EPOLL_CTL_MOD ? "MOD"
                                              : "DEL",
                        fd, mask & 1 ? " in" : "", mask & 2 ? " out" : "", Edge ? " (edge-triggered)" : "");
        return static_cast<int>(sys::detail::check(::epoll_ctl(fd_, op, fd, &ev)));
    }

    int do_wait(clock::duration timeout) noexcept {
        if (use_pwait2_) {
            timespec ts{};
            timespec* tsp = nullptr;
            if (timeout != clock::duration::max()) {
                auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(timeout).count();
                ts.tv_sec = static_cast<std::time_t>(ns / 1'000'000'000);
                ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
                tsp = &ts;
            }
            int n = static_cast<int>(sys::detail::check(::epoll_pwait2(fd_, events_, max_events, tsp, nullptr)));
            // ENOSYS: kernel older than 5.11. EPERM/ENOTSUP: a container's seccomp profile
            // that predates the syscall rejects it; epoll_wait still works there.
            if (n != -ENOSYS && n != -EPERM && n != -ENOTSUP) return n;
            use_pwait2_ = false;
        }
        int ms = -1;
        if (timeout != clock::duration::max()) {
            auto c = std::chrono::ceil<std::chrono::milliseconds>(timeout).count();
            ms = c > 0x7fffffff ? 0x7fffffff : static_cast<int>(c);
        }
        return static_cast<int>(sys::detail::check(::epoll_wait(fd_, events_, max_events, ms)));
    }

    int fd_ = -1;
    bool use_pwait2_ = true;
    epoll_event events_[max_events];
};

/// epoll, level-triggered: readiness is reported while it lasts.
using epoll_lt = reactor<epoll_demux<false>>;
/// epoll, edge-triggered (`EPOLLET`): reported once per change; weft drains fairly.
using epoll_et = reactor<epoll_demux<true>>;
/// epoll, level-triggered, with interest added and removed around every operation that
/// waits: the textbook policy, kept to measure `epoll_lt`'s lazy policy against it.
using epoll_lt_eager = reactor<epoll_demux<false, true>>;

static_assert(reactor_backend<epoll_lt>);
static_assert(reactor_backend<epoll_et>);
static_assert(reactor_backend<epoll_lt_eager>);

}  // namespace weft::backend

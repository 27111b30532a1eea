// SPDX-License-Identifier: MIT
/// @file
/// @brief The select(2) demultiplexer (`backend::select`).
#pragma once

#include <cerrno>
#include <string_view>

#include <sys/select.h>

#include "../result.hpp"
#include "../sys.hpp"
#include "poll.hpp"
#include "reactor.hpp"

namespace weft::backend {

/// select(2) as a `reactor` demultiplexer. The program keeps two master bit sets
/// (read, write) and the highest watched fd; each wait copies them (the kernel
/// overwrites its arguments with the result) and then scans bits 0..max fd for the
/// answer, so a wait costs O(highest fd) in the kernel and here.
///
/// An `fd_set` holds fds below `FD_SETSIZE` (1024) only, and `FD_SET` beyond it writes
/// out of bounds. Such an fd is refused when it is registered: `accept()`, `connect()`
/// or adopting a socket fail with `weft::errc::fd_too_large` (the fd is closed), and
/// the loop goes on serving every other fd.
class select_demux {
public:
    /// "select".
    static constexpr std::string_view name = "select";
    /// Level-triggered: readiness is reported while it lasts.
    static constexpr bool edge_triggered = false;
    /// fds at or above this cannot be watched (`FD_SETSIZE`).
    static constexpr int fd_limit = FD_SETSIZE;
    /// select exists everywhere.
    static bool available() noexcept { return true; }

    /// Starts with empty sets.
    select_demux() noexcept {
        FD_ZERO(&read_);
        FD_ZERO(&write_);
    }

    /// Starts watching `fd` for `mask` (1 read, 2 write); 0, or `fd_too_large` (in the
    /// internal -errno convention) for an fd at or above `FD_SETSIZE`.
    int add(int fd, unsigned mask) noexcept { return modify(fd, mask); }
    /// Changes what `fd` is watched for.
    int modify(int fd, unsigned mask) noexcept {
        if (fd < 0) return -EBADF;
        if (fd >= fd_limit) return weft::detail::negative(errc::fd_too_large);
        if (mask & 1)
            FD_SET(fd, &read_);
        else
            FD_CLR(fd, &read_);
        if (mask & 2)
            FD_SET(fd, &write_);
        else
            FD_CLR(fd, &write_);
        if (mask && fd > max_fd_) max_fd_ = fd;
        if (!mask && fd == max_fd_) lower_max();
        return 0;
    }
    /// Stops watching `fd`.
    int remove(int fd) noexcept { return modify(fd, 0); }

    /// Waits up to `timeout` (`pselect`: nanoseconds); reports each ready fd as
    /// `on_ready(fd, readable, writable, false)` and returns the count or -errno.
    template <class F>
    int wait(clock::duration timeout, F&& on_ready) noexcept {
        std::size_t none = 0;
        int n = sys::detail::inject(sys::call::wait, -1, none);
        fd_set r = read_, w = write_;  // the kernel writes the answer into its arguments
        if (n == 0) {
            timespec ts{};
            n = static_cast<int>(
                sys::detail::check(::pselect(max_fd_ + 1, &r, &w, nullptr, weft::detail::to_timespec(timeout, ts), nullptr)));
        }
        WEFT_TRACE_LINE("pselect(fds 0..%d, read list %d, write list %d, timeout %s) -> %s ready", max_fd_,
                        count(read_), count(write_), WEFT_TRACE_TIMEOUT(timeout), WEFT_TRACE_RES(n));
        if (n <= 0) return n;
        // n counts bits over both sets; stop scanning once all are found.
        int left = n;
        for (int fd = 0; fd <= max_fd_ && left > 0; ++fd) {
            bool rd = FD_ISSET(fd, &r), wr = FD_ISSET(fd, &w);
            if (!rd && !wr) continue;
            left -= rd + wr;
            on_ready(fd, rd, wr, false);
        }
        return n;
    }

private:
#if WEFT_TRACE
    /// How many fds `set` holds (trace mode's read and write list sizes).
    int count(const fd_set& set) const noexcept {
        int n = 0;
        for (int fd = 0; fd <= max_fd_; ++fd) n += FD_ISSET(fd, &set) ? 1 : 0;
        return n;
    }
#endif
    void lower_max() noexcept {
        while (max_fd_ >= 0 && !FD_ISSET(max_fd_, &read_) && !FD_ISSET(max_fd_, &write_)) --max_fd_;
    }
    fd_set read_;
    fd_set write_;
    int max_fd_ = -1;
};

/// select(2), level-triggered, limited to fds below `FD_SETSIZE`.
using select = reactor<select_demux>;
static_assert(reactor_backend<select>);

}  // namespace weft::backend

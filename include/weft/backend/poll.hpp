// SPDX-License-Identifier: MIT
/// @file
/// @brief The poll(2) demultiplexer (`backend::poll`).
#pragma once

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <string_view>
#include <vector>

#include <poll.h>

#include "../core.hpp"
#include "../sys.hpp"
#include "reactor.hpp"

namespace weft::detail {

/// A dense `pollfd` array with an fd → index map: O(1) add, modify and remove (removal
/// swaps the last entry into the hole), and the array is what `poll(2)` takes as is.
class pollfd_table {
public:
    /// Adds `fd` watching `events`; 0, `-EEXIST`, or `-ENOMEM`.
    int add(int fd, short events) noexcept {
        std::size_t* at = fd_entry(index_, fd);
        if (!at) return -ENOMEM;
        if (*at) return -EEXIST;
        try {
            fds_.push_back({fd, events, 0});
            // So the wait never allocates; grown geometrically, as `fds_` is: reserving
            // the exact size reallocated at every new high-water mark of watched fds,
            // which with interest coming and going creeps up all through a run.
            if (ready_.capacity() < fds_.size()) ready_.reserve(std::max(fds_.size(), 2 * ready_.capacity()));
        } catch (...) {
            if (fds_.size() > ready_.capacity()) fds_.pop_back();
            return -ENOMEM;
        }
        *at = fds_.size();  // index + 1: 0 means absent
        return 0;
    }
    /// Changes the events `fd` is watched for; 0 or `-ENOENT`.
    int modify(int fd, short events) noexcept {
        std::size_t i = find(fd);
        if (!i) return -ENOENT;
        fds_[i - 1].events = events;
        return 0;
    }
    /// Stops watching `fd`; 0 or `-ENOENT`.
    int remove(int fd) noexcept {
        std::size_t i = find(fd);
        if (!i) return -ENOENT;
        pollfd last = fds_.back();
        fds_[i - 1] = last;
        index_[static_cast<std::size_t>(last.fd)] = i;
        fds_.pop_back();
        index_[static_cast<std::size_t>(fd)] = 0;
        return 0;
    }
    /// The array for `poll(2)`.
    std::vector<pollfd>& fds() noexcept { return fds_; }
    /// Calls `on_ready(fd, readable, writable, closed)` for each entry with `revents`,
    /// after copying them out (the callbacks may add and remove entries).
    template <class F>
    void report(int n, F&& on_ready) noexcept {
        ready_.clear();
        for (const pollfd& p : fds_) {
            if (static_cast<int>(ready_.size()) == n) break;
            if (p.revents) ready_.push_back(p);  // capacity reserved in add()
        }
        for (const pollfd& p : ready_) {
            const bool gone = (p.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0;
            on_ready(p.fd, gone || (p.revents & (POLLIN | POLLPRI | POLLRDHUP)) != 0,
                     gone || (p.revents & POLLOUT) != 0, gone || (p.revents & POLLRDHUP) != 0);
        }
    }
    /// The `poll` events for a reactor mask (bit 1 read, 2 write).
    static short events(unsigned mask) noexcept {
        return static_cast<short>((mask & 1 ? POLLIN | POLLRDHUP : 0) | (mask & 2 ? POLLOUT : 0));
    }

private:
    std::size_t find(int fd) const noexcept {
        if (fd < 0 || static_cast<std::size_t>(fd) >= index_.size()) return 0;
        return index_[static_cast<std::size_t>(fd)];
    }
    std::vector<pollfd> fds_;
    std::vector<std::size_t> index_;  ///< per fd: its index in fds_ plus one, 0 if absent
    std::vector<pollfd> ready_;       ///< the entries one wait reported
};

/// A `timespec` for `ppoll`/`pselect`/`sigtimedwait`: null for "forever".
inline const timespec* to_timespec(clock::duration timeout, timespec& ts) noexcept {
    if (timeout == clock::duration::max()) return nullptr;
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(timeout).count();
    if (ns < 0) ns = 0;
    ts.tv_sec = static_cast<std::time_t>(ns / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
    return &ts;
}

}  // namespace weft::detail

namespace weft::backend {

/// poll(2) as a `reactor` demultiplexer: the program hands the kernel the whole array
/// of watched fds on every wait, and the kernel scans all of them, so a wait costs
/// O(watched fds) twice (kernel and the scan for `revents`); there is no fd limit
/// beyond the process's. Waits use `ppoll` for nanosecond timeouts.
class poll_demux {
public:
    /// "poll".
    static constexpr std::string_view name = "poll";
    /// Level-triggered: readiness is reported while it lasts.
    static constexpr bool edge_triggered = false;
    /// poll exists everywhere.
    static bool available() noexcept { return true; }

    /// Starts watching `fd` for `mask` (1 read, 2 write); 0 or -errno.
    int add(int fd, unsigned mask) noexcept { return table_.add(fd, detail::pollfd_table::events(mask)); }
    /// Changes what `fd` is watched for.
    int modify(int fd, unsigned mask) noexcept { return table_.modify(fd, detail::pollfd_table::events(mask)); }
    /// Stops watching `fd`.
    int remove(int fd) noexcept { return table_.remove(fd); }

    /// Waits up to `timeout`; reports each ready fd as `on_ready(fd, readable, writable,
    /// closed)` (`POLLHUP`, `POLLERR` and `POLLNVAL` wake both directions, so the
    /// operations run and see the error); returns the count or -errno.
    template <class F>
    int wait(clock::duration timeout, F&& on_ready) noexcept {
        auto& fds = table_.fds();
        std::size_t none = 0;
        int n = sys::detail::inject(sys::call::wait, -1, none);
        if (n == 0) {
            timespec ts{};
            n = static_cast<int>(
                sys::detail::check(::ppoll(fds.data(), fds.size(), detail::to_timespec(timeout, ts), nullptr)));
        }
        WEFT_TRACE_LINE("ppoll(%zu fds, timeout %s) -> %s ready", fds.size(), WEFT_TRACE_TIMEOUT(timeout),
                        WEFT_TRACE_RES(n));
        if (n <= 0) return n;
        table_.report(n, on_ready);
        return n;
    }

private:
    detail::pollfd_table table_;
};

/// poll(2), level-triggered: the whole fd array goes to the kernel on every wait.
using poll = reactor<poll_demux>;
static_assert(reactor_backend<poll>);

}  // namespace weft::backend

// SPDX-License-Identifier: MIT
/// @file
/// @brief Non-blocking polling without a kernel wait (`backend::spin`).
#pragma once

#include <string_view>

#include <poll.h>

#include "../sys.hpp"
#include "poll.hpp"
#include "reactor.hpp"

namespace weft::backend {

/// "Keep asking": every waiting operation is retried on every loop iteration, with no
/// readiness notification at all. The demultiplexer reports each watched fd as ready
/// in the directions it is watched for, without a syscall; the reactor then re-runs the
/// parked operation, whose `recv`/`send`/`accept` answers `EAGAIN` until there is
/// something. Correct, and as costly as the model is: while any operation waits, the
/// loop never sleeps and burns its core.
///
/// With nothing to retry (only the loop's own wake-up eventfd is watched) it does sleep
/// until the next timer, a `post()` or a `stop()`, in `ppoll` on that eventfd alone.
class spin_demux {
public:
    /// "spin".
    static constexpr std::string_view name = "spin";
    /// Level-triggered in effect: every watched fd counts as ready on every iteration.
    static constexpr bool edge_triggered = false;
    /// Needs nothing from the kernel.
    static bool available() noexcept { return true; }

    /// Told by the reactor which fd is its wake-up eventfd (it never counts as work).
    void set_wake_fd(int fd) noexcept { wake_fd_ = fd; }
    /// Starts "watching" `fd` (it will be retried every iteration).
    int add(int fd, unsigned mask) noexcept { return table_.add(fd, detail::pollfd_table::events(mask)); }
    /// Changes the directions `fd` is retried in.
    int modify(int fd, unsigned mask) noexcept { return table_.modify(fd, detail::pollfd_table::events(mask)); }
    /// Stops retrying `fd`.
    int remove(int fd) noexcept { return table_.remove(fd); }

    /// Reports every watched socket as ready at once (no syscall); with none, sleeps up
    /// to `timeout` on the wake-up eventfd. Returns the count or -errno.
    template <class F>
    int wait(clock::duration timeout, F&& on_ready) noexcept {
        std::size_t none = 0;
        if (int e = sys::detail::inject(sys::call::wait, -1, none); e != 0) return e;
        auto& fds = table_.fds();
        int n = 0;
        for (pollfd& p : fds) {
            p.revents = p.fd == wake_fd_ ? 0 : static_cast<short>(p.events & ~POLLRDHUP);  // ready, not hung up
            n += p.revents != 0;
        }
        WEFT_TRACE_LINE("spin pass: %d fds to retry, no syscall", n);
        if (n == 0) {  // nothing to retry: sleep until a timer, post() or stop()
            pollfd wake{wake_fd_, POLLIN, 0};
            timespec ts{};
            n = static_cast<int>(sys::detail::check(::ppoll(&wake, 1, detail::to_timespec(timeout, ts), nullptr)));
            WEFT_TRACE_LINE("ppoll(wake-up fd, timeout %s) -> %s", WEFT_TRACE_TIMEOUT(timeout), WEFT_TRACE_RES(n));
            if (n <= 0) return n;
            on_ready(wake_fd_, true, false, false);
            return n;
        }
        table_.report(n, on_ready);
        return n;
    }

private:
    detail::pollfd_table table_;
    int wake_fd_ = -1;
};

/// Non-blocking polling: operations are retried every iteration (CPU-bound by design).
using spin = reactor<spin_demux>;
static_assert(reactor_backend<spin>);

}  // namespace weft::backend

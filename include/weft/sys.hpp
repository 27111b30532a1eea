// SPDX-License-Identifier: MIT
/// @file
/// @brief The one thin layer every raw syscall goes through.
///
/// Each wrapper returns a value >= 0 or a negative errno (never -1 with `errno`),
/// retries `EINTR` where retrying is correct (never for `close`), and first asks an
/// optional fault hook, so a test can inject `EINTR`, `EAGAIN`, short reads and
/// writes, `ECONNRESET` or `EMFILE` at any call site without touching the kernel.
///
/// A demultiplexer's own calls (`epoll_ctl`, ...) live in its header, convert with
/// `sys::detail::check`, and its wait consults the same fault hook (`call::wait`).
#pragma once

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdint>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "trace.hpp"

namespace weft::sys {

/// Names each syscall site, so a fault hook can choose where to inject.
enum class call : std::uint8_t {
    recv,     ///< `recv(2)`
    send,     ///< `send(2)`
    recvmsg,  ///< `recvmsg(2)` (vectored reads; `len` is the total of the entries)
    sendmsg,  ///< `sendmsg(2)` (vectored writes; `len` is the total of the entries)
    accept,   ///< `accept4(2)`
    connect,  ///< `connect(2)`
    socket,   ///< `socket(2)`
    wait,     ///< the backend's wait (`epoll_pwait2`, `poll`, ...)
};

/// A fault hook: may shrink `len` (a short read or write) and/or return a
/// negative errno to make the call fail without reaching the kernel; 0 means
/// "make the real call". An injected `-EINTR` is retried exactly like a real one.
using fault_hook_fn = int (*)(call site, int fd, std::size_t& len) noexcept;

namespace detail {
/// The installed hook. Atomic because blocking-backend threads read it; relaxed
/// because tests install it before any IO starts.
inline std::atomic<fault_hook_fn> fault_hook{nullptr};

/// Runs the hook if one is installed; 0 means proceed.
inline int inject(call site, int fd, std::size_t& len) noexcept {
    fault_hook_fn hook = fault_hook.load(std::memory_order_relaxed);
    if (hook == nullptr) [[likely]]
        return 0;
    return hook(site, fd, len);
}

/// Turns a libc return value into the internal convention.
inline long check(long r) noexcept { return r >= 0 ? r : -static_cast<long>(errno); }

/// Bytes the entries of `msg` name.
inline std::size_t total_of(const msghdr* msg) noexcept {
    std::size_t n = 0;
    for (std::size_t i = 0; i < msg->msg_iovlen; ++i) n += msg->msg_iov[i].iov_len;
    return n;
}

/// Runs `call` on a copy of `*msg` whose entries stop after `len` bytes: a fault hook's
/// short vectored transfer, which may end inside any entry. Test-only path, kept out of
/// line so the copy's stack space is not reserved by every vectored call.
template <class Call>
[[gnu::noinline]] long with_prefix(const msghdr* msg, std::size_t len, Call call) noexcept {
    iovec entries[IOV_MAX];
    msghdr shorter = *msg;
    std::size_t n = 0;
    for (; n < msg->msg_iovlen && n < IOV_MAX && len > 0; ++n) {
        entries[n] = msg->msg_iov[n];
        if (entries[n].iov_len > len) entries[n].iov_len = len;
        len -= entries[n].iov_len;
    }
    shorter.msg_iov = entries;
    shorter.msg_iovlen = n;
    return call(&shorter);
}

/// One vectored call (`real`, on a `msghdr`) through the fault hook at `site`: the hook
/// sees the entries' total length, and a shortened length becomes a call on a prefix.
template <class Real>
long vectored(call site, int fd, const msghdr* msg, Real real) noexcept {
    if (fault_hook.load(std::memory_order_relaxed) == nullptr) [[likely]]
        return real(msg);
    const std::size_t all = total_of(msg);
    std::size_t len = all;
    if (long r = inject(site, fd, len); r != 0) return r;
    return len < all ? with_prefix(msg, len, real) : real(msg);
}

/// Set by `backend::blocking` for the duration of one blocking call on this thread:
/// when it reads true, an `EINTR` is the canceller's signal and is returned instead of
/// retried. Null everywhere else, so other backends always retry.
inline thread_local const std::atomic<bool>* interrupt_flag = nullptr;

/// True if `r` is an `EINTR` that must end the call (see `interrupt_flag`).
inline bool interrupted(long r) noexcept {
    if (r != -EINTR) return false;
    const std::atomic<bool>* f = interrupt_flag;
    return f != nullptr && f->load(std::memory_order_acquire);
}
}  // namespace detail

/// Installs `hook` (or removes it with nullptr) for every later syscall; returns the previous hook.
inline fault_hook_fn set_fault_hook(fault_hook_fn hook) noexcept {
    return detail::fault_hook.exchange(hook, std::memory_order_relaxed);
}

/// `recv(2)`: bytes received (0 = EOF) or -errno; `EINTR` retried.
inline long recv(int fd, void* buf, std::size_t len, int flags) noexcept {
    for (;;) {
        long r = detail::inject(call::recv, fd, len);
        if (r == 0) r = detail::check(::recv(fd, buf, len, flags));
        WEFT_TRACE_LINE("recv(fd %d, %zu) -> %s", fd, len, WEFT_TRACE_RES(r));
        if (r != -EINTR || detail::interrupted(r)) return r;
    }
}

/// `send(2)` with `MSG_NOSIGNAL` always set (a vanished peer must never raise SIGPIPE).
inline long send(int fd, const void* buf, std::size_t len, int flags) noexcept {
    for (;;) {
        long r = detail::inject(call::send, fd, len);
        if (r == 0) r = detail::check(::send(fd, buf, len, flags | MSG_NOSIGNAL));
        WEFT_TRACE_LINE("send(fd %d, %zu) -> %s", fd, len, WEFT_TRACE_RES(r));
        if (r != -EINTR || detail::interrupted(r)) return r;
    }
}

/// `sendfile(2)` of up to `len` bytes of `in_fd` from `*offset` (advanced) to socket
/// `fd`: bytes sent (0 = the file ended) or -errno; `EINTR` retried. Faults apply as
/// to `send`. It has no `MSG_NOSIGNAL`: the caller blocks SIGPIPE around it.
inline long sendfile(int fd, int in_fd, off_t* offset, std::size_t len) noexcept {
    for (;;) {
        long r = detail::inject(call::send, fd, len);
        if (r == 0) r = detail::check(::sendfile(fd, in_fd, offset, len));
        WEFT_TRACE_LINE("sendfile(fd %d, file fd %d, %zu) -> %s", fd, in_fd, len, WEFT_TRACE_RES(r));
        if (r != -EINTR || detail::interrupted(r)) return r;
    }
}

/// `sendmsg(2)` with `MSG_NOSIGNAL` always set: bytes written or -errno; `EINTR` retried.
/// (Vectored writes use it instead of `writev(2)`, which cannot suppress SIGPIPE.)
inline long sendmsg(int fd, const msghdr* msg, int flags) noexcept {
    auto real = [&](const msghdr* m) { return detail::check(::sendmsg(fd, m, flags | MSG_NOSIGNAL)); };
    for (;;) {
        long r = detail::vectored(call::sendmsg, fd, msg, real);
        WEFT_TRACE_LINE("sendmsg(fd %d, %zu entries) -> %s", fd, static_cast<std::size_t>(msg->msg_iovlen),
                        WEFT_TRACE_RES(r));
        if (r != -EINTR || detail::interrupted(r)) return r;
    }
}

/// `recvmsg(2)`: bytes read (0 = EOF) or -errno; `EINTR` retried.
inline long recvmsg(int fd, msghdr* msg, int flags) noexcept {
    auto real = [&](const msghdr* m) { return detail::check(::recvmsg(fd, const_cast<msghdr*>(m), flags)); };
    for (;;) {
        long r = detail::vectored(call::recvmsg, fd, msg, real);
        WEFT_TRACE_LINE("recvmsg(fd %d, %zu entries) -> %s", fd, static_cast<std::size_t>(msg->msg_iovlen),
                        WEFT_TRACE_RES(r));
        if (r != -EINTR || detail::interrupted(r)) return r;
    }
}

/// `recvmmsg(2)` of up to `n` datagrams (no timeout): how many arrived, or -errno; `EINTR`
/// retried. The fault hook sees it as a `recvmsg` site (errors only: a datagram cannot
/// be shortened).
inline int recvmmsg(int fd, mmsghdr* msgs, unsigned n, int flags) noexcept {
    for (;;) {
        std::size_t len = 1;
        long r = detail::inject(call::recvmsg, fd, len);
        if (r == 0) r = detail::check(::recvmmsg(fd, msgs, n, flags, nullptr));
        WEFT_TRACE_LINE("recvmmsg(fd %d, %u) -> %s", fd, n, WEFT_TRACE_RES(r));
        if (r != -EINTR || detail::interrupted(r)) return static_cast<int>(r);
    }
}

/// `accept4(2)`, the new fd always `CLOEXEC` (plus `flags`); returns the fd or -errno.
inline int accept(int fd, sockaddr* addr, socklen_t* addrlen, int flags) noexcept {
    for (;;) {
        std::size_t none = 0;
        int r = detail::inject(call::accept, fd, none);
        if (r == 0) r = static_cast<int>(detail::check(::accept4(fd, addr, addrlen, flags | SOCK_CLOEXEC)));
        WEFT_TRACE_LINE("accept4(fd %d) -> %s", fd, WEFT_TRACE_RES(r));
        if (r != -EINTR || detail::interrupted(r)) return r;
    }
}

/// `connect(2)`: 0, or -errno (`-EINPROGRESS` on a non-blocking socket).
///
/// Not retried on `EINTR`: the connection attempt continues in the kernel, so a second
/// `connect` would report `EALREADY`; the caller waits for writability instead.
inline int connect(int fd, const sockaddr* addr, socklen_t len) noexcept {
    std::size_t none = 0;
    int e;
    while ((e = detail::inject(call::connect, fd, none)) == -EINTR) {
        // An injected EINTR never reached the kernel: no attempt is under way, so it
        // is retried (a real one is not, see above).
    }
    if (e != 0) return e;
    int r = static_cast<int>(detail::check(::connect(fd, addr, len)));
    WEFT_TRACE_LINE("connect(fd %d) -> %s", fd, WEFT_TRACE_RES(r));
    return r == -EINTR ? -EINPROGRESS : r;
}

/// `socket(2)`, always `CLOEXEC`: the fd or -errno.
inline int socket(int domain, int type, int protocol) noexcept {
    std::size_t none = 0;
    if (int e = detail::inject(call::socket, -1, none)) return e;
    return static_cast<int>(detail::check(::socket(domain, type | SOCK_CLOEXEC, protocol)));
}

/// `socketpair(2)`, both fds always `CLOEXEC` (plus the flags in `type`): 0 or -errno.
inline int socketpair(int domain, int type, int protocol, int fds[2]) noexcept {
    std::size_t none = 0;
    if (int e = detail::inject(call::socket, -1, none)) return e;
    return static_cast<int>(detail::check(::socketpair(domain, type | SOCK_CLOEXEC, protocol, fds)));
}

/// `close(2)`; never retried (on Linux the fd is gone even when it reports `EINTR`).
inline int close(int fd) noexcept { return static_cast<int>(detail::check(::close(fd))); }

/// `setsockopt(2)` for an `int` option: 0 or -errno.
inline int setsockopt_int(int fd, int level, int name, int value) noexcept {
    return static_cast<int>(detail::check(::setsockopt(fd, level, name, &value, sizeof value)));
}

/// `setsockopt(2)` for an option of any type: 0 or -errno.
inline int setsockopt(int fd, int level, int name, const void* value, socklen_t len) noexcept {
    return static_cast<int>(detail::check(::setsockopt(fd, level, name, value, len)));
}

/// `getsockopt(2)` for an `int` option: the value (>= 0) or -errno.
inline int getsockopt_int(int fd, int level, int name, int& value) noexcept {
    socklen_t len = sizeof value;
    return static_cast<int>(detail::check(::getsockopt(fd, level, name, &value, &len)));
}

/// `bind(2)`: 0 or -errno.
inline int bind(int fd, const sockaddr* addr, socklen_t len) noexcept {
    return static_cast<int>(detail::check(::bind(fd, addr, len)));
}

/// `listen(2)`: 0 or -errno.
inline int listen(int fd, int backlog) noexcept { return static_cast<int>(detail::check(::listen(fd, backlog))); }

/// `shutdown(2)`: 0 or -errno.
inline int shutdown(int fd, int how) noexcept { return static_cast<int>(detail::check(::shutdown(fd, how))); }

/// `getsockname(2)`: 0 or -errno.
inline int getsockname(int fd, sockaddr* addr, socklen_t* len) noexcept {
    return static_cast<int>(detail::check(::getsockname(fd, addr, len)));
}

/// `getpeername(2)`: 0 or -errno (`-ENOTCONN` while a connect is in progress).
inline int getpeername(int fd, sockaddr* addr, socklen_t* len) noexcept {
    return static_cast<int>(detail::check(::getpeername(fd, addr, len)));
}

/// `open(2)` with `O_CLOEXEC` always added: the fd or -errno.
inline int open(const char* path, int flags) noexcept {
    for (;;) {
        int r = static_cast<int>(detail::check(::open(path, flags | O_CLOEXEC)));
        if (r != -EINTR || detail::interrupted(r)) return r;
    }
}

/// `eventfd(2)`, always `CLOEXEC` and non-blocking: the fd or -errno.
inline int eventfd(unsigned initial) noexcept {
    return static_cast<int>(detail::check(::eventfd(initial, EFD_CLOEXEC | EFD_NONBLOCK)));
}

/// `poll(2)`: the number of ready entries or -errno (`-EINTR` is returned, not retried:
/// the caller's timeout would otherwise restart).
inline int poll(pollfd* fds, nfds_t n, int timeout_ms) noexcept {
    int r = static_cast<int>(detail::check(::poll(fds, n, timeout_ms)));
    WEFT_TRACE_LINE("poll(%zu fds, %d ms) -> %s", static_cast<std::size_t>(n), timeout_ms, WEFT_TRACE_RES(r));
    return r;
}

/// `read(2)` on an eventfd or pipe: bytes or -errno; `EINTR` retried.
inline long read(int fd, void* buf, std::size_t len) noexcept {
    for (;;) {
        long r = detail::check(::read(fd, buf, len));
        if (r != -EINTR || detail::interrupted(r)) return r;
    }
}

/// `write(2)` on an eventfd or pipe: bytes or -errno; `EINTR` retried.
inline long write(int fd, const void* buf, std::size_t len) noexcept {
    for (;;) {
        long r = detail::check(::write(fd, buf, len));
        if (r != -EINTR || detail::interrupted(r)) return r;
    }
}

}  // namespace weft::sys

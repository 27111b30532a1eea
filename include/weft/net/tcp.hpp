// SPDX-License-Identifier: MIT
/// @file
/// @brief TCP: `tcp_listener<Backend>` and `tcp_stream<Backend>`.
#pragma once

#include <cerrno>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <memory>
#include <optional>
#include <ranges>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "../cancel.hpp"
#include "../io.hpp"
#include "../loop.hpp"
#include "../result.hpp"
#include "../sys.hpp"
#include "../task.hpp"
#include "endpoint.hpp"
#include "resolve.hpp"

namespace weft {

/// A contiguous range of byte-sized, trivially copyable elements: `std::array<char, N>`,
/// `std::vector<std::byte>`, `std::string`, `std::span<unsigned char>`, ...
template <class R>
concept byte_buffer = std::ranges::contiguous_range<R> && std::ranges::sized_range<R> &&
                          sizeof(std::ranges::range_value_t<R>) == 1 &&
                      std::is_trivially_copyable_v<std::ranges::range_value_t<R>>;

/// A `byte_buffer` whose elements may be written (a read target).
template <class R>
concept mutable_byte_buffer =
    byte_buffer<R> && !std::is_const_v<std::remove_reference_t<std::ranges::range_reference_t<R>>>;

/// The bytes of `r`, writable.
template <mutable_byte_buffer R>
std::span<std::byte> as_writable_bytes(R&& r) noexcept {
    return {reinterpret_cast<std::byte*>(std::ranges::data(r)), std::ranges::size(r)};
}
/// The bytes of `r`, read-only.
template <byte_buffer R>
std::span<const std::byte> as_bytes(R&& r) noexcept {
    return {reinterpret_cast<const std::byte*>(std::ranges::data(r)), std::ranges::size(r)};
}

template <class Backend>
class basic_stream;
template <class Backend>
class tcp_stream;

namespace detail {

/// Internal result code for "a Unix listener's backlog is full" (a non-blocking connect
/// on `AF_UNIX` fails with `EAGAIN`, which inside weft means "not yet").
inline constexpr int backlog_full_res = -4098;

/// Non-blocking connect to an `Endpoint` (`endpoint` or `unix_endpoint`): `connect()`
/// once, then wait for writability and read `SO_ERROR`.
template <class Endpoint>
struct basic_connect_op {
    int fd;
    Endpoint peer;
    bool started = false;
    static constexpr interest dir = interest::write;
    int try_now() noexcept {
        if (!started) {
            started = true;
            int r = sys::connect(fd, peer.data(), peer.size());
            if (r == -EAGAIN) return backlog_full_res;  // AF_UNIX: nothing would wake a retry
            return r == -EINPROGRESS ? -EAGAIN : r;
        }
        int err = 0;
        if (int r = sys::getsockopt_int(fd, SOL_SOCKET, SO_ERROR, err); r < 0) return r;
        if (err != 0) return -err;
        sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int r = sys::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len);
        return r == -ENOTCONN ? -EAGAIN : r;  // woken before the handshake finished
    }
    template <class P>
    void prepare(P& p) noexcept {
        p.connect(fd, peer.data(), peer.size());
    }
    bool drained(int) const noexcept { return false; }
    result<void> make(int res) const noexcept {
        if (res == backlog_full_res) return std::make_error_code(std::errc::resource_unavailable_try_again);
        return to_result(res);
    }
};
/// Connect of a TCP socket.
using connect_op = basic_connect_op<endpoint>;

/// Accepts one connection and adopts it as a `Stream` (`tcp_stream` or `unix_stream`). On `EMFILE`/`ENFILE` it
/// gives up a reserve fd to accept the pending connection and close it at once, so
/// the peer sees a close instead of hanging and the listener does not stay readable
/// forever (a busy loop); the error is still reported for each shed connection.
template <class Backend, class Stream = tcp_stream<Backend>>
struct accept_op {
    int fd;
    int* reserve;
    Backend* backend;
    bool poll_first = false;  ///< proactor: wait for a pending connection before accepting
    static constexpr interest dir = interest::read;
    int try_now() noexcept {
        for (;;) {
            int r = sys::accept(fd, nullptr, nullptr, Backend::socket_flags);
            if (r == -ECONNABORTED) continue;  // that peer gave up in the queue; try the next
            if ((r == -EMFILE || r == -ENFILE) && shed()) return -EAGAIN;
            return r;
        }
    }
    template <class P>
    void prepare(P& p) noexcept {
        if (poll_first)
            p.poll(fd, POLLIN);
        else
            p.accept(fd, Backend::socket_flags);
    }
    /// Proactor: an aborted peer means "accept again"; a phantom EMFILE (nothing was
    /// pending) means "wait until a connection is pending, then accept again" (accepting
    /// again at once would fail again at once: a busy loop through the kernel).
    bool finish(int& res) noexcept {
        if (poll_first) {
            poll_first = false;
            return res < 0;  // the poll failed: report it; else accept now
        }
        if (res == -ECONNABORTED) return false;
        if ((res == -EMFILE || res == -ENFILE) && shed()) {
            poll_first = true;
            return false;
        }
        return true;
    }
    /// The EMFILE trick: spend the reserve fd to accept one pending connection and close
    /// it. True when nothing was pending, which accept(2) cannot tell apart (it reserves
    /// the fd before it looks at the queue): then wait for a connection like any EAGAIN
    /// instead of reporting, and spinning on, a phantom failure.
    bool shed() noexcept {
        if (*reserve < 0) return false;
        // Look before accepting: a completion backend's listener is a blocking socket.
        pollfd pending{fd, POLLIN, 0};
        bool waiting = sys::poll(&pending, 1, 0) > 0;
        sys::close(*reserve);
        int c = waiting ? sys::accept(fd, nullptr, nullptr, SOCK_NONBLOCK) : -EAGAIN;
        if (c >= 0) sys::close(c);
        *reserve = sys::open("/dev/null", O_RDONLY);
        return c == -EAGAIN;
    }
    bool drained(int) const noexcept { return false; }
    /// Closes a connection that was accepted but never handed to anyone (a result of
    /// the proactor's readiness poll is a poll mask, not a connection).
    void discard(int res) const noexcept {
        if (res >= 0 && !poll_first) sys::close(res);
    }
    result<Stream> make(int res) const noexcept {
        if (res < 0) return errno_code(-res);
        return Stream::adopt(*backend, res);
    }
};

}  // namespace detail

/// What every socket object has: its fd and the backend it is attached to, moves,
/// close (also in the destructor), and the kernel's buffer sizes. The sockets
/// (`basic_stream`, `basic_listener`, `basic_datagram_socket`) build on it.
template <class Backend>
class basic_socket {
public:
    /// A closed socket.
    basic_socket() noexcept = default;
    /// Takes over `o`'s socket; `o` becomes closed.
    basic_socket(basic_socket&& o) noexcept : backend_(o.backend_), fd_(std::exchange(o.fd_, -1)) {}
    /// Closes the current socket and takes over `o`'s.
    basic_socket& operator=(basic_socket&& o) noexcept {
        if (this != &o) {
            (void)close();
            backend_ = o.backend_;
            fd_ = std::exchange(o.fd_, -1);
        }
        return *this;
    }
    /// Closes the socket (pending operations complete with `operation_canceled`).
    ~basic_socket() { (void)close(); }

    /// Closes the socket; operations still pending on it complete with `operation_canceled`.
    result<void> close() noexcept {
        if (fd_ < 0) return {};
        backend_->detach(fd_);
        return detail::to_result(sys::close(std::exchange(fd_, -1)));
    }

    /// Gives up the socket without closing it: detaches it from its loop's backend and
    /// returns the fd, which the caller now owns (to adopt on another loop: a socket
    /// belongs to one loop at a time). Refused with `EBUSY`, the socket unchanged, while
    /// an operation is pending on it, or on io_uring while a `receive()` multishot holds
    /// it (the kernel may hold its next bytes in a provided buffer: use `read_some`
    /// before a move). `EBADF` when closed.
    result<int> release() noexcept {
        if (fd_ < 0) return detail::errno_code(EBADF);
        if constexpr (requires(const Backend& b) { b.busy(0); })
            if (backend_->busy(fd_)) return detail::errno_code(EBUSY);
        backend_->detach(fd_);
        return std::exchange(fd_, -1);
    }

    /// Sets the kernel's send buffer (`SO_SNDBUF`; the kernel doubles the value and caps
    /// it at `net.core.wmem_max`). Smaller means back-pressure sooner.
    result<void> set_send_buffer_size(int bytes) noexcept {
        return detail::to_result(sys::setsockopt_int(fd_, SOL_SOCKET, SO_SNDBUF, bytes));
    }
    /// Sets the kernel's receive buffer (`SO_RCVBUF`; doubled and capped at
    /// `net.core.rmem_max`). It bounds the window the peer may fill.
    result<void> set_receive_buffer_size(int bytes) noexcept {
        return detail::to_result(sys::setsockopt_int(fd_, SOL_SOCKET, SO_RCVBUF, bytes));
    }
    /// The kernel's send buffer size in bytes (`SO_SNDBUF`, as the kernel reports it).
    result<int> send_buffer_size() const noexcept { return int_option(SOL_SOCKET, SO_SNDBUF); }
    /// The kernel's receive buffer size in bytes (`SO_RCVBUF`).
    result<int> receive_buffer_size() const noexcept { return int_option(SOL_SOCKET, SO_RCVBUF); }

    /// True while this object owns a socket.
    bool is_open() const noexcept { return fd_ >= 0; }
    /// The socket's fd (still owned by this object).
    int native_handle() const noexcept { return fd_; }
    /// The backend the socket is attached to (null if it never was): for operations
    /// built outside the socket classes, such as `send_file`.
    Backend* backend() const noexcept { return backend_; }

protected:
    /// Takes over the attached socket `fd`.
    basic_socket(Backend& backend, int fd) noexcept : backend_(&backend), fd_(fd) {}
    /// Attaches `fd` to `backend` and wraps it in a `S` (a derived socket type, which makes
    /// this class a friend); on error the fd is closed.
    template <class S>
    static result<S> adopt_as(Backend& backend, int fd) noexcept {
        if (int err = backend.attach(fd); err < 0) {
            sys::close(fd);
            return detail::errno_code(-err);
        }
        return S(backend, fd);
    }
    /// The value of an `int` socket option.
    result<int> int_option(int level, int option) const noexcept {
        int v = 0;
        if (int r = sys::getsockopt_int(fd_, level, option, v); r < 0) return detail::errno_code(-r);
        return v;
    }
    /// The socket's own (`getsockname`) or its peer's (`getpeername`) address, as an `Endpoint`.
    template <class Endpoint>
    result<Endpoint> address(int (*get)(int, sockaddr*, socklen_t*) noexcept) const noexcept {
        sockaddr_storage ss;
        socklen_t len = sizeof ss;
        if (int r = get(fd_, reinterpret_cast<sockaddr*>(&ss), &len); r < 0) return detail::errno_code(-r);
        return Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
    }
    Backend* backend_ = nullptr;  ///< the loop's backend (null while closed and never opened)
    int fd_ = -1;                 ///< the socket, or -1
};

/// A connected stream socket (TCP or Unix) on the backend of a `loop<Backend>`: the IO
/// operations and options every stream has. `tcp_stream` and `unix_stream` add their own.
///
/// Move-only; closes its fd when destroyed, and must not outlive its loop. At most one
/// read-side and one write-side operation may be pending at a time: a second one of
/// the same direction is a programming error, reported as `EBUSY` when it has to wait
/// (one that can complete at once is not detected). Every IO operation returns
/// `result<T>`: EOF is 0 bytes, a peer reset is `ECONNRESET`, a write to a vanished
/// peer is `EPIPE` (never a SIGPIPE).
template <class Backend>
class basic_stream : public basic_socket<Backend> {
public:
    /// A closed stream.
    basic_stream() noexcept = default;

    /// Reads what is available, at least 1 byte; yields the count, 0 at EOF.
    template <mutable_byte_buffer B>
    auto read_some(B&& buf) noexcept {
        return io_awaiter<Backend, detail::recv_op>(this->backend_, {this->fd_, as_writable_bytes(buf)});
    }
    /// Writes some of `buf` (at least 1 byte); yields the count.
    template <byte_buffer B>
    auto write_some(B&& buf) noexcept {
        return io_awaiter<Backend, detail::send_op>(this->backend_, {this->fd_, as_bytes(buf)});
    }
    /// Reads exactly `buf.size()` bytes; `weft::errc::eof` if the peer closes first.
    template <mutable_byte_buffer B>
    auto read_exact(B&& buf) noexcept {
        return io_awaiter<Backend, detail::read_exact_op>(this->backend_, {this->fd_, as_writable_bytes(buf)});
    }
    /// Writes all of `buf`, looping over partial writes; yields `buf.size()`.
    template <byte_buffer B>
    auto write_all(B&& buf) noexcept {
        return io_awaiter<Backend, detail::write_all_op>(this->backend_, {this->fd_, as_bytes(buf)});
    }
    /// Receives into a buffer the loop provides and yields it as a `buffer_lease` (empty
    /// at EOF). Until data arrives no buffer is held, so an idle connection costs no
    /// read buffer; on io_uring the kernel picks it from a registered buffer ring. While
    /// every buffer is on loan the receive waits for one to come back. A lease must not
    /// outlive its loop.
    auto receive() noexcept {
        return io_awaiter<Backend, detail::receive_op<Backend>>(this->backend_, {this->fd_, this->backend_});
    }
    /// Vectored read (scatter) into the entries of `iov`, in order: bytes read, 0 at EOF.
    /// The entries and the memory they name must stay alive until the read completes.
    auto read_some(std::span<iovec> iov) noexcept {
        return io_awaiter<Backend, detail::readv_op>(this->backend_, {this->fd_, iov});
    }
    /// Vectored write (gather) of some of the entries of `iov`: bytes written.
    auto write_some(std::span<iovec> iov) noexcept {
        return io_awaiter<Backend, detail::writev_op>(this->backend_, {this->fd_, iov});
    }
    /// Vectored write of every entry of `iov` (a header and a body, say), looping over
    /// partial writes; any number of entries (more than `IOV_MAX` is fine). The entries
    /// are advanced in place as bytes go out. Yields the total written.
    auto write_all(std::span<iovec> iov) noexcept {
        return io_awaiter<Backend, detail::writev_all_op>(this->backend_, {this->fd_, iov});
    }
    /// Waits until the socket is readable (data, EOF or error), reading nothing.
    auto wait_readable() noexcept {
        return io_awaiter<Backend, detail::wait_op>(this->backend_, {this->fd_, interest::read});
    }
    /// Waits until the socket is writable.
    auto wait_writable() noexcept {
        return io_awaiter<Backend, detail::wait_op>(this->backend_, {this->fd_, interest::write});
    }

    /// Half-closes: `SHUT_WR` (the default) sends FIN and keeps reading possible.
    result<void> shutdown(int how = SHUT_WR) noexcept {
        int r = sys::shutdown(this->fd_, how);
        // A read parked on a reactor finds EOF now; not every model reports it (sigio
        // raises no signal for a local shutdown), so the backend is told to retry it.
        if constexpr (requires(Backend& b) { b.kick(0, interest::read); })
            if (r == 0 && how != SHUT_WR && this->backend_) this->backend_->kick(this->fd_, interest::read);
        return detail::to_result(r);
    }

    /// Sets `SO_LINGER`: with a value, `close()` waits up to that long for unsent data to
    /// go out (on a non-blocking socket the kernel still finishes in the background); a
    /// value of 0 makes `close()` abortive (see `reset()`). Without one (the default),
    /// close returns at once and the kernel sends the rest.
    result<void> set_linger(std::optional<std::chrono::seconds> timeout) noexcept {
        ::linger l{timeout ? 1 : 0, timeout ? static_cast<int>(timeout->count()) : 0};
        return detail::to_result(sys::setsockopt(this->fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l));
    }

    /// Abortive close: the peer gets a reset (`ECONNRESET`) instead of FIN, unsent data
    /// is dropped, and no TIME_WAIT is left behind. For a peer that misbehaves or a
    /// server shedding load. Pending operations complete with `operation_canceled`.
    result<void> reset() noexcept {
        if (this->fd_ < 0) return {};
        if (auto r = set_linger(std::chrono::seconds(0)); !r) return r;
        return this->close();
    }

protected:
    /// Takes over the attached socket `fd`.
    basic_stream(Backend& backend, int fd) noexcept : basic_socket<Backend>(backend, fd) {}
    /// Opens a stream socket of `peer`'s family and connects it to `peer`, as an `S`
    /// (`tcp_stream`, `unix_stream`): the body of their `connect`s.
    template <class S, class Endpoint>
    static task<result<S>> connect_as(loop<Backend>& l, Endpoint peer) {
        int fd = sys::socket(peer.family(), SOCK_STREAM | Backend::socket_flags, 0);
        if (fd < 0) co_return detail::errno_code(-fd);
        auto s = S::adopt(l.backend(), fd);
        if (!s) co_return s;
        result<void> r = co_await io_awaiter<Backend, detail::basic_connect_op<Endpoint>>(&l.backend(), {fd, peer});
        if (!r) co_return r.error();
        co_return s;
    }
};

/// A connected TCP socket on the backend of a `loop<Backend>`.
///
/// Move-only; closes its fd when destroyed, and must not outlive its loop. At most one
/// read-side and one write-side operation may be pending at a time: a second one of
/// the same direction is a programming error, reported as `EBUSY` when it has to wait
/// (one that can complete at once is not detected). Every IO operation returns
/// `result<T>`: EOF is 0 bytes, a peer reset is `ECONNRESET`, a write to a vanished
/// peer is `EPIPE` (never a SIGPIPE). The IO operations are `basic_stream`'s.
template <class Backend>
class tcp_stream : public basic_stream<Backend> {
public:
    /// The address type of its ends.
    using endpoint_type = endpoint;
    /// A closed stream.
    tcp_stream() noexcept = default;

    /// Adopts a connected socket `fd` (created with `Backend::socket_flags`); on error
    /// the fd is closed.
    static result<tcp_stream> adopt(Backend& backend, int fd) noexcept {
        return basic_stream<Backend>::template adopt_as<tcp_stream>(backend, fd);
    }

    /// Connects to `peer`. Fails with `connection_refused` when nobody listens,
    /// `operation_canceled` when the task is cancelled (e.g. by `with_timeout`).
    static task<result<tcp_stream>> connect(loop<Backend>& l, endpoint peer) {
        return basic_stream<Backend>::template connect_as<tcp_stream>(l, peer);
    }

    /// Connects to `"host:port"` (`"localhost:7000"`, `"[::1]:80"`, `"example.org:http"`;
    /// see `split_host_port`): resolves the name off the loop thread, then tries each
    /// address in the system's order of preference, each for at most `attempt_timeout`.
    /// Yields the first connection made, or the last attempt's error (`timed_out` for an
    /// attempt that ran out of time), a malformed-text error (`errc::endpoint_*`), or a
    /// `resolve_category()` error. Cancelled by the task's stop token.
    static task<result<tcp_stream>> connect(loop<Backend>& l, std::string host_and_port,
                                            std::chrono::milliseconds attempt_timeout = std::chrono::seconds(5)) {
        auto hp = split_host_port(host_and_port);
        if (!hp) co_return hp.error();
        auto addresses = co_await resolve(hp->host, hp->service);
        if (!addresses) co_return addresses.error();
        std::error_code last = errc::host_not_found;
        for (const endpoint& ep : *addresses) {
            result<tcp_stream> s = co_await with_timeout(connect(l, ep), attempt_timeout);
            if (s) co_return s;
            last = s.error();
            if (last == std::errc::operation_canceled) break;  // the caller gave up: no next address
        }
        co_return last;
    }

    /// Sets `TCP_NODELAY` (no Nagle delay for small writes).
    result<void> set_nodelay(bool on = true) noexcept {
        return detail::to_result(sys::setsockopt_int(this->fd_, IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0));
    }

    /// Turns TCP keep-alive probes on or off (`SO_KEEPALIVE`). When `idle` is positive,
    /// also sets the idle time before the first probe (`TCP_KEEPIDLE`), the time between
    /// probes (`TCP_KEEPINTVL`) and how many unanswered probes end the connection
    /// (`TCP_KEEPCNT`): a dead peer is then noticed (`ETIMEDOUT`) after about
    /// idle + interval x count.
    result<void> set_keepalive(bool on, std::chrono::seconds idle = {}, std::chrono::seconds interval = {},
                               int count = 0) noexcept {
        int r = sys::setsockopt_int(this->fd_, SOL_SOCKET, SO_KEEPALIVE, on ? 1 : 0);
        if (r == 0 && on && idle.count() > 0)
            r = sys::setsockopt_int(this->fd_, IPPROTO_TCP, TCP_KEEPIDLE, static_cast<int>(idle.count()));
        if (r == 0 && on && interval.count() > 0)
            r = sys::setsockopt_int(this->fd_, IPPROTO_TCP, TCP_KEEPINTVL, static_cast<int>(interval.count()));
        if (r == 0 && on && count > 0) r = sys::setsockopt_int(this->fd_, IPPROTO_TCP, TCP_KEEPCNT, count);
        return detail::to_result(r);
    }

    /// The local address of the connection.
    result<endpoint> local_endpoint() const noexcept { return this->template address<endpoint>(&sys::getsockname); }
    /// The peer's address.
    result<endpoint> remote_endpoint() const noexcept { return this->template address<endpoint>(&sys::getpeername); }

private:
    friend class basic_socket<Backend>;
    tcp_stream(Backend& backend, int fd) noexcept : basic_stream<Backend>(backend, fd) {}
};

/// How a listener's `bind` sets up its socket.
struct listen_options {
    int backlog = SOMAXCONN;       ///< length of the kernel's accept queue
    bool reuse_address = true;     ///< TCP: `SO_REUSEADDR`, rebind at once after a restart
    bool reuse_port = false;       ///< TCP: `SO_REUSEPORT`, several listeners share the port
    bool unlink_existing = false;  ///< Unix path: remove a socket file left by an earlier run first
};

/// A listening stream socket; `accept()` yields connected `Stream`s. Use it as
/// `basic_listener<Backend>` or `unix_listener<Backend>`.
template <class Backend, class Stream>
class basic_listener : public basic_socket<Backend> {
public:
    /// The address type it binds to.
    using endpoint_type = typename Stream::endpoint_type;
    /// A closed listener.
    basic_listener() noexcept = default;
    /// Takes over `o`'s socket.
    basic_listener(basic_listener&& o) noexcept
        : basic_socket<Backend>(std::move(o)), reserve_(std::move(o.reserve_)) {}
    /// Closes the current socket and takes over `o`'s.
    basic_listener& operator=(basic_listener&& o) noexcept {
        if (this != &o) {
            (void)close();
            basic_socket<Backend>::operator=(std::move(o));
            reserve_ = std::move(o.reserve_);
        }
        return *this;
    }
    /// Closes the socket.
    ~basic_listener() { (void)close(); }

    /// Binds to `local` (port 0 = any free port; read it back with `local_endpoint()`)
    /// and listens. Errors: `address_in_use`, `permission_denied`, `too_many_files_open`...
    static result<basic_listener> bind(loop<Backend>& l, const endpoint_type& local,
                                       listen_options opts = {}) noexcept {
        int fd = sys::socket(local.family(), SOCK_STREAM | Backend::socket_flags, 0);
        if (fd < 0) return detail::errno_code(-fd);
        int r = 0;
        const bool ip = local.family() != AF_UNIX;
        if (ip && opts.reuse_address) r = sys::setsockopt_int(fd, SOL_SOCKET, SO_REUSEADDR, 1);
        if (r == 0 && ip && opts.reuse_port) r = sys::setsockopt_int(fd, SOL_SOCKET, SO_REUSEPORT, 1);
        if constexpr (requires { local.remove_file(); })
            if (r == 0 && opts.unlink_existing) r = local.remove_file();
        if (r == 0) r = sys::bind(fd, local.data(), local.size());
        if (r == 0) r = sys::listen(fd, opts.backlog);
        if (r < 0) {
            sys::close(fd);
            return detail::errno_code(-r);
        }
        return adopt(l, fd);  // registers it and takes the reserve fd
    }

    /// Binds to `"host:port"` (`"localhost:7000"`, `"[::1]:0"`, `":7000"` for every
    /// interface) and listens: the name is resolved on the calling thread (start-up
    /// code; `localhost` and literals never ask the network), and the first address
    /// that binds is used. Errors: a malformed-text error (`errc::endpoint_*`), a
    /// `resolve_category()` error, or the last address's bind error.
    static result<basic_listener> bind(loop<Backend>& l, std::string_view host_and_port,
                                       listen_options opts = {}) requires std::same_as<endpoint_type, endpoint> {
        return detail::bind_by_name(host_and_port, SOCK_STREAM, [&](const endpoint& ep) { return bind(l, ep, opts); });
    }

    /// Adopts a socket that is already bound and listening (created with
    /// `Backend::socket_flags`, e.g. inherited from a supervisor); on error the fd is
    /// closed. Errors: those of `attach` (`fd_too_large` on select), `EMFILE` for the
    /// reserve fd.
    static result<basic_listener> adopt(loop<Backend>& l, int fd) noexcept {
        basic_listener t(l.backend(), fd);
        if (int r = l.backend().attach(fd); r < 0) return detail::errno_code(-r);
        int reserve = sys::open("/dev/null", O_RDONLY);
        if (reserve < 0) return detail::errno_code(-reserve);
        try {
            t.reserve_ = std::make_unique<int>(reserve);
        } catch (...) {
            sys::close(reserve);
            return detail::errno_code(ENOMEM);
        }
        return t;
    }

    /// Waits for the next connection; yields a `Stream`. `EMFILE`/`ENFILE` are
    /// reported after shedding the pending connection (see `detail::accept_op`): back off
    /// briefly before accepting again.
    auto accept() noexcept {
        return io_awaiter<Backend, detail::accept_op<Backend, Stream>>(this->backend_,
                                                                       {this->fd_, reserve_.get(), this->backend_});
    }

    /// The bound address, with the port the kernel chose for port 0.
    result<endpoint_type> local_endpoint() const noexcept {
        return this->template address<endpoint_type>(&sys::getsockname);
    }

    /// Stops listening; a pending `accept` completes with `operation_canceled`.
    result<void> close() noexcept {
        if (reserve_ && *reserve_ >= 0) sys::close(std::exchange(*reserve_, -1));
        return basic_socket<Backend>::close();
    }

private:
    basic_listener(Backend& backend, int fd) noexcept : basic_socket<Backend>(backend, fd) {}
    /// The spare fd given up on EMFILE. On the heap so a pending accept's pointer to it
    /// stays valid if the listener object is moved.
    std::unique_ptr<int> reserve_;
};

/// A listening TCP socket; `accept()` yields connected `tcp_stream`s.
template <class Backend>
using tcp_listener = basic_listener<Backend, tcp_stream<Backend>>;

}  // namespace weft

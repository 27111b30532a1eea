// SPDX-License-Identifier: MIT
/// @file
/// @brief TCP: `tcp_listener<Backend>` and `tcp_stream<Backend>`.
#pragma once

#include <cerrno>
#include <cstddef>
#include <memory>
#include <ranges>
#include <span>
#include <type_traits>
#include <utility>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "../io.hpp"
#include "../loop.hpp"
#include "../result.hpp"
#include "../sys.hpp"
#include "../task.hpp"
#include "endpoint.hpp"

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
class tcp_stream;

namespace detail {

/// Non-blocking connect: `connect()` once, then wait for writability and read `SO_ERROR`.
struct connect_op {
    int fd;
    endpoint peer;
    bool started = false;
    static constexpr interest dir = interest::write;
    int try_now() noexcept {
        if (!started) {
            started = true;
            int r = sys::connect(fd, peer.data(), peer.size());
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
    result<void> make(int res) const noexcept { return to_result(res); }
};

/// Accepts one connection and adopts it as a `tcp_stream`. On `EMFILE`/`ENFILE` it
/// gives up a reserve fd to accept the pending connection and close it at once, so
/// the peer sees a close instead of hanging and the listener does not stay readable
/// forever (a busy loop); the error is still reported for each shed connection.
template <class Backend>
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
    result<tcp_stream<Backend>> make(int res) const noexcept {
        if (res < 0) return errno_code(-res);
        return tcp_stream<Backend>::adopt(*backend, res);
    }
};

}  // namespace detail

/// A connected TCP socket on the backend of a `loop<Backend>`.
///
/// Move-only; closes its fd when destroyed, and must not outlive its loop. At most one
/// read-side and one write-side operation may be pending at a time: a second one of
/// the same direction is a programming error, reported as `EBUSY` when it has to wait
/// (one that can complete at once is not detected). Every IO operation returns
/// `result<T>`: EOF is 0 bytes, a peer reset is `ECONNRESET`, a write to a vanished
/// peer is `EPIPE` (never a SIGPIPE).
template <class Backend>
class tcp_stream {
public:
    /// A closed stream.
    tcp_stream() noexcept = default;
    /// Takes over `o`'s socket; `o` becomes closed.
    tcp_stream(tcp_stream&& o) noexcept : backend_(o.backend_), fd_(std::exchange(o.fd_, -1)) {}
    /// Closes the current socket and takes over `o`'s.
    tcp_stream& operator=(tcp_stream&& o) noexcept {
        if (this != &o) {
            (void)close();
            backend_ = o.backend_;
            fd_ = std::exchange(o.fd_, -1);
        }
        return *this;
    }
    /// Closes the socket (pending operations complete with `operation_canceled`).
    ~tcp_stream() { (void)close(); }

    /// Adopts a connected socket `fd` (created with `Backend::socket_flags`); on error
    /// the fd is closed.
    static result<tcp_stream> adopt(Backend& backend, int fd) noexcept {
        if (int err = backend.attach(fd); err < 0) {
            sys::close(fd);
            return detail::errno_code(-err);
        }
        return tcp_stream(backend, fd);
    }

    /// Connects to `peer`. Fails with `connection_refused` when nobody listens,
    /// `operation_canceled` when the task is cancelled (e.g. by `with_timeout`).
    static task<result<tcp_stream>> connect(loop<Backend>& l, endpoint peer) {
        int fd = sys::socket(peer.family(), SOCK_STREAM | Backend::socket_flags, 0);
        if (fd < 0) co_return detail::errno_code(-fd);
        auto s = adopt(l.backend(), fd);
        if (!s) co_return s;
        result<void> r = co_await io_awaiter<Backend, detail::connect_op>(&l.backend(), {fd, peer});
        if (!r) co_return r.error();
        co_return s;
    }

    /// Reads what is available, at least 1 byte; yields the count, 0 at EOF.
    template <mutable_byte_buffer B>
    auto read_some(B&& buf) noexcept {
        return io_awaiter<Backend, detail::recv_op>(backend_, {fd_, as_writable_bytes(buf)});
    }
    /// Writes some of `buf` (at least 1 byte); yields the count.
    template <byte_buffer B>
    auto write_some(B&& buf) noexcept {
        return io_awaiter<Backend, detail::send_op>(backend_, {fd_, as_bytes(buf)});
    }
    /// Reads exactly `buf.size()` bytes; `weft::errc::eof` if the peer closes first.
    template <mutable_byte_buffer B>
    auto read_exact(B&& buf) noexcept {
        return io_awaiter<Backend, detail::read_exact_op>(backend_, {fd_, as_writable_bytes(buf)});
    }
    /// Writes all of `buf`, looping over partial writes; yields `buf.size()`.
    template <byte_buffer B>
    auto write_all(B&& buf) noexcept {
        return io_awaiter<Backend, detail::write_all_op>(backend_, {fd_, as_bytes(buf)});
    }
    /// Receives into a buffer the loop provides and yields it as a `buffer_lease` (empty
    /// at EOF). Until data arrives no buffer is held, so an idle connection costs no
    /// read buffer; on io_uring the kernel picks it from a registered buffer ring. While
    /// every buffer is on loan the receive waits for one to come back. A lease must not
    /// outlive its loop.
    auto receive() noexcept { return io_awaiter<Backend, detail::receive_op<Backend>>(backend_, {fd_, backend_}); }
    /// Vectored read (scatter) into the entries of `iov`, in order: bytes read, 0 at EOF.
    /// The entries and the memory they name must stay alive until the read completes.
    auto read_some(std::span<iovec> iov) noexcept {
        return io_awaiter<Backend, detail::readv_op>(backend_, {fd_, iov});
    }
    /// Vectored write (gather) of some of the entries of `iov`: bytes written.
    auto write_some(std::span<iovec> iov) noexcept {
        return io_awaiter<Backend, detail::writev_op>(backend_, {fd_, iov});
    }
    /// Vectored write of every entry of `iov` (a header and a body, say), looping over
    /// partial writes; any number of entries (more than `IOV_MAX` is fine). The entries
    /// are advanced in place as bytes go out. Yields the total written.
    auto write_all(std::span<iovec> iov) noexcept {
        return io_awaiter<Backend, detail::writev_all_op>(backend_, {fd_, iov});
    }
    /// Waits until the socket is readable (data, EOF or error), reading nothing.
    auto wait_readable() noexcept { return io_awaiter<Backend, detail::wait_op>(backend_, {fd_, interest::read}); }
    /// Waits until the socket is writable.
    auto wait_writable() noexcept { return io_awaiter<Backend, detail::wait_op>(backend_, {fd_, interest::write}); }

    /// Half-closes: `SHUT_WR` (the default) sends FIN and keeps reading possible.
    result<void> shutdown(int how = SHUT_WR) noexcept { return detail::to_result(sys::shutdown(fd_, how)); }

    /// Closes the socket; operations still pending on it complete with `operation_canceled`.
    result<void> close() noexcept {
        if (fd_ < 0) return {};
        backend_->detach(fd_);
        return detail::to_result(sys::close(std::exchange(fd_, -1)));
    }

    /// Sets `TCP_NODELAY` (no Nagle delay for small writes).
    result<void> set_nodelay(bool on = true) noexcept {
        return detail::to_result(sys::setsockopt_int(fd_, IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0));
    }

    /// The local address of the connection.
    result<endpoint> local_endpoint() const noexcept { return name(&sys::getsockname); }
    /// The peer's address.
    result<endpoint> remote_endpoint() const noexcept { return name(&sys::getpeername); }

    /// True while the stream owns a socket.
    bool is_open() const noexcept { return fd_ >= 0; }
    /// The socket's fd (still owned by the stream).
    int native_handle() const noexcept { return fd_; }

private:
    tcp_stream(Backend& backend, int fd) noexcept : backend_(&backend), fd_(fd) {}
    result<endpoint> name(int (*get)(int, sockaddr*, socklen_t*) noexcept) const noexcept {
        sockaddr_storage ss;
        socklen_t len = sizeof ss;
        if (int r = get(fd_, reinterpret_cast<sockaddr*>(&ss), &len); r < 0) return detail::errno_code(-r);
        return endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
    }
    Backend* backend_ = nullptr;
    int fd_ = -1;
};

/// How `tcp_listener::bind` sets up its socket.
struct listen_options {
    int backlog = SOMAXCONN;    ///< length of the kernel's accept queue
    bool reuse_address = true;  ///< `SO_REUSEADDR`: rebind at once after a restart
    bool reuse_port = false;    ///< `SO_REUSEPORT`: several listeners share the port
};

/// A listening TCP socket; `accept()` yields connected `tcp_stream`s.
template <class Backend>
class tcp_listener {
public:
    /// A closed listener.
    tcp_listener() noexcept = default;
    /// Takes over `o`'s socket.
    tcp_listener(tcp_listener&& o) noexcept
        : backend_(o.backend_), fd_(std::exchange(o.fd_, -1)), reserve_(std::move(o.reserve_)) {}
    /// Closes the current socket and takes over `o`'s.
    tcp_listener& operator=(tcp_listener&& o) noexcept {
        if (this != &o) {
            (void)close();
            backend_ = o.backend_;
            fd_ = std::exchange(o.fd_, -1);
            reserve_ = std::move(o.reserve_);
        }
        return *this;
    }
    /// Closes the socket.
    ~tcp_listener() { (void)close(); }

    /// Binds to `local` (port 0 = any free port; read it back with `local_endpoint()`)
    /// and listens. Errors: `address_in_use`, `permission_denied`, `too_many_files_open`...
    static result<tcp_listener> bind(loop<Backend>& l, const endpoint& local, listen_options opts = {}) noexcept {
        int fd = sys::socket(local.family(), SOCK_STREAM | Backend::socket_flags, 0);
        if (fd < 0) return detail::errno_code(-fd);
        int r = 0;
        if (opts.reuse_address) r = sys::setsockopt_int(fd, SOL_SOCKET, SO_REUSEADDR, 1);
        if (r == 0 && opts.reuse_port) r = sys::setsockopt_int(fd, SOL_SOCKET, SO_REUSEPORT, 1);
        if (r == 0) r = sys::bind(fd, local.data(), local.size());
        if (r == 0) r = sys::listen(fd, opts.backlog);
        if (r < 0) {
            sys::close(fd);
            return detail::errno_code(-r);
        }
        return adopt(l, fd);  // registers it and takes the reserve fd
    }

    /// Adopts a socket that is already bound and listening (created with
    /// `Backend::socket_flags`, e.g. inherited from a supervisor); on error the fd is
    /// closed. Errors: those of `attach` (`fd_too_large` on select), `EMFILE` for the
    /// reserve fd.
    static result<tcp_listener> adopt(loop<Backend>& l, int fd) noexcept {
        tcp_listener t(l.backend(), fd);
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

    /// Waits for the next connection; yields a `tcp_stream`. `EMFILE`/`ENFILE` are
    /// reported after shedding the pending connection (see `detail::accept_op`): back off
    /// briefly before accepting again.
    auto accept() noexcept {
        return io_awaiter<Backend, detail::accept_op<Backend>>(backend_, {fd_, reserve_.get(), backend_});
    }

    /// The bound address, with the port the kernel chose for port 0.
    result<endpoint> local_endpoint() const noexcept {
        sockaddr_storage ss;
        socklen_t len = sizeof ss;
        if (int r = sys::getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len); r < 0) return detail::errno_code(-r);
        return endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
    }

    /// Stops listening; a pending `accept` completes with `operation_canceled`.
    result<void> close() noexcept {
        if (reserve_ && *reserve_ >= 0) sys::close(std::exchange(*reserve_, -1));
        if (fd_ < 0) return {};
        backend_->detach(fd_);
        return detail::to_result(sys::close(std::exchange(fd_, -1)));
    }

    /// True while the listener owns a socket.
    bool is_open() const noexcept { return fd_ >= 0; }
    /// The listening socket's fd.
    int native_handle() const noexcept { return fd_; }

private:
    tcp_listener(Backend& backend, int fd) noexcept : backend_(&backend), fd_(fd) {}
    Backend* backend_ = nullptr;
    int fd_ = -1;
    /// The spare fd given up on EMFILE. On the heap so a pending accept's pointer to it
    /// stays valid if the listener object is moved.
    std::unique_ptr<int> reserve_;
};

}  // namespace weft

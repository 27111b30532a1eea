// SPDX-License-Identifier: MIT
/// @file
/// @brief Unix domain sockets: `unix_endpoint`, `unix_stream<Backend>` (with fd passing),
/// `unix_listener<Backend>`, and `unix_datagram_socket<Backend>`.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../io.hpp"
#include "../loop.hpp"
#include "../result.hpp"
#include "../sys.hpp"
#include "../task.hpp"
#include "tcp.hpp"
#include "udp.hpp"

namespace weft {

/// The address of a Unix domain socket: a filesystem path, a name in Linux's abstract
/// namespace (no file; gone with the last socket), or unnamed (an unbound socket or one
/// end of `socketpair`). A value type.
class unix_endpoint {
public:
    /// The longest path or abstract name: `sun_path` holds 108 bytes, one of which is the
    /// terminating NUL of a path (or the leading NUL of an abstract name).
    static constexpr std::size_t max_length = sizeof(sockaddr_un::sun_path) - 1;

    /// An unnamed endpoint.
    unix_endpoint() noexcept {
        std::memset(&addr_, 0, sizeof addr_);
        addr_.sun_family = AF_UNIX;
        len_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path));
    }

    /// The endpoint at filesystem `path`. Errors: `errc::path_too_long` (more than
    /// `max_length` bytes), `errc::invalid_endpoint` (empty, or a NUL byte inside).
    static result<unix_endpoint> from_path(std::string_view path) noexcept {
        if (path.empty() || path.find('\0') != std::string_view::npos) return errc::invalid_endpoint;
        if (path.size() > max_length) return errc::path_too_long;
        unix_endpoint e;
        std::memcpy(e.addr_.sun_path, path.data(), path.size());
        e.len_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
        return e;
    }

    /// The endpoint `name` in the abstract namespace (Linux): no file is created, and the
    /// name is free again when its socket closes. Errors: `errc::path_too_long`,
    /// `errc::invalid_endpoint` (empty).
    static result<unix_endpoint> abstract(std::string_view name) noexcept {
        if (name.empty()) return errc::invalid_endpoint;
        if (name.size() > max_length) return errc::path_too_long;
        unix_endpoint e;
        std::memcpy(e.addr_.sun_path + 1, name.data(), name.size());
        e.len_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
        return e;
    }

    /// Copies a kernel-filled address; unnamed if it is not `AF_UNIX` or too long.
    static unix_endpoint from_sockaddr(const sockaddr* sa, socklen_t len) noexcept {
        unix_endpoint e;
        if (sa->sa_family == AF_UNIX && len <= sizeof e.addr_ && len >= offsetof(sockaddr_un, sun_path)) {
            std::memcpy(&e.addr_, sa, len);
            e.len_ = len;
        }
        return e;
    }

    /// Always `AF_UNIX`.
    int family() const noexcept { return AF_UNIX; }
    /// True for an unbound socket's (or a `socketpair` end's) address.
    bool is_unnamed() const noexcept { return len_ <= offsetof(sockaddr_un, sun_path); }
    /// True for a name in the abstract namespace.
    bool is_abstract() const noexcept { return !is_unnamed() && addr_.sun_path[0] == '\0'; }

    /// The path, or the abstract name without its leading NUL; empty when unnamed.
    std::string_view name() const noexcept {
        if (is_unnamed()) return {};
        std::size_t n = len_ - offsetof(sockaddr_un, sun_path);
        if (is_abstract()) return {addr_.sun_path + 1, n - 1};
        return {addr_.sun_path, strnlen(addr_.sun_path, n)};
    }
    /// The path, `"@name"` for an abstract name (as `ss` prints it), `""` when unnamed.
    std::string to_string() const {
        std::string s;
        if (is_abstract()) s.append(1, '@');
        return s.append(name());
    }

    /// Removes the socket file of a path endpoint (none there is fine): 0 or -errno.
    /// A listener bound to a path leaves its file behind when it closes; binding the
    /// same path again fails with `address_in_use` until it is removed.
    int remove_file() const noexcept {
        if (is_unnamed() || is_abstract()) return 0;
        std::string path(name());
        if (::unlink(path.c_str()) < 0 && errno != ENOENT) return -errno;
        return 0;
    }

    /// The address for `bind`/`connect`.
    const sockaddr* data() const noexcept { return reinterpret_cast<const sockaddr*>(&addr_); }
    /// The length of `data()`.
    socklen_t size() const noexcept { return len_; }

    /// Same kind and the same name.
    friend bool operator==(const unix_endpoint& a, const unix_endpoint& b) noexcept {
        return a.is_unnamed() == b.is_unnamed() && a.is_abstract() == b.is_abstract() && a.name() == b.name();
    }

private:
    sockaddr_un addr_;
    socklen_t len_;
};

namespace detail {
/// Unix datagram sockets open as `AF_UNIX`.
template <>
inline constexpr int default_family<unix_endpoint> = AF_UNIX;
}  // namespace detail

/// What `unix_stream::receive_fds` received.
struct received_fds {
    std::size_t bytes = 0;   ///< bytes of data read (0 at EOF)
    std::size_t count = 0;   ///< fds stored in the caller's span (each close-on-exec, owned by the caller)
    bool truncated = false;  ///< more fds were sent than the span (or 16) holds: the kernel closed the rest
};

namespace detail {

/// At most this many fds ride on one message (the kernel allows 253; the control buffer
/// lives in the operation, so in the coroutine frame).
inline constexpr std::size_t max_passed_fds = 16;

/// `sendmsg` of bytes with fds attached (`SCM_RIGHTS`); the fds go with the first byte.
struct send_fds_op {
    int fd;
    std::span<const std::byte> buf;
    std::span<const int> fds;
    iovec iov{};
    msghdr msg{};
    alignas(cmsghdr) std::byte control[CMSG_SPACE(sizeof(int) * max_passed_fds)]{};
    static constexpr interest dir = interest::write;
    void setup() noexcept {
        msg = message_of_one(iov, buf.data(), buf.size());
        if (!fds.empty()) {
            msg.msg_control = control;
            msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
            cmsghdr* c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
            std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
        }
    }
    /// An fd needs at least one byte to travel with, and at most `max_passed_fds` fit.
    bool valid() const noexcept { return !buf.empty() && fds.size() <= max_passed_fds; }
    int try_now() noexcept {
        if (!valid()) return -EINVAL;
        setup();
        return static_cast<int>(sys::sendmsg(fd, &msg, 0));
    }
    template <class P>
    void prepare(P& p) noexcept {
        if (!valid()) return p.complete_now(-EINVAL);
        setup();
        p.sendmsg(fd, &msg);
    }
    bool drained(int res) const noexcept { return static_cast<std::size_t>(res) < buf.size(); }
    result<std::size_t> make(int res) const noexcept { return to_result<std::size_t>(res); }
};

/// `recvmsg` of bytes and any fds that came with them (`MSG_CMSG_CLOEXEC`: received fds
/// never leak into a child process).
struct recv_fds_op {
    int fd;
    std::span<std::byte> buf;
    std::span<int> fds;
    iovec iov{};
    msghdr msg{};
    alignas(cmsghdr) std::byte control[CMSG_SPACE(sizeof(int) * max_passed_fds)]{};
    static constexpr interest dir = interest::read;
    void setup() noexcept {
        msg = message_of_one(iov, buf.data(), buf.size());
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * std::min(fds.size(), max_passed_fds));
    }
    int try_now() noexcept {
        if (buf.empty()) return empty_res;
        setup();
        return static_cast<int>(sys::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC));
    }
    template <class P>
    void prepare(P& p) noexcept {
        if (buf.empty()) return p.complete_now(empty_res);
        setup();
        p.recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    }
    bool drained(int res) const noexcept { return static_cast<std::size_t>(res) < buf.size(); }
    /// Calls `f(fd)` for each fd the kernel put into the control buffer.
    template <class F>
    void each_fd(F f) const noexcept {
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(const_cast<msghdr*>(&msg), c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            std::size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (std::size_t i = 0; i < n; ++i) {
                int v;
                std::memcpy(&v, CMSG_DATA(c) + i * sizeof(int), sizeof v);
                f(v);
            }
        }
    }
    result<received_fds> make(int res) const noexcept {
        if (res == empty_res) return errc::empty_buffer;
        if (res < 0) return errno_code(-res);
        received_fds r{static_cast<std::size_t>(res), 0, (msg.msg_flags & MSG_CTRUNC) != 0};
        each_fd([&](int v) {
            if (r.count < fds.size())
                fds[r.count++] = v;
            else
                sys::close(v);  // (cannot happen: the buffer holds only fds.size())
        });
        return r;
    }
    /// A result nobody will see: close the fds it carried.
    void discard(int res) const noexcept {
        if (res > 0) each_fd([](int v) { sys::close(v); });
    }
};

}  // namespace detail

/// A connected Unix stream socket: the IO of `basic_stream`, plus fd passing and the
/// peer's credentials. Same rules as `tcp_stream` (move-only, one pending operation per
/// direction, EOF is 0 bytes).
template <class Backend>
class unix_stream : public basic_stream<Backend> {
public:
    /// The address type of its ends.
    using endpoint_type = unix_endpoint;
    /// A closed stream.
    unix_stream() noexcept = default;

    /// Adopts a connected Unix stream socket `fd` (created with `Backend::socket_flags`);
    /// on error the fd is closed.
    static result<unix_stream> adopt(Backend& backend, int fd) noexcept {
        return basic_stream<Backend>::template adopt_as<unix_stream>(backend, fd);
    }

    /// Connects to `peer`. Errors: `connection_refused` (nobody listens there),
    /// `no_such_file_or_directory` (no socket at that path), `resource_unavailable_try_again`
    /// (the listener's backlog is full: try again later), `operation_canceled`.
    static task<result<unix_stream>> connect(loop<Backend>& l, unix_endpoint peer) {
        return basic_stream<Backend>::template connect_as<unix_stream>(l, peer);
    }

    /// Two connected streams (`socketpair`): for talking to a child process or between
    /// two tasks.
    static result<std::pair<unix_stream, unix_stream>> pair(loop<Backend>& l) noexcept {
        int sv[2];
        if (int r = sys::socketpair(AF_UNIX, SOCK_STREAM | Backend::socket_flags, 0, sv); r < 0)
            return detail::errno_code(-r);
        auto a = adopt(l.backend(), sv[0]);
        if (!a) {
            sys::close(sv[1]);
            return a.error();
        }
        auto b = adopt(l.backend(), sv[1]);
        if (!b) return b.error();
        return std::pair<unix_stream, unix_stream>(std::move(*a), std::move(*b));
    }

    /// Sends `buf` (at least 1 byte) with `fds` attached (`SCM_RIGHTS`, at most 16): the
    /// receiver gets its own copies of the open files; ours stay open. Yields the bytes
    /// sent, which may be fewer than `buf.size()` (the fds went with the first; send the
    /// rest with `write_all`). Errors: `EINVAL` for an empty `buf` or more than 16 fds,
    /// `EBADF` for an fd that is not open.
    template <byte_buffer B>
    auto send_fds(B&& buf, std::span<const int> fds) noexcept {
        return io_awaiter<Backend, detail::send_fds_op>(this->backend_, {this->fd_, as_bytes(buf), fds});
    }
    /// Reads what is available into `buf` and stores any fds that came with those bytes
    /// into `fds` (each close-on-exec, owned by the caller from then on); yields a
    /// `received_fds`. An empty `buf` fails with `errc::empty_buffer`. Do not mix with
    /// `receive()` on the same stream: on `uring` its read-ahead carries no fds.
    template <mutable_byte_buffer B>
    auto receive_fds(B&& buf, std::span<int> fds) noexcept {
        return io_awaiter<Backend, detail::recv_fds_op>(this->backend_, {this->fd_, as_writable_bytes(buf), fds});
    }

    /// The process, user and group of the peer as of `connect` (`SO_PEERCRED`).
    result<ucred> peer_credentials() const noexcept {
        ucred c{};
        socklen_t len = sizeof c;
        if (::getsockopt(this->fd_, SOL_SOCKET, SO_PEERCRED, &c, &len) < 0) return detail::errno_code(errno);
        return c;
    }

    /// This end's address (unnamed for a connecting socket).
    result<unix_endpoint> local_endpoint() const noexcept {
        return this->template address<unix_endpoint>(&sys::getsockname);
    }
    /// The peer's address (the listener's path or abstract name).
    result<unix_endpoint> remote_endpoint() const noexcept {
        return this->template address<unix_endpoint>(&sys::getpeername);
    }

private:
    friend class basic_socket<Backend>;
    unix_stream(Backend& backend, int fd) noexcept : basic_stream<Backend>(backend, fd) {}
};

/// A listening Unix stream socket; `accept()` yields `unix_stream`s. `bind` to a path
/// creates the socket file (`listen_options::unlink_existing` removes a stale one
/// first); the file stays after `close()` (remove it with `unix_endpoint::remove_file`).
template <class Backend>
using unix_listener = basic_listener<Backend, unix_stream<Backend>>;

/// A Unix datagram socket: `bind` to a path or abstract name, `send_to`/`receive_from`
/// (or `connect` then `send`/`receive`). Datagrams are reliable and ordered on Unix
/// sockets; a send to a full receiver waits.
template <class Backend>
using unix_datagram_socket = basic_datagram_socket<Backend, unix_endpoint>;

}  // namespace weft

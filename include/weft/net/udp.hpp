// SPDX-License-Identifier: MIT
/// @file
/// @brief Datagram sockets: `basic_datagram_socket<Backend, Endpoint>`, used as
/// `udp_socket<Backend>` (and, in unix.hpp, `unix_datagram_socket<Backend>`).
#pragma once

#include <algorithm>
#include <array>
#include <cerrno>
#include <concepts>
#include <cstddef>
#include <span>
#include <string_view>
#include <utility>

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "../io.hpp"
#include "../loop.hpp"
#include "../result.hpp"
#include "../sys.hpp"
#include "endpoint.hpp"
#include "resolve.hpp"
#include "tcp.hpp"

namespace weft {

/// One received datagram: its length and who sent it.
template <class Endpoint>
struct datagram_of {
    std::size_t size = 0;  ///< bytes in the datagram (0 is a valid, empty datagram; there is no EOF)
    Endpoint from;         ///< the sender
};
/// A received UDP datagram.
using datagram = datagram_of<endpoint>;

/// One entry of a batched receive (`udp_socket::receive_batch`): the caller's buffer in,
/// the datagram's length, sender and truncation out.
struct datagram_slot {
    std::span<std::byte> buffer;  ///< where the datagram goes (set by the caller)
    std::size_t size = 0;         ///< bytes stored in `buffer`
    endpoint from;                ///< the sender
    bool truncated = false;       ///< the datagram was longer than `buffer`; the rest was discarded
};

namespace detail {

/// One datagram by `recvmsg` with `MSG_TRUNC`, so the result is the datagram's real
/// length and a truncation is seen, never silent. The `msghdr` points into the operation
/// itself, so it is built when the operation runs (the awaiter is pinned by then).
struct datagram_recv_op {
    int fd;
    std::span<std::byte> buf;
    bool want_sender = true;
    sockaddr_storage from{};
    iovec iov{};
    msghdr msg{};
    static constexpr interest dir = interest::read;
    void setup() noexcept {
        msg = message_of_one(iov, buf.data(), buf.size());
        if (want_sender) {
            msg.msg_name = &from;
            msg.msg_namelen = sizeof from;
        }
    }
    int try_now() noexcept {
        setup();
        return static_cast<int>(sys::recvmsg(fd, &msg, MSG_TRUNC));
    }
    template <class P>
    void prepare(P& p) noexcept {
        setup();
        p.recvmsg(fd, &msg, MSG_TRUNC);
    }
    /// One datagram says nothing about the next: never "drained" before `EAGAIN`.
    bool drained(int) const noexcept { return false; }
    result<std::size_t> size_of(int res) const noexcept {
        if (res < 0) return to_result<std::size_t>(res);
        if (static_cast<std::size_t>(res) > buf.size()) return errc::datagram_truncated;
        return static_cast<std::size_t>(res);
    }
};

/// `receive_from`: the datagram and its sender.
template <class Endpoint>
struct recv_from_op : datagram_recv_op {
    result<datagram_of<Endpoint>> make(int res) const noexcept {
        auto n = size_of(res);
        if (!n) return n.error();
        return datagram_of<Endpoint>{
            *n, Endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&from), msg.msg_namelen)};
    }
};

/// `receive` on a connected socket: the datagram's length.
struct recv_connected_op : datagram_recv_op {
    result<std::size_t> make(int res) const noexcept { return size_of(res); }
};

/// One datagram by `sendmsg`, to `to` (or to the connected peer when `has_to` is false).
/// A datagram goes whole or not at all: `EMSGSIZE` when it is too large.
template <class Endpoint>
struct datagram_send_op {
    int fd;
    std::span<const std::byte> buf;
    Endpoint to;
    bool has_to;
    iovec iov{};
    msghdr msg{};
    static constexpr interest dir = interest::write;
    void setup() noexcept {
        msg = message_of_one(iov, buf.data(), buf.size());
        if (has_to) {
            msg.msg_name = const_cast<sockaddr*>(to.data());
            msg.msg_namelen = to.size();
        }
    }
    int try_now() noexcept {
        setup();
        int r = static_cast<int>(sys::sendmsg(fd, &msg, 0));
        // A Unix receiver whose queue is full: an unconnected sender's socket looks
        // writable all along, so waiting for readiness would spin. Reported instead.
        if (r == -EAGAIN && has_to && to.family() == AF_UNIX) return backlog_full_res;
        return r;
    }
    template <class P>
    void prepare(P& p) noexcept {
        setup();
        p.sendmsg(fd, &msg);
    }
    bool drained(int) const noexcept { return false; }
    result<std::size_t> make(int res) const noexcept {
        if (res == backlog_full_res) return std::make_error_code(std::errc::resource_unavailable_try_again);
        return to_result<std::size_t>(res);
    }
};

/// The address family a datagram socket of `Endpoint` opens with by default.
template <class Endpoint>
inline constexpr int default_family = AF_INET;

/// Up to `max_batch` datagrams in one call. Reactors and `blocking`: one `recvmmsg`
/// (`MSG_WAITFORONE`: wait for the first, take what else is queued). `uring`: the first
/// datagram through the ring, then one non-blocking `recvmmsg` for the rest, made when
/// that completion arrives (io_uring has no batched receive of its own).
struct datagram_batch_op {
    static constexpr std::size_t max_batch = 16;
    int fd;
    std::span<datagram_slot> slots;
    std::array<mmsghdr, max_batch> mm{};
    std::array<iovec, max_batch> iov{};
    std::array<sockaddr_in6, max_batch> from{};
    static constexpr interest dir = interest::read;
    unsigned count() const noexcept { return static_cast<unsigned>(std::min(slots.size(), max_batch)); }
    void setup() noexcept {
        for (unsigned i = 0; i < count(); ++i) {
            iov[i] = {slots[i].buffer.data(), slots[i].buffer.size()};
            mm[i] = mmsghdr{};
            mm[i].msg_hdr.msg_iov = &iov[i];
            mm[i].msg_hdr.msg_iovlen = 1;
            mm[i].msg_hdr.msg_name = &from[i];
            mm[i].msg_hdr.msg_namelen = sizeof from[i];
        }
    }
    int try_now() noexcept {
        if (slots.empty()) return -EINVAL;
        setup();
        return sys::recvmmsg(fd, mm.data(), count(), MSG_TRUNC | MSG_WAITFORONE);
    }
    template <class P>
    void prepare(P& p) noexcept {
        if (slots.empty()) return p.complete_now(-EINVAL);
        setup();
        p.recvmsg(fd, &mm[0].msg_hdr, MSG_TRUNC);
    }
    /// Proactor: the first datagram came through the ring; take what else is queued.
    bool finish(int& res) noexcept {
        if (res < 0) return true;
        mm[0].msg_len = static_cast<unsigned>(res);
        res = 1;
        if (count() > 1) {
            int more = sys::recvmmsg(fd, &mm[1], count() - 1, MSG_TRUNC | MSG_DONTWAIT);
            if (more > 0) res += more;  // an error here (EAGAIN) just ends the batch
        }
        return true;
    }
    bool drained(int) const noexcept { return false; }
    result<std::size_t> make(int res) const noexcept {
        if (res < 0) return to_result<std::size_t>(res);
        for (int i = 0; i < res; ++i) {
            datagram_slot& s = slots[static_cast<std::size_t>(i)];
            std::size_t len = mm[static_cast<std::size_t>(i)].msg_len;
            s.truncated = len > s.buffer.size();
            s.size = std::min(len, s.buffer.size());
            s.from = endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&from[static_cast<std::size_t>(i)]),
                                             mm[static_cast<std::size_t>(i)].msg_hdr.msg_namelen);
        }
        return static_cast<std::size_t>(res);
    }
};

}  // namespace detail

/// How a datagram socket's `bind` sets up its socket (both are UDP only).
struct udp_options {
    bool reuse_address = false;  ///< `SO_REUSEADDR`
    bool reuse_port = false;     ///< `SO_REUSEPORT`: several sockets share the port (the kernel spreads datagrams)
};

/// A datagram socket on the backend of a `loop<Backend>`, addressed by `Endpoint`: use
/// it as `basic_datagram_socket<Backend>` (IPv4/IPv6) or `unix_datagram_socket<Backend>`.
///
/// Each receive yields exactly one datagram. A 0-byte datagram is a datagram (size 0),
/// not EOF: UDP has none. A datagram larger than the buffer fails with
/// `errc::datagram_truncated` (the buffer holds its first bytes; the kernel discarded
/// the rest), and one too large to send fails with `EMSGSIZE` (`std::errc::message_size`).
/// On a connected socket, an ICMP error from the peer (nobody listens: `ECONNREFUSED`)
/// fails the next receive or send once. Move-only; closes its fd when destroyed; at most
/// one receive and one send may be pending at a time.
template <class Backend, class Endpoint>
class basic_datagram_socket : public basic_socket<Backend> {
public:
    /// The address type.
    using endpoint_type = Endpoint;
    /// A closed socket.
    basic_datagram_socket() noexcept = default;

    /// An unbound socket of `family` (`AF_INET` or `AF_INET6` for UDP, `AF_UNIX`), for
    /// sending; a UDP socket gets a local port at its first send.
    static result<basic_datagram_socket> open(loop<Backend>& l,
                                              int family = detail::default_family<Endpoint>) noexcept {
        int fd = sys::socket(family, SOCK_DGRAM | Backend::socket_flags, 0);
        if (fd < 0) return detail::errno_code(-fd);
        return adopt(l, fd);
    }

    /// A socket bound to `local` (port 0: any free port; read it back with
    /// `local_endpoint()`). Errors: `address_in_use`, `permission_denied`, ...
    static result<basic_datagram_socket> bind(loop<Backend>& l, const Endpoint& local, udp_options opts = {}) noexcept {
        int fd = sys::socket(local.family(), SOCK_DGRAM | Backend::socket_flags, 0);
        if (fd < 0) return detail::errno_code(-fd);
        int r = 0;
        const bool ip = local.family() != AF_UNIX;
        if (ip && opts.reuse_address) r = sys::setsockopt_int(fd, SOL_SOCKET, SO_REUSEADDR, 1);
        if (r == 0 && ip && opts.reuse_port) r = sys::setsockopt_int(fd, SOL_SOCKET, SO_REUSEPORT, 1);
        if (r == 0) r = sys::bind(fd, local.data(), local.size());
        if (r < 0) {
            sys::close(fd);
            return detail::errno_code(-r);
        }
        return adopt(l, fd);
    }

    /// A socket bound to `"host:port"` (resolved on the calling thread, like
    /// `tcp_listener::bind`; the first address that binds is used).
    static result<basic_datagram_socket> bind(loop<Backend>& l, std::string_view host_and_port,
                                              udp_options opts = {}) requires std::same_as<Endpoint, endpoint> {
        return detail::bind_by_name(host_and_port, SOCK_DGRAM, [&](const endpoint& ep) { return bind(l, ep, opts); });
    }

    /// Adopts a datagram socket `fd` (created with `Backend::socket_flags`); on error the
    /// fd is closed.
    static result<basic_datagram_socket> adopt(loop<Backend>& l, int fd) noexcept {
        return basic_socket<Backend>::template adopt_as<basic_datagram_socket>(l.backend(), fd);
    }

    /// Sets the default peer: `send`/`receive` then talk to it only, datagrams from
    /// others are dropped by the kernel, and ICMP errors are reported. Immediate (UDP
    /// has no handshake).
    result<void> connect(const Endpoint& peer) noexcept {
        return detail::to_result(sys::connect(this->fd_, peer.data(), peer.size()));
    }

    /// Sends `buf` as one datagram to `to`; yields its size.
    template <byte_buffer B>
    auto send_to(B&& buf, const Endpoint& to) noexcept {
        return io_awaiter<Backend, detail::datagram_send_op<Endpoint>>(this->backend_,
                                                                       {this->fd_, as_bytes(buf), to, true});
    }
    /// Receives one datagram into `buf`; yields a `datagram` (size and sender).
    template <mutable_byte_buffer B>
    auto receive_from(B&& buf) noexcept {
        return io_awaiter<Backend, detail::recv_from_op<Endpoint>>(this->backend_,
                                                                   {{this->fd_, as_writable_bytes(buf), true}});
    }
    /// Sends `buf` as one datagram to the connected peer; yields its size.
    template <byte_buffer B>
    auto send(B&& buf) noexcept {
        return io_awaiter<Backend, detail::datagram_send_op<Endpoint>>(this->backend_,
                                                                       {this->fd_, as_bytes(buf), Endpoint{}, false});
    }
    /// Receives one datagram from the connected peer into `buf`; yields its size.
    template <mutable_byte_buffer B>
    auto receive(B&& buf) noexcept {
        return io_awaiter<Backend, detail::recv_connected_op>(this->backend_,
                                                              {{this->fd_, as_writable_bytes(buf), false}});
    }
    /// Receives up to `min(slots.size(), 16)` datagrams in one call (`recvmmsg`): waits
    /// for the first, takes what else is queued; yields how many slots were filled (at
    /// least 1). A truncated datagram sets its slot's `truncated`. Empty `slots`:
    /// `EINVAL`.
    auto receive_batch(std::span<datagram_slot> slots) noexcept requires std::same_as<Endpoint, endpoint> {
        return io_awaiter<Backend, detail::datagram_batch_op>(this->backend_, {this->fd_, slots});
    }

    /// Allows sending to broadcast addresses (`SO_BROADCAST`).
    result<void> set_broadcast(bool on = true) noexcept requires std::same_as<Endpoint, endpoint> {
        return detail::to_result(sys::setsockopt_int(this->fd_, SOL_SOCKET, SO_BROADCAST, on ? 1 : 0));
    }
    /// The bound address (with the port the kernel chose).
    result<Endpoint> local_endpoint() const noexcept { return this->template address<Endpoint>(&sys::getsockname); }
    /// The connected peer's address (`ENOTCONN` if not connected).
    result<Endpoint> remote_endpoint() const noexcept { return this->template address<Endpoint>(&sys::getpeername); }

private:
    friend class basic_socket<Backend>;
    basic_datagram_socket(Backend& backend, int fd) noexcept : basic_socket<Backend>(backend, fd) {}
};

/// A UDP socket (IPv4 or IPv6).
template <class Backend>
using udp_socket = basic_datagram_socket<Backend, endpoint>;

}  // namespace weft

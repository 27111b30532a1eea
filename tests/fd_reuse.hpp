// Helpers for the fd-reuse tests (DESIGN invariant 10): raw connected sockets made
// outside any loop, putting a new socket on a given fd number, and checking that the
// socket which took the number works both ways with none of the old operation's bytes.
// Shared by test_lifetime.cpp and the tests of operations added later (test_custom_op.cpp).
#pragma once

#include <catch2/catch.hpp>
#include <weft/weft.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <string_view>
#include <utility>

namespace weft_test {

using namespace std::chrono_literals;

/// A raw fd closed on scope exit.
struct raw_fd {
    int fd = -1;
    raw_fd() = default;
    explicit raw_fd(int f) : fd(f) {}
    raw_fd(raw_fd&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
    raw_fd& operator=(raw_fd&& o) noexcept {
        std::swap(fd, o.fd);
        return *this;
    }
    ~raw_fd() {
        if (fd >= 0) ::close(fd);
    }
};

/// A raw listening socket on 127.0.0.1 (any port).
inline raw_fd raw_listener(sockaddr_in& addr) {
    raw_fd l(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(l.fd >= 0);
    addr = {};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    REQUIRE(::bind(l.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(l.fd, 16) == 0);
    REQUIRE(::getsockname(l.fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    return l;
}

/// A connected pair made with plain blocking syscalls (a loopback connect completes
/// inside `connect`), outside any loop.
inline std::pair<raw_fd, raw_fd> raw_connected() {
    sockaddr_in addr;
    raw_fd l = raw_listener(addr);
    raw_fd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(::connect(c.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    raw_fd s(::accept4(l.fd, nullptr, nullptr, SOCK_CLOEXEC));
    REQUIRE(s.fd >= 0);
    return {std::move(c), std::move(s)};
}

/// Puts a placeholder (/dev/null) on the free number `fd`, so that making a new socket
/// cannot take it; `take_number` then swaps the socket onto it (dup3 replaces the
/// placeholder atomically).
inline void hold_number(int fd) {
    int p = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    REQUIRE(p >= 0);
    if (p == fd) return;  // it was the lowest free number
    REQUIRE(::dup3(p, fd, O_CLOEXEC) == fd);
    ::close(p);
}

/// Moves `from` onto the number `fd` (which must be free), with the flags backend `B`
/// wants on its sockets.
template <class B>
void take_number(raw_fd& from, int fd) {
    if constexpr ((B::socket_flags & SOCK_NONBLOCK) != 0) REQUIRE(::fcntl(from.fd, F_SETFL, O_NONBLOCK) == 0);
    REQUIRE(::dup3(from.fd, fd, O_CLOEXEC) == fd);
    ::close(std::exchange(from.fd, -1));
}

/// A new connected socket on the number `fd`, adopted by `loop`, and its raw peer.
template <class B>
struct reused_stream {
    weft::tcp_stream<B> stream;
    raw_fd peer;
};
template <class B>
reused_stream<B> new_stream_on(weft::loop<B>& loop, int fd) {
    hold_number(fd);
    auto [mine, peer] = raw_connected();
    take_number<B>(mine, fd);
    auto s = weft::tcp_stream<B>::adopt(loop.backend(), fd);
    REQUIRE(s);
    return {std::move(*s), std::move(peer)};
}

/// Everything that arrives on raw `fd` until it stays quiet for `quiet`.
inline std::string read_raw(int fd, std::chrono::milliseconds quiet = 60ms) {
    std::string got;
    char buf[65536];
    for (;;) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(quiet.count())) <= 0) return got;
        long n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n <= 0) return got;
        got.append(buf, static_cast<std::size_t>(n));
    }
}

/// Sends `text` on raw `fd` (non-blocking, small: it fits the socket buffer).
inline void send_raw(int fd, std::string_view text) {
    REQUIRE(::send(fd, text.data(), text.size(), MSG_DONTWAIT | MSG_NOSIGNAL) == static_cast<long>(text.size()));
}

/// Takes up to `n` bytes off raw `fd` without waiting (makes room in a full pipe).
inline void drain_some(int fd, std::size_t n) {
    std::string buf(n, '\0');
    (void)::recv(fd, buf.data(), n, MSG_DONTWAIT);
}

inline constexpr std::string_view fresh = "FRESH-bytes-of-the-new-socket-that-took-the-number";

/// The new socket works both ways, and what its peer receives is exactly what it sent.
template <class B>
weft::task<void> check_new_stream(reused_stream<B>& n) {
    send_raw(n.peer.fd, fresh);
    std::string in(fresh.size(), '\0');
    auto r = co_await weft::with_timeout(n.stream.read_exact(in), 2s);
    INFO("the new socket's read: " << (r ? std::string("ok") : r.error().message()));
    REQUIRE(r);
    REQUIRE(in == fresh);  // the old operation took none of these bytes
    auto w = co_await n.stream.write_all(fresh);
    REQUIRE(w);
    REQUIRE(read_raw(n.peer.fd) == fresh);  // and put none of its own before or after them
}

}  // namespace weft_test

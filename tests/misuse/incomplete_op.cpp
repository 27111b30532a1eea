// Misuse: an operation written outside weft that lacks part of the contract
// (weft::io_operation): here `drained`, which a reactor needs after every success.
#include <weft/backend/epoll.hpp>
#include <weft/net/tcp.hpp>

#include <sys/socket.h>

using B = weft::backend::epoll_et;

struct peek_op {
    int fd;
    std::span<std::byte> buf;
    static constexpr weft::interest dir = weft::interest::read;
    int try_now() noexcept { return static_cast<int>(weft::sys::recv(fd, buf.data(), buf.size(), MSG_PEEK)); }
#ifndef WEFT_MISUSE
    bool drained(int) const noexcept { return false; }
#endif
    weft::result<std::size_t> make(int res) const noexcept { return weft::op_result<std::size_t>(res); }
};

weft::task<void> peeker(weft::tcp_stream<B>& s, std::span<std::byte> buf) {
    (void)co_await weft::io_awaiter<B, peek_op>(s.backend(), {s.native_handle(), buf});
}

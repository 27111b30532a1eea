// The README's echo server in 30 lines, on one backend: it includes only that backend
// and TCP, not <weft/weft.hpp> (which brings every backend, files, signals and the
// thread-per-task machinery: half again the compile time). Listens on 127.0.0.1:8800.
#include <weft/backend/epoll.hpp>  // or backend/uring.hpp, poll.hpp, ...: one model
#include <weft/net/tcp.hpp>

#include <array>
#include <cstdio>

using B = weft::backend::epoll_et;  // or epoll_lt: the rest of the file does not change

weft::task<void> session(weft::tcp_stream<B> s) {
    std::array<char, 16384> buf;
    for (;;) {
        auto n = co_await s.read_some(buf);  // result<size_t>: 0 at EOF, an error_code on reset
        if (!n || *n == 0) co_return;
        if (!co_await s.write_all(std::span(buf.data(), *n))) co_return;
    }
}

weft::task<void> serve(weft::loop<B>& loop, weft::tcp_listener<B>& listener) {
    for (;;) {
        auto client = co_await listener.accept();
        if (client) loop.spawn(session(std::move(*client)));
    }
}

int main() {
    weft::loop<B> loop;
    auto listener = weft::tcp_listener<B>::bind(loop, weft::endpoint::parse("127.0.0.1:8800").value());
    if (!listener) {
        std::fprintf(stderr, "listen: %s\n", listener.error().message().c_str());
        return 1;
    }
    loop.spawn(serve(loop, *listener));
    loop.run();
}

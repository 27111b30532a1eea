// Benchmark echo server: echoes every byte, TCP_NODELAY, one loop thread.
//
//   echo_server --backend NAME [--port N]
//
// NAME is any backend of weft::all_backends, or `epoll_lt_eager` (the textbook
// level-triggered interest policy, kept to measure epoll_lt's lazy one against it).
// Prints "port N" once listening; runs until SIGINT/SIGTERM.
#include <weft/weft.hpp>

#include <cstdio>
#include <string>

#include "args.hpp"

namespace {

template <class B>
weft::task<void> session(weft::tcp_stream<B> s) {
    (void)s.set_nodelay();
    std::array<char, 16384> buf;
    for (;;) {
        auto n = co_await s.read_some(buf);
        if (!n || *n == 0) co_return;
        if (!co_await s.write_all(std::span(buf.data(), *n))) co_return;
    }
}

template <class B>
weft::task<void> serve(weft::loop<B>& loop, weft::tcp_listener<B>& listener) {
    for (;;) {
        auto c = co_await listener.accept();
        if (c)
            loop.spawn(session(std::move(*c)));
        else if (c.error() == std::errc::operation_canceled)
            co_return;
        else
            (void)co_await weft::sleep_for(std::chrono::milliseconds(1));  // EMFILE and friends: back off
    }
}

template <class B>
int run(std::uint16_t port) {
    weft::loop<B> loop;
    auto listener = weft::tcp_listener<B>::bind(loop, weft::endpoint::loopback_v4(port), {.backlog = 4096});
    if (!listener) {
        std::fprintf(stderr, "error: listen: %s\n", listener.error().message().c_str());
        return 1;
    }
    std::printf("port %u\n", listener->local_endpoint().value().port());
    std::fflush(stdout);
    example::stop_on_signals(&loop);
    loop.spawn(serve(loop, *listener));
    loop.run();
    example::stop_on_signals<weft::loop<B>>(nullptr);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    auto args = example::parse(argc, argv);
    std::uint16_t port = example::port_or_exit(args.get("--port").value_or("0"));
    std::string name = args.get("--backend").value_or("epoll_et");
    using measured = weft::backend_list<weft::backend::epoll_lt_eager>;
    int rc = 2;
    auto go = [&]<class B>() { rc = run<B>(port); };
    if (!weft::with_backend(name, go) && !measured::with(name, go)) {
        std::fprintf(stderr, "error: unknown backend '%s' (choose from: %s, epoll_lt_eager)\n", name.c_str(),
                     weft::all_backends::names().c_str());
    }
    return rc;
}

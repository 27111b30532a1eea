// The upper-case server of the classic IO-model texts, written once: every chunk a
// client sends comes back upper-cased (ASCII a-z; other bytes unchanged); when the
// client half-closes, the server answers what is left and closes. blocking_upper_server
// and select_upper_server are this file on two models; nothing here names one.
//
//   <program> [--port 0] [--host 127.0.0.1]
//
// Prints "<program> listening on ADDR (backend NAME)" (port 0 picks a free port), then
// serves until SIGINT/SIGTERM, after which it prints "<program>: stopped, N
// connections served" and exits 0.
#pragma once

#include <weft/loop.hpp>
#include <weft/net/tcp.hpp>

#include <array>
#include <cstddef>
#include <cstdio>
#include <span>
#include <string>

#include "../accept.hpp"
#include "../args.hpp"
#include "../endpoint_arg.hpp"

namespace models {

/// Upper-cases ASCII letters in place.
inline void to_upper(std::span<char> bytes) noexcept {
    for (char& c : bytes)
        if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
}

/// One client: read what is there, answer it, until EOF or an error.
template <class B>
weft::task<void> session(weft::tcp_stream<B> client) {
    std::array<char, 16384> buf;
    for (;;) {
        auto n = co_await client.read_some(buf);  // the model decides how this waits
        if (!n || *n == 0) break;                 // EOF, or an error such as a reset
        to_upper(std::span(buf.data(), *n));
        if (!co_await client.write_all(std::span(buf.data(), *n))) break;  // a slow reader waits here
    }
    (void)client.shutdown();  // everything read has been answered
}

/// Accepts until the listener is closed, one task per client; counts them. (A failed
/// accept is handled as every example's is: `example::keep_accepting`.)
template <class B>
weft::task<void> serve(weft::loop<B>& loop, weft::tcp_listener<B>& listener, std::size_t& served) {
    for (;;) {
        auto client = co_await listener.accept();
        if (client) {
            ++served;
            loop.spawn(session(std::move(*client)));
        } else if (!co_await example::keep_accepting(client.error())) {
            co_return;  // the listener was closed
        }
    }
}

/// The whole program on backend `B`; `name` is the program's name for its output.
template <class B>
int main_on(const char* name, int argc, char** argv) {
    auto args = example::parse(argc, argv);
    if (args.get("--help")) {
        std::printf("usage: %s [--port N] [--host ADDR]\n", name);
        return 0;
    }
    std::uint16_t port = example::port_or_exit(args.get("--port").value_or("0"));
    auto where = example::endpoint_or_exit(args.get("--host").value_or("127.0.0.1"), port);
    weft::loop<B> loop;
    auto listener = weft::tcp_listener<B>::bind(loop, where);
    if (!listener) {
        std::fprintf(stderr, "error: cannot listen on %s: %s\n", where.to_string().c_str(),
                     listener.error().message().c_str());
        return 1;
    }
    std::printf("%s listening on %s (backend %s)\n", name, listener->local_endpoint().value().to_string().c_str(),
                std::string(B::name).c_str());
    std::fflush(stdout);
    std::size_t served = 0;
    example::stop_on_signals(&loop);
    loop.spawn(serve(loop, *listener, served));
    loop.run();
    example::stop_on_signals<weft::loop<B>>(nullptr);
    std::printf("%s: stopped, %zu connections served\n", name, served);
    return 0;
}

}  // namespace models

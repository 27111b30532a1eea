// The classic teaching server: every chunk a client sends comes back upper-cased
// (ASCII a-z only; every other byte unchanged). Many clients at once; when a client
// half-closes, the server sends what is left and closes.
//
//   upper_echo_server [--port 8800] [--host 127.0.0.1] [--backend NAME] [--threads 1]
//                     [--spread reuse_port|hand_off]
//
// Prints the address it listens on; exits cleanly on SIGINT/SIGTERM. Exit status 3
// means the backend is not available in this process. With --threads N (N > 1) it
// serves on N loops, one thread each (weft::runtime): every loop accepts on its own
// SO_REUSEPORT listener, or with --spread hand_off loop 0 accepts and hands each
// connection to the least loaded loop. The session code is the same either way.
#include <weft/weft.hpp>

#include <cstdio>
#include <string>

#include "args.hpp"
#include "backend_main.hpp"

namespace {

template <class B>
weft::task<void> session(weft::tcp_stream<B> client) {
    std::array<char, 16384> buf;
    for (;;) {
        auto n = co_await client.read_some(buf);
        if (!n || *n == 0) break;  // EOF (the client half-closed) or an error such as a reset
        for (std::size_t i = 0; i < *n; ++i)
            if (buf[i] >= 'a' && buf[i] <= 'z') buf[i] = static_cast<char>(buf[i] - 'a' + 'A');
        if (!co_await client.write_all(std::span(buf.data(), *n))) break;
    }
    // Everything read has been answered: say we are done too.
    (void)client.shutdown();
}

template <class B>
weft::task<void> serve(weft::loop<B>& loop, weft::tcp_listener<B>& listener) {
    for (;;) {
        auto client = co_await listener.accept();
        if (client) {
            loop.spawn(session(std::move(*client)));
        } else if (client.error() == std::errc::too_many_files_open ||
                   client.error() == std::errc::too_many_files_open_in_system) {
            std::fprintf(stderr, "accept: %s; backing off\n", client.error().message().c_str());
            (void)co_await weft::sleep_for(std::chrono::milliseconds(10));
        } else if (client.error() == std::errc::operation_canceled) {
            co_return;  // the listener was closed
        } else {
            std::fprintf(stderr, "accept: %s\n", client.error().message().c_str());
        }
    }
}

template <class B>
int run(const weft::endpoint& where) {
    weft::loop<B> loop;
    auto listener = weft::tcp_listener<B>::bind(loop, where);
    if (!listener) {
        std::fprintf(stderr, "error: cannot listen on %s: %s\n", where.to_string().c_str(),
                     listener.error().message().c_str());
        return 1;
    }
    std::printf("upper_echo_server listening on %s (backend %s)\n",
                listener->local_endpoint().value().to_string().c_str(), std::string(B::name).c_str());
    std::fflush(stdout);
    example::stop_on_signals(&loop);
    loop.spawn(serve(loop, *listener));
    loop.run();
    example::stop_on_signals<weft::loop<B>>(nullptr);
    std::printf("upper_echo_server: stopped\n");
    return 0;
}

/// The same server on `threads` loops.
template <class B>
int run_threads(const weft::endpoint& where, unsigned threads, weft::spread how) {
    weft::runtime<B> rt({.threads = threads});
    auto bound = rt.serve(
        where, [](weft::tcp_stream<B> s) { return session(std::move(s)); }, how);
    if (!bound) {
        std::fprintf(stderr, "error: cannot listen on %s: %s\n", where.to_string().c_str(),
                     bound.error().message().c_str());
        return 1;
    }
    std::printf("upper_echo_server listening on %s (backend %s, %u loops, %s)\n", bound->to_string().c_str(),
                std::string(B::name).c_str(), threads, how == weft::spread::reuse_port ? "SO_REUSEPORT" : "hand-off");
    std::fflush(stdout);
    example::stop_on_signals(&rt);
    rt.run();
    example::stop_on_signals<weft::runtime<B>>(nullptr);
    std::printf("upper_echo_server: stopped\n");
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    auto args = example::parse(argc, argv);
    if (args.get("--help")) {
        std::printf(
            "usage: upper_echo_server [--port N] [--host ADDR] [--backend NAME] [--threads N]\n"
            "                         [--spread reuse_port|hand_off]\n  backends: %s\n",
            weft::all_backends::names().c_str());
        return 0;
    }
    std::uint16_t port = example::port_or_exit(args.get("--port").value_or("8800"));
    auto where = example::endpoint_or_exit(args.get("--host").value_or("127.0.0.1"), port);
    const auto threads =
        static_cast<unsigned>(example::number_or_exit("--threads", args.get("--threads").value_or("1"), 1, 1024));
    const std::string spread = args.get("--spread").value_or("reuse_port");
    if (spread != "reuse_port" && spread != "hand_off") {
        std::fprintf(stderr, "error: --spread must be reuse_port or hand_off, not '%s'\n", spread.c_str());
        return 2;
    }
    const auto how = spread == "reuse_port" ? weft::spread::reuse_port : weft::spread::hand_off;
    return example::run_on_backend(args.get("--backend").value_or(""), [&]<class B>() {
        return threads == 1 ? run<B>(where) : run_threads<B>(where, threads, how);
    });
}

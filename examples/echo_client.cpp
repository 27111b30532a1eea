// Sends each message to an echo server, half-closes, and prints everything it answers.
//
//   echo_client [--host 127.0.0.1] [--port 8800] [--backend epoll_et] [--timeout-ms 5000] MESSAGE...
//
// Against upper_echo_server: `echo_client --port 8800 Hello` prints `HELLO`.
#include <weft/weft.hpp>

#include <cstdio>
#include <string>

#include "args.hpp"

namespace {

template <class B>
weft::task<int> talk(weft::loop<B>& loop, weft::endpoint server, std::vector<std::string> messages,
                     std::chrono::milliseconds timeout) {
    auto conn = co_await weft::with_timeout(weft::tcp_stream<B>::connect(loop, server), timeout);
    if (!conn) {
        std::fprintf(stderr, "error: connect to %s: %s\n", server.to_string().c_str(), conn.error().message().c_str());
        co_return 1;
    }
    for (auto& m : messages) {
        if (auto w = co_await conn->write_all(m); !w) {
            std::fprintf(stderr, "error: write: %s\n", w.error().message().c_str());
            co_return 1;
        }
    }
    (void)conn->shutdown();  // tell the server we are done; it answers and closes
    std::string reply;
    std::array<char, 4096> buf;
    for (;;) {
        auto n = co_await weft::with_timeout(conn->read_some(buf), timeout);
        if (!n) {
            std::fprintf(stderr, "error: read: %s\n", n.error().message().c_str());
            co_return 1;
        }
        if (*n == 0) break;
        reply.append(buf.data(), *n);
    }
    std::printf("%s\n", reply.c_str());
    co_return 0;
}

}  // namespace

int main(int argc, char** argv) {
    auto args = example::parse(argc, argv);
    if (args.get("--help") || args.positional.empty()) {
        std::printf("usage: echo_client [--host ADDR] [--port N] [--backend NAME] [--timeout-ms MS] MESSAGE...\n");
        return args.get("--help") ? 0 : 2;
    }
    std::uint16_t port = example::port_or_exit(args.get("--port").value_or("8800"));
    std::string host = args.get("--host").value_or("127.0.0.1");
    auto server = host.find(':') != std::string::npos ? weft::endpoint::v6(host, port) : weft::endpoint::v4(host, port);
    if (!server) {
        std::fprintf(stderr, "error: --host '%s': %s\n", host.c_str(), server.error().message().c_str());
        return 2;
    }
    auto timeout = std::chrono::milliseconds(
        example::number_or_exit("--timeout-ms", args.get("--timeout-ms").value_or("5000"), 1, 86'400'000));
    std::string name = args.get("--backend").value_or("epoll_et");
    int rc = 2;
    try {
        if (!weft::with_backend(name, [&]<class B>() {
                weft::loop<B> loop;
                rc = loop.run(talk(loop, *server, args.positional, timeout));
            })) {
            std::fprintf(stderr, "error: unknown backend '%s' (choose from: %s)\n", name.c_str(),
                         weft::all_backends::names().c_str());
        }
    } catch (const std::system_error& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return e.code() == weft::errc::backend_unavailable ? 3 : 1;
    }
    return rc;
}

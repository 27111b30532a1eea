// Sends each message to an echo server, half-closes, and prints everything it answers.
//
//   echo_client [--host 127.0.0.1] [--port 8800] [--backend NAME] [--timeout-ms 5000] MESSAGE...
//
// Against upper_echo_server: `echo_client --port 8800 Hello` prints `HELLO`.
#include <weft/weft.hpp>

#include <cstdio>
#include <string>

#include "args.hpp"
#include "backend_main.hpp"

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
    auto server = example::endpoint_or_exit(args.get("--host").value_or("127.0.0.1"), port);
    auto timeout = std::chrono::milliseconds(
        example::number_or_exit("--timeout-ms", args.get("--timeout-ms").value_or("5000"), 1, 86'400'000));
    return example::run_on_backend(args.get("--backend").value_or(""), [&]<class B>() {
        weft::loop<B> loop;
        return loop.run(talk(loop, server, args.positional, timeout));
    });
}

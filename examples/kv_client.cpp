// The client for kv_server: sends commands (pipelined, in one write) and prints each
// reply line; or asks for the key count over UDP.
//
//   kv_client --connect HOST:PORT [--backend NAME] [--timeout SECONDS] [COMMAND ...]
//   kv_client --connect HOST:PORT --stats
//
// Each COMMAND argument is one line ("SET k v", "GET k"); with none, the lines of stdin
// are sent. Prints one reply per command, in order. Exit status 0: every reply came; 1: the
// connection failed or ended early (or timed out); 2: bad arguments; 3: backend unavailable.
#include <weft/weft.hpp>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "args.hpp"
#include "backend_main.hpp"

namespace {

template <class B>
weft::task<int> talk(weft::loop<B>& loop, std::string target, std::vector<std::string> commands) {
    auto c = co_await weft::tcp_stream<B>::connect(loop, target);
    if (!c) {
        std::fprintf(stderr, "error: connect %s: %s\n", target.c_str(), c.error().message().c_str());
        co_return 1;
    }
    std::string out;
    for (auto& cmd : commands) out.append(cmd).append(1, '\n');
    if (auto w = co_await c->write_all(out); !w) {
        std::fprintf(stderr, "error: send: %s\n", w.error().message().c_str());
        co_return 1;
    }
    weft::buffered_reader<weft::tcp_stream<B>> reader(std::move(*c), 8192);
    for (std::size_t i = 0; i < commands.size(); ++i) {
        auto line = co_await reader.read_line();
        if (!line) {
            std::fprintf(stderr, "error: reply %zu of %zu: %s\n", i + 1, commands.size(),
                         line.error().message().c_str());
            co_return 1;
        }
        std::printf("%.*s\n", static_cast<int>(line->size()), line->data());
    }
    co_return 0;
}

template <class B>
weft::task<int> stats(weft::loop<B>& loop, std::string target) {
    (void)loop;
    auto hp = weft::split_host_port(target).value();
    auto to = co_await weft::resolve(hp.host, hp.service, {.socktype = SOCK_DGRAM});
    if (!to) {
        std::fprintf(stderr, "error: %s: %s\n", target.c_str(), to.error().message().c_str());
        co_return 1;
    }
    auto udp = weft::udp_socket<B>::open(loop, to->front().family());
    if (!udp || !udp->connect(to->front())) {
        std::fprintf(stderr, "error: cannot open a UDP socket to %s\n", target.c_str());
        co_return 1;
    }
    std::array<char, 512> buf;
    for (int attempt = 0; attempt < 3; ++attempt) {  // UDP may drop a datagram: ask again
        (void)co_await udp->send(std::string_view("STATS"));
        auto n = co_await weft::with_timeout(udp->receive(buf), std::chrono::milliseconds(700));
        if (n) {
            std::string_view reply(buf.data(), *n);
            while (!reply.empty() && reply.back() == '\n') reply.remove_suffix(1);
            std::printf("%.*s\n", static_cast<int>(reply.size()), reply.data());
            co_return 0;
        }
        if (n.error() != std::errc::timed_out) {
            std::fprintf(stderr, "error: STATS: %s\n", n.error().message().c_str());
            co_return 1;
        }
    }
    std::fprintf(stderr, "error: STATS: no answer\n");
    co_return 1;
}

}  // namespace

int main(int argc, char** argv) {
    auto args = example::parse(argc, argv, {"--help", "--stats"});
    if (args.get("--help")) {
        std::printf(
            "usage: kv_client --connect HOST:PORT [--backend NAME] [--timeout SECONDS] [--stats] [COMMAND ...]\n"
            "  backends: %s\n",
            weft::all_backends::names().c_str());
        return 0;
    }
    auto target = args.get("--connect");
    if (!target) {
        std::fprintf(stderr, "error: --connect HOST:PORT is required\n");
        return 2;
    }
    if (auto hp = weft::split_host_port(*target); !hp) {
        std::fprintf(stderr, "error: --connect '%s': %s\n", target->c_str(), hp.error().message().c_str());
        return 2;
    }
    auto timeout =
        std::chrono::seconds(example::number_or_exit("--timeout", args.get("--timeout").value_or("10"), 1, 3600));
    bool want_stats = args.get("--stats").has_value();
    std::vector<std::string> commands(args.positional.begin(), args.positional.end());
    if (!want_stats && commands.empty())
        for (std::string line; std::getline(std::cin, line);) commands.push_back(line);
    return example::run_on_backend(args.get("--backend").value_or(""), [&]<class B>() {
        weft::loop<B> loop;
        auto work = [&]() -> weft::task<weft::result<int>> {
            // (Not `co_return c ? co_await a : co_await b;`: g++ 12 evaluates both awaits.)
            if (want_stats) co_return co_await stats(loop, *target);
            co_return co_await talk(loop, *target, commands);
        };
        auto r = loop.run(weft::with_timeout(work(), timeout));
        if (!r) {
            std::fprintf(stderr, "error: %s\n", r.error().message().c_str());
            return 1;
        }
        return *r;
    });
}

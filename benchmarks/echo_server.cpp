// Benchmark echo server: echoes every byte, TCP_NODELAY, one loop thread.
//
//   echo_server --backend NAME [--port N] [--api auto|read_some|receive] [--multishot on|off]
//               [--buffer-size BYTES] [--fixed-files on|off] [--incremental-buffers on|off]
//               [--bundles on|off] [--threads N] [--spread reuse_port|hand_off]
//
// NAME is any backend of weft::all_backends, or `epoll_lt_eager` (the textbook
// level-triggered interest policy, kept to measure epoll_lt's lazy one against it).
// --api picks how sessions read: read_some into their own buffer, or receive()
// leases from the backend's provided buffers. `auto` (the default) is receive() on every
// backend: on uring, multishot recv behind it needed 2-6% less CPU per message than
// single-shot recv (docs/io-models.md); on epoll_et, poll and sigio it measured within
// ±4% of read_some (benchmarks/compare.sh, 64 x depth 1 and 1000 x depth 16), which is
// the noise here; and an idle session then holds no buffer of its own. On blocking it
// costs a poll() before each recv (the buffer is taken only once data is there).
// --multishot off makes uring's receive() use one single-shot recv per call (to
// measure what multishot recv buys).
// --fixed-files on puts uring's sockets in the ring's registered file table (to measure
// what IOSQE_FIXED_FILE buys; off, the library's default).
// --incremental-buffers off makes uring's receive() take a whole provided buffer per
// completion (to measure what incremental consumption buys; on, the library's default).
// --bundles on lets uring's multishot recv take several provided buffers per completion
// (to measure what receive bundles buy; off, the library's default).
// --buffer-size sets read_some's buffer and the provided buffers' size. The default,
// 64 KiB, is the C epoll server's read buffer: with 16 KiB (the library's default for
// provided buffers) a connection with 16 x 4 KiB in flight took four reads and four
// writes where the C server takes one of each, and epoll_et needed 1.65x its CPU per
// message at 64 x 4096 B x depth 16 (1.06x with 64 KiB; benchmarks/results/bulk.md).
// --threads N (default 1) serves on N loops, one thread each (weft::runtime), spread by
// SO_REUSEPORT listeners or by loop 0 handing connections off (--spread): the threads
// dimension of benchmarks/run.py.
// Prints "port N" once listening (and with --threads, "loops connections=A/B/..." at
// exit: the connections each loop served); runs until SIGINT/SIGTERM, then exits with 0.
// `echo_server --list` prints one line per backend built in: its name, and
// `fd_limit=N` when the backend refuses descriptors from N up (select's FD_SETSIZE), and
// `unavailable` when it cannot run here (io_uring disabled); the benchmark runner takes
// its list of weft servers from it.
//
// Linked a second time with count_allocations.cpp as `echo_server_counting`, which
// prints the number of heap allocations of its whole run at exit (allocations=N).
#include <weft/weft.hpp>

#include <cstdio>
#include <limits>
#include <memory>
#include <string>

#include "args.hpp"


namespace {

struct settings {
    std::uint16_t port = 0;
    bool receive = false;    ///< --api receive
    bool multishot = true;   ///< --multishot (uring's receive())
    bool fixed_files = false; ///< --fixed-files (uring's registered file table)
    bool incremental = true;  ///< --incremental-buffers (uring's provided buffers)
    bool bundles = false;     ///< --bundles (uring's multishot recv)
    std::uint32_t buffer_size = 65536;  ///< --buffer-size
    unsigned threads = 1;               ///< --threads
    weft::spread spread = weft::spread::reuse_port;  ///< --spread
};

template <class B>
weft::task<void> session(weft::tcp_stream<B> s, std::uint32_t size) {
    (void)s.set_nodelay();
    auto buf = std::make_unique_for_overwrite<char[]>(size);  // once per connection
    for (;;) {
        auto n = co_await s.read_some(std::span(buf.get(), size));
        if (!n || *n == 0) co_return;
        if (!co_await s.write_all(std::span(buf.get(), *n))) co_return;
    }
}

template <class B>
weft::task<void> receive_session(weft::tcp_stream<B> s) {
    (void)s.set_nodelay();
    for (;;) {
        auto lease = co_await s.receive();
        if (!lease || lease->empty()) co_return;
        if (!co_await s.write_all(lease->bytes())) co_return;
    }
}

template <class B>
weft::task<void> serve(weft::loop<B>& loop, weft::tcp_listener<B>& listener, bool receive, std::uint32_t size) {
    for (;;) {
        auto c = co_await listener.accept();
        if (c)
            loop.spawn(receive ? receive_session(std::move(*c)) : session(std::move(*c), size));
        else if (c.error() == std::errc::operation_canceled)
            co_return;
        else
            (void)co_await weft::sleep_for(std::chrono::milliseconds(1));  // EMFILE and friends: back off
    }
}

template <class B>
typename B::options options_for(const settings& s) {
    typename B::options o;
    if constexpr (requires { o.multishot_recv; }) o.multishot_recv = s.multishot;
    if constexpr (requires { o.fixed_files; }) o.fixed_files = s.fixed_files;
    if constexpr (requires { o.incremental_buffers; }) o.incremental_buffers = s.incremental;
    if constexpr (requires { o.bundles; }) o.bundles = s.bundles;
    if constexpr (requires { o.buffer_size; }) o.buffer_size = s.buffer_size;
    return o;
}

/// The same sessions on `set.threads` loops.
template <class B>
int run_threads(const settings& set) {
    weft::runtime<B> rt({.threads = set.threads, .backend = options_for<B>(set)});
    const bool receive = set.receive;
    const std::uint32_t size = set.buffer_size;
    auto bound = rt.serve(weft::endpoint::loopback_v4(set.port),
                          [receive, size](weft::tcp_stream<B> s) {
                              return receive ? receive_session(std::move(s)) : session(std::move(s), size);
                          },
                          set.spread, {.backlog = 4096});
    if (!bound) {
        std::fprintf(stderr, "error: listen: %s\n", bound.error().message().c_str());
        return 1;
    }
    std::printf("port %u\n", bound->port());
    std::fflush(stdout);
    example::stop_on_signals(&rt);
    rt.run();
    example::stop_on_signals<weft::runtime<B>>(nullptr);
    // How the connections spread (benchmarks/run.py's threads section reads it).
    std::string per_loop;
    for (std::size_t i = 0; i < rt.size(); ++i) per_loop += (i ? "/" : "") + std::to_string(rt.stats(i).connections);
    std::printf("loops connections=%s\n", per_loop.c_str());
    return 0;
}

template <class B>
int run(const settings& set) {
    if (set.threads > 1) return run_threads<B>(set);
    weft::loop<B> loop(options_for<B>(set));
    auto listener = weft::tcp_listener<B>::bind(loop, weft::endpoint::loopback_v4(set.port), {.backlog = 4096});
    if (!listener) {
        std::fprintf(stderr, "error: listen: %s\n", listener.error().message().c_str());
        return 1;
    }
    std::printf("port %u\n", listener->local_endpoint().value().port());
    std::fflush(stdout);
    example::stop_on_signals(&loop);
    loop.spawn(serve(loop, *listener, set.receive, set.buffer_size));
    loop.run();
    example::stop_on_signals<weft::loop<B>>(nullptr);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    auto args = example::parse(argc, argv, {"--help", "--list"});
    if (args.get("--list")) {
        auto list = []<class B>() {
            std::printf("%.*s", static_cast<int>(B::name.size()), B::name.data());
            if constexpr (requires { B::fd_limit; })
                if (B::fd_limit < std::numeric_limits<int>::max()) std::printf(" fd_limit=%d", B::fd_limit);
            if (!B::available()) std::printf(" unavailable");
            std::printf("\n");
        };
        weft::all_backends::each(list);
        return 0;
    }
    settings set;
    set.port = example::port_or_exit(args.get("--port").value_or("0"));
    std::string name = args.get("--backend").value_or("epoll_et");
    std::string api = args.get("--api").value_or("auto");
    if (api != "auto" && api != "read_some" && api != "receive") {
        std::fprintf(stderr, "error: --api must be auto, read_some or receive, not '%s'\n", api.c_str());
        return 2;
    }
    set.multishot = example::on_off_or_exit("--multishot", args.get("--multishot").value_or("on"));
    set.fixed_files = example::on_off_or_exit("--fixed-files", args.get("--fixed-files").value_or("off"));
    set.incremental = example::on_off_or_exit("--incremental-buffers", args.get("--incremental-buffers").value_or("on"));
    set.bundles = example::on_off_or_exit("--bundles", args.get("--bundles").value_or("off"));
    set.buffer_size = static_cast<std::uint32_t>(
        example::number_or_exit("--buffer-size", args.get("--buffer-size").value_or("65536"), 64, 1u << 24));
    set.receive = api != "read_some";
    set.threads =
        static_cast<unsigned>(example::number_or_exit("--threads", args.get("--threads").value_or("1"), 1, 1024));
    const std::string spread = args.get("--spread").value_or("reuse_port");
    if (spread != "reuse_port" && spread != "hand_off") {
        std::fprintf(stderr, "error: --spread must be reuse_port or hand_off, not '%s'\n", spread.c_str());
        return 2;
    }
    set.spread = spread == "hand_off" ? weft::spread::hand_off : weft::spread::reuse_port;
    using measured = weft::backend_list<weft::backend::epoll_lt_eager>;
    int rc = 2;
    auto go = [&]<class B>() { rc = run<B>(set); };
    if (!weft::with_backend(name, go) && !measured::with(name, go)) {
        std::fprintf(stderr, "error: unknown backend '%s' (choose from: %s, epoll_lt_eager)\n", name.c_str(),
                     weft::all_backends::names().c_str());
    }
    return rc;
}

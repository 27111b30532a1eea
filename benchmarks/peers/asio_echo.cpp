// Peer echo server written with standalone Asio and C++20 coroutines, for the backend
// comparison. Same protocol as benchmarks/echo_server:
//
//   asio_echo [--port N]        (also --port=N; default 0 = ephemeral)
//
// Binds 127.0.0.1:N (SO_REUSEADDR, backlog 4096), prints "port N", echoes every byte
// with TCP_NODELAY on one thread, and exits with status 0 on SIGINT/SIGTERM.
//
// Built twice from this one source: `asio_echo` uses Asio's default reactor (epoll);
// `asio_uring_echo` is compiled with ASIO_HAS_IO_URING and ASIO_DISABLE_EPOLL, which
// make io_uring Asio's default backend for sockets, timers and signals alike (Asio
// >= 1.21). Nothing in the code differs between the two.
#include <asio/awaitable.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/redirect_error.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/version.hpp>
#include <asio/write.hpp>

#include <sys/resource.h>

#include <array>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string_view>
#include <system_error>
#include <utility>

namespace {

using asio::ip::tcp;

// The completion token. `use_awaitable` rather than `deferred`: in this Asio (1.22)
// deferred exists only as asio::experimental::deferred, and use_awaitable is the
// documented, stable way to await an operation from an asio::awaitable. Wrapped in
// redirect_error so that EOF, a peer's reset and the EMFILE of an accept come back as
// an error_code: they are expected events here, not exceptions to unwind through.
auto token(std::error_code& ec) { return asio::redirect_error(asio::use_awaitable, ec); }

/// One connection: read what is there, write it all back, until EOF or an error.
asio::awaitable<void> session(tcp::socket sock) {
    std::error_code ec;
    // Without it, Nagle holds back small echoes while the peer delays its ACK.
    sock.set_option(tcp::no_delay(true), ec);  // may fail if the peer already left; the read will tell
    // The buffer lives in the coroutine frame: one allocation per connection, none per
    // message (the same 16 KiB the weft echo server uses).
    std::array<char, 16 * 1024> buf;
    for (;;) {
        std::size_t n = co_await sock.async_read_some(asio::buffer(buf), token(ec));
        if (ec) co_return;  // EOF, reset, or cancelled at shutdown: the socket closes with the frame
        co_await asio::async_write(sock, asio::buffer(buf.data(), n), token(ec));
        if (ec) co_return;
    }
}

/// Accepts forever, one detached session coroutine per connection.
asio::awaitable<void> listen(tcp::acceptor acceptor) {
    auto executor = co_await asio::this_coro::executor;
    asio::steady_timer backoff(executor);
    for (;;) {
        std::error_code ec;
        tcp::socket sock = co_await acceptor.async_accept(token(ec));
        if (!ec) {
            asio::co_spawn(executor, session(std::move(sock)), asio::detached);
        } else if (ec == asio::error::operation_aborted) {
            co_return;
        } else {
            // EMFILE/ENFILE (or ENOBUFS, ...): the pending connection stays in the backlog
            // and retrying at once would fail again. Back off 1 ms so existing sessions,
            // whose closing frees descriptors, keep being served.
            backoff.expires_after(std::chrono::milliseconds(1));
            co_await backoff.async_wait(token(ec));
        }
    }
}

/// Parses `--port N` / `--port=N`; exits with status 2 naming the problem otherwise.
std::uint16_t parse_port(int argc, char** argv) {
    std::uint16_t port = 0;
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        std::string_view value;
        if (arg == "--port") {
            if (i + 1 == argc) {
                std::fprintf(stderr, "error: option --port needs a value\n");
                std::exit(2);
            }
            value = argv[++i];
        } else if (arg.starts_with("--port=")) {
            value = arg.substr(7);
        } else {
            std::fprintf(stderr, "error: unknown argument '%s' (usage: %s [--port N])\n", argv[i], argv[0]);
            std::exit(2);
        }
        auto [end, err] = std::from_chars(value.data(), value.data() + value.size(), port);
        if (err != std::errc{} || end != value.data() + value.size()) {
            std::fprintf(stderr, "error: --port must be a number 0..65535, got '%.*s'\n",
                         static_cast<int>(value.size()), value.data());
            std::exit(2);
        }
    }
    return port;
}

}  // namespace

int main(int argc, char** argv) {
    const std::uint16_t port = parse_port(argc, argv);

    // 10,000 connections need more descriptors than the usual soft limit of 1024.
    if (rlimit lim{}; getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &lim);
    }
    // Asio's reactor sends with MSG_NOSIGNAL, but its io_uring backend submits sendmsg
    // with the caller's flags only: writing to a reset connection would raise SIGPIPE.
    std::signal(SIGPIPE, SIG_IGN);

    try {
        // Concurrency hint 1: only this thread runs the context, so Asio may skip
        // some of its cross-thread wakeup work.
        asio::io_context ctx(1);

        tcp::acceptor acceptor(ctx);
        acceptor.open(tcp::v4());
        acceptor.set_option(tcp::acceptor::reuse_address(true));
        acceptor.bind(tcp::endpoint(asio::ip::address_v4::loopback(), port));
        acceptor.listen(4096);
        std::printf("port %u\n", static_cast<unsigned>(acceptor.local_endpoint().port()));
        std::fflush(stdout);

        // Stopping the context leaves the sessions suspended; ~io_context then destroys
        // their frames, which closes every socket: a normal exit with status 0.
        asio::signal_set signals(ctx, SIGINT, SIGTERM);
        signals.async_wait([&ctx](const std::error_code&, int) { ctx.stop(); });

        // The acceptor moves into the coroutine so that its frame owns it. An exception
        // escaping the accept loop (none is expected) is rethrown out of ctx.run().
        asio::co_spawn(ctx, listen(std::move(acceptor)), [](std::exception_ptr e) {
            if (e) std::rethrow_exception(e);
        });
        ctx.run();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}

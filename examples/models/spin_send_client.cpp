// The non-blocking client of the textbooks (backend::spin): it sends a payload much
// larger than the socket buffers to an upper-case server while reading the answer, and
// checks every byte came back upper-cased.
//
// What the model does: every socket is non-blocking and nothing ever waits for
// readiness. `write_some` is one send(2): when the socket buffer is full it takes only
// part of the chunk (the program sees that, counts it and sends the rest), and when it
// takes nothing (EAGAIN) the loop simply tries again on its next pass, as it tries the
// pending read. So the process never sleeps while anything is pending: CPU time equals
// wall time, which the program prints. That is the model's cost. (write_all would hide
// the partial sends; they are spelled out here because they are the lesson.)
//
// What it costs the server side, measured by benchmarks/run.py on the 2-core test
// machine (2026-12-01, server CPU per echoed 64-byte message, depth 1): 10.3 µs/msg at
// 64 connections (epoll_et: 8.4), and the server's core is at 100% however light the
// load: at one connection, 26.5 µs/msg against epoll_et's 17.9.
//
//   spin_send_client --port N [--host 127.0.0.1] [--bytes 4194304]
// Prints "sent N bytes in K sends (P partial), received N upper-cased; W ms, CPU C ms"
// and exits 0, or prints what went wrong and exits 1.
#include <weft/backend/spin.hpp>
#include <weft/cancel.hpp>
#include <weft/loop.hpp>
#include <weft/net/tcp.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "../args.hpp"
#include "../endpoint_arg.hpp"

namespace {

using B = weft::backend::spin;

/// The i-th byte of the payload: lower-case letters and a newline now and then.
char payload_byte(std::size_t i) noexcept { return i % 64 == 63 ? '\n' : static_cast<char>('a' + i % 26); }

struct totals {
    std::size_t sends = 0, partial = 0, sent = 0, received = 0;
    std::string error;
};

weft::task<void> writer(weft::tcp_stream<B>& s, std::size_t bytes, totals& t) {
    std::vector<char> chunk(256 * 1024);
    while (t.sent < bytes) {
        std::size_t n = std::min(chunk.size(), bytes - t.sent);
        for (std::size_t i = 0; i < n; ++i) chunk[i] = payload_byte(t.sent + i);
        std::size_t off = 0;
        while (off < n) {  // send until it goes through
            auto w = co_await s.write_some(std::span(chunk.data() + off, n - off));
            if (!w) {
                t.error = "send: " + w.error().message();
                co_return;
            }
            ++t.sends;
            if (*w < n - off) ++t.partial;
            off += *w;
        }
        t.sent += n;
    }
    (void)s.shutdown();  // the server answers the rest, then closes
}

weft::task<void> reader(weft::tcp_stream<B>& s, std::size_t bytes, totals& t) {
    std::vector<char> buf(64 * 1024);
    for (;;) {
        auto n = co_await s.read_some(buf);
        if (!n) {
            t.error = "recv: " + n.error().message();
            co_return;
        }
        if (*n == 0) break;
        for (std::size_t i = 0; i < *n; ++i) {
            char want = payload_byte(t.received + i);
            if (want != '\n') want = static_cast<char>(want - 'a' + 'A');
            if (buf[i] != want) {
                t.error = "byte " + std::to_string(t.received + i) + " came back wrong";
                co_return;
            }
        }
        t.received += *n;
    }
    if (t.received != bytes)
        t.error = "received " + std::to_string(t.received) + " of " + std::to_string(bytes) + " bytes";
}

double cpu_ms() {
    rusage u{};
    ::getrusage(RUSAGE_SELF, &u);
    auto ms = [](const timeval& tv) {
        return static_cast<double>(tv.tv_sec) * 1e3 + static_cast<double>(tv.tv_usec) / 1e3;
    };
    return ms(u.ru_utime) + ms(u.ru_stime);
}

}  // namespace

int main(int argc, char** argv) {
    auto args = example::parse(argc, argv);
    if (args.get("--help") || !args.get("--port")) {
        std::printf("usage: spin_send_client --port N [--host ADDR] [--bytes N]\n");
        return args.get("--help") ? 0 : 2;
    }
    auto where =
        example::endpoint_or_exit(args.get("--host").value_or("127.0.0.1"), example::port_or_exit(*args.get("--port")));
    std::size_t bytes = example::number_or_exit("--bytes", args.get("--bytes").value_or("4194304"), 1, 1ul << 34);
    weft::loop<B> loop;
    totals t;
    auto start = std::chrono::steady_clock::now();
    double cpu_start = cpu_ms();
    loop.run([&]() -> weft::task<void> {
        auto s = co_await weft::tcp_stream<B>::connect(loop, where);
        if (!s) {
            t.error = "connect to " + where.to_string() + ": " + s.error().message();
            co_return;
        }
        // A small send buffer, as on a real network path: loopback's autotuned one can
        // take a whole chunk at once, and the partial sends would not show.
        (void)s->set_send_buffer_size(32 * 1024);
        (void)co_await weft::when_all(writer(*s, bytes, t), reader(*s, bytes, t));
    }());
    double wall = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (!t.error.empty()) {
        std::printf("spin_send_client: %s\n", t.error.c_str());
        return 1;
    }
    std::printf("sent %zu bytes in %zu sends (%zu partial), received %zu upper-cased; %.0f ms, CPU %.0f ms\n", t.sent,
                t.sends, t.partial, t.received, wall, cpu_ms() - cpu_start);
    return 0;
}

// buffered_reader on every backend: lines split across reads and pipelined in one,
// length limits and the skipping of over-long lines, EOF, lines mixed with binary
// bodies, cancellation, and the allocation-free steady state.
#include "alloc_counter.hpp"
#include "helpers.hpp"

#include <weft/net/buffered.hpp>

#include <array>
#include <string>
#include <string_view>
#include <vector>

using namespace weft_test;

namespace {
template <class B>
using reader_t = weft::buffered_reader<weft::tcp_stream<B>>;
// A reader is a stream too: it can be stacked, or handed to code written for streams.
static_assert(weft::readable_stream<reader_t<weft::backend::epoll_lt>>);

std::string_view text_of(std::span<const std::byte> b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

/// A stream of another type than `tcp_stream` (a reader works over any
/// `readable_stream`), which counts the reads the reader makes.
template <class B>
struct counting_stream {
    weft::tcp_stream<B> inner;
    std::size_t* reads;
    auto read_some(std::span<std::byte> buf) noexcept {
        ++*reads;
        return inner.read_some(buf);
    }
};

/// Sends `data` in pieces of `piece` bytes with a loop turn after each, so the reader
/// sees them in separate reads (TCP_NODELAY: no coalescing by Nagle). Runs as a second
/// child of `when_all`: on backend::blocking that is another thread, so it reports
/// through `ok` instead of Catch2 assertions.
template <class B>
weft::task<void> send_pieces(weft::tcp_stream<B>& s, std::string data, std::size_t piece, bool& ok) {
    (void)s.set_nodelay();
    for (std::size_t at = 0; at < data.size(); at += piece) {
        if (!co_await s.write_all(std::string_view(data).substr(at, piece))) {
            ok = false;
            co_return;
        }
        (void)co_await weft::sleep_for(std::chrono::nanoseconds(0));
    }
}

/// Reads `rounds` batches of `lines` and counts mismatches. Its first parameter is the
/// reader: a coroutine shaped like a user's session handler, which must not take the
/// reader's frame arena for itself (else every call it makes would allocate).
template <class B>
weft::task<std::size_t> read_batches(reader_t<B>& r, weft::tcp_stream<B>& peer, const std::string& batch,
                                     const std::vector<std::string>& lines, int rounds, alloc_counts& warm) {
    std::size_t wrong = 0;
    for (int round = 0; round < rounds; ++round) {
        if (!co_await peer.write_all(batch)) ++wrong;
        for (const std::string& expected : lines) {
            auto line = co_await r.read_line();
            if (!line || *line != expected) ++wrong;
        }
        std::array<char, 8> tail;  // each batch ends in 8 bytes of binary
        auto n = co_await r.read_exact(tail);
        if (!n || std::string_view(tail.data(), tail.size()) != "\x01\x02\n\r\x03\x04\x05\x06") ++wrong;
        if (round == rounds / 2 - 1) warm = alloc_snapshot();  // after the warm-up half
    }
    co_return wrong;
}
}  // namespace

TEMPLATE_TEST_CASE("buffered_reader assembles lines and records that arrive a byte at a time", "[buffered]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        std::size_t reads = 0;
        weft::buffered_reader<counting_stream<TestType>> r(counting_stream<TestType>{std::move(p.server), &reads}, 64);
        bool sent = true;
        auto reader = [&]() -> weft::task<void> {
            auto a = co_await r.read_line();
            REQUIRE(a);
            REQUIRE(*a == "first line");
            auto b = co_await r.read_line();
            REQUIRE(b);
            REQUIRE(*b == "second");  // "\r\n" ending
            auto c = co_await r.read_line();
            REQUIRE(c);
            REQUIRE(c->empty());
            // A four-byte delimiter split over four reads, after a false start ("\r\n\r").
            auto d = co_await r.read_until("\r\n\r\n", 64);
            REQUIRE(d);
            REQUIRE(*d == "head: a\r\n\rb\r\n\r\n");
            auto e = co_await r.read_until("--", 64);
            REQUIRE(e);
            REQUIRE(*e == "x-y--");
            REQUIRE(r.buffered().empty());
        };
        const std::string data = "first line\nsecond\r\n\nhead: a\r\n\rb\r\n\r\nx-y--";
        co_await weft::when_all(reader(), send_pieces(p.client, data, 1, sent));
        REQUIRE(sent);
        // The bytes really came one read at a time (all 40 in 40 reads here); threads
        // (backend::blocking) may let a few coalesce under load.
        if constexpr (TestType::kind != weft::backend_kind::blocking) REQUIRE(reads > data.size() / 2);
    }());
}

TEMPLATE_TEST_CASE("buffered_reader serves lines pipelined in one write, stripping \\r\\n", "[buffered]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        reader_t<TestType> r(std::move(p.server));
        CO_REQUIRE(co_await p.client.write_all(std::string_view("one\ntwo\r\na\rb\r\n\r\n\rthree\n")));
        const std::string_view expected[] = {"one", "two", "a\rb", "", "\rthree"};
        for (std::string_view want : expected) {
            auto line = co_await r.read_line();
            REQUIRE(line);
            REQUIRE(*line == want);
        }
        REQUIRE(r.buffered().empty());
        // read_until keeps the delimiter.
        CO_REQUIRE(co_await p.client.write_all(std::string_view("k=v;k2=v2;")));
        auto kv = co_await r.read_until(";", 100);
        REQUIRE(kv);
        REQUIRE(*kv == "k=v;");
        REQUIRE(text_of(r.buffered()) == "k2=v2;");  // the rest came in the same read
        reader_t<TestType> moved(std::move(r));      // buffered bytes move with the reader
        REQUIRE(text_of(moved.buffered()) == "k2=v2;");
        auto kv2 = co_await moved.read_until(";", 100);
        REQUIRE(kv2);
        REQUIRE(*kv2 == "k2=v2;");
    }());
}

TEMPLATE_TEST_CASE("buffered_reader: a line of max_length passes, one byte more is skipped whole", "[buffered]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        reader_t<TestType> r(std::move(p.server), 64);
        REQUIRE(r.capacity() == 64);
        CO_REQUIRE(
            co_await p.client.write_all(std::string_view("abcdefghijklmno\n"   // 16 bytes
                                                         "abcdefghijklmnop\n"  // 17 bytes
                                                         "next\n"
                                                         "abcdefghijklmn\r\n")));  // 16 with \r\n
        auto ok = co_await r.read_line(16);
        REQUIRE(ok);
        REQUIRE(*ok == "abcdefghijklmno");
        auto too_long = co_await r.read_line(16);
        REQUIRE(too_long.error() == weft::errc::line_too_long);
        auto next = co_await r.read_line(16);
        REQUIRE(next);
        REQUIRE(*next == "next");
        auto crlf = co_await r.read_line(16);
        REQUIRE(crlf);
        REQUIRE(*crlf == "abcdefghijklmn");

        // A delimiter that starts within the limit but ends past it makes the record too
        // long, and the skip consumes exactly that delimiter.
        CO_REQUIRE(co_await p.client.write_all(std::string_view("123456\r\n1234567\r\nnext\r\n")));
        auto eight = co_await r.read_until("\r\n", 8);
        REQUIRE(eight);
        REQUIRE(*eight == "123456\r\n");
        auto nine = co_await r.read_until("\r\n", 8);
        REQUIRE(nine.error() == weft::errc::line_too_long);
        auto after = co_await r.read_until("\r\n", 8);
        REQUIRE(after);
        REQUIRE(*after == "next\r\n");
        // The same delimiter split between the over-long call and the next one: the
        // skip keeps the "\r" until the "\n" arrives.
        CO_REQUIRE(co_await p.client.write_all(std::string_view("123456789\r")));
        auto split = co_await r.read_until("\r\n", 8);
        REQUIRE(split.error() == weft::errc::line_too_long);
        CO_REQUIRE(co_await p.client.write_all(std::string_view("\nnext\r\nlater\r\n")));
        auto after_split = co_await r.read_until("\r\n", 8);
        REQUIRE(after_split);
        REQUIRE(*after_split == "next\r\n");
        auto later = co_await r.read_until("\r\n", 8);
        REQUIRE(later);
        REQUIRE(*later == "later\r\n");

        // max_length above the capacity is clamped to it (the default is the capacity).
        const std::string fits = std::string(63, 'f') + "\n", over = std::string(64, 'o') + "\n";
        CO_REQUIRE(co_await p.client.write_all(fits + over + fits + over + "end\n"));
        auto f1 = co_await r.read_line();
        REQUIRE(f1);
        REQUIRE(f1->size() == 63);
        auto o1 = co_await r.read_line();
        REQUIRE(o1.error() == weft::errc::line_too_long);
        auto f2 = co_await r.read_line(1'000'000);
        REQUIRE(f2);
        REQUIRE(f2->size() == 63);
        auto o2 = co_await r.read_line(1'000'000);
        REQUIRE(o2.error() == weft::errc::line_too_long);
        auto end = co_await r.read_line();
        REQUIRE(end);
        REQUIRE(*end == "end");

        // Delimiters that can never fit are refused without reading.
        auto empty = co_await r.read_until("", 10);
        REQUIRE(empty.error() == std::errc::invalid_argument);
        auto wide = co_await r.read_until("abc", 2);
        REQUIRE(wide.error() == std::errc::invalid_argument);
    }());
}

TEMPLATE_TEST_CASE("buffered_reader skips an over-long line that arrives in pieces, across calls", "[buffered]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        reader_t<TestType> r(std::move(p.server), 64);
        bool sent = true;
        // 1,000 bytes, then a line; 300 bytes ending in "\r\n", then 4 bytes of binary.
        // Pieces of 6 bytes split that "\r\n" (at offset 1,307) across two reads.
        const std::string data = std::string(1000, 'x') + "\nafter\n" + std::string(300, 'y') + "\r\nWXYZ";
        auto reader = [&]() -> weft::task<void> {
            auto first = co_await r.read_line();
            REQUIRE(first.error() == weft::errc::line_too_long);
            auto after = co_await r.read_line();  // finishes skipping the 1,000 bytes first
            REQUIRE(after);
            REQUIRE(*after == "after");
            auto second = co_await r.read_until("\r\n", 32);
            REQUIRE(second.error() == weft::errc::line_too_long);
            std::array<char, 4> bin;
            auto n = co_await r.read_exact(bin);  // any next call finishes the skip
            REQUIRE(n);
            REQUIRE(std::string_view(bin.data(), bin.size()) == "WXYZ");
        };
        co_await weft::when_all(reader(), send_pieces(p.client, data, 6, sent));
        REQUIRE(sent);
    }());
}

TEMPLATE_TEST_CASE("buffered_reader reports EOF at a line boundary and in the middle of a line", "[buffered]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        {  // at a boundary: nothing is left over
            auto p = co_await make_pair(loop);
            reader_t<TestType> r(std::move(p.server));
            CO_REQUIRE(co_await p.client.write_all(std::string_view("a\nb\n")));
            REQUIRE(p.client.shutdown());
            auto a = co_await r.read_line();
            auto b = co_await r.read_line();
            REQUIRE((a && b && *a == "a" && *b == "b"));
            auto eof = co_await r.read_line();
            REQUIRE(eof.error() == weft::errc::eof);
            REQUIRE(r.buffered().empty());
            auto again = co_await r.read_line();  // EOF stays EOF
            REQUIRE(again.error() == weft::errc::eof);
        }
        {  // mid-line: the partial line stays visible in buffered()
            auto p = co_await make_pair(loop);
            reader_t<TestType> r(std::move(p.server));
            CO_REQUIRE(co_await p.client.write_all(std::string_view("whole\npartial")));
            REQUIRE(p.client.shutdown());
            auto whole = co_await r.read_line();
            REQUIRE(whole);
            REQUIRE(*whole == "whole");
            auto eof = co_await r.read_line();
            REQUIRE(eof.error() == weft::errc::eof);
            REQUIRE(text_of(r.buffered()) == "partial");
            // read_some hands out what is buffered, then reports EOF as 0 bytes.
            std::array<char, 4> four;
            auto n = co_await r.read_some(four);
            REQUIRE(n);
            REQUIRE(std::string_view(four.data(), *n) == "part");
            REQUIRE(text_of(r.buffered()) == "ial");
            r.consume(100);
            REQUIRE(r.buffered().empty());
            auto zero = co_await r.read_some(four);
            REQUIRE(zero);
            REQUIRE(*zero == 0);
        }
        {  // inside an over-long line: the rest of it is dropped, then EOF
            auto p = co_await make_pair(loop);
            reader_t<TestType> r(std::move(p.server), 32);
            CO_REQUIRE(co_await p.client.write_all(std::string(100, 'z')));
            REQUIRE(p.client.shutdown());
            auto too_long = co_await r.read_line();
            REQUIRE(too_long.error() == weft::errc::line_too_long);
            auto eof = co_await r.read_line();
            REQUIRE(eof.error() == weft::errc::eof);
            REQUIRE(r.buffered().empty());
        }
        {  // read_exact: EOF before the count; what did arrive stays buffered
            auto p = co_await make_pair(loop);
            reader_t<TestType> r(std::move(p.server));
            CO_REQUIRE(co_await p.client.write_all(std::string_view("12345")));
            REQUIRE(p.client.shutdown());
            std::array<char, 8> eight;
            auto n = co_await r.read_exact(eight);
            REQUIRE(n.error() == weft::errc::eof);
            REQUIRE(text_of(r.buffered()) == "12345");
        }
    }());
}

TEMPLATE_TEST_CASE("buffered_reader mixes lines with binary bodies read by read_exact", "[buffered]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        reader_t<TestType> r(std::move(p.server), 256);
        const std::string small("\r\n\0bin\n\xff\r!", 10);
        const auto big = pattern(100'000, 5);  // far larger than the buffer
        const std::string wire = "POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\n" + small + "PUT /y HTTP/1.1\r\n\r\n" +
                                 std::string(big.begin(), big.end()) + "BYE\r\n";
        bool sent = true;
        auto reader = [&]() -> weft::task<void> {
            const std::string_view head[] = {"POST /x HTTP/1.1", "Content-Length: 10", ""};
            for (std::string_view want : head) {
                auto line = co_await r.read_line();
                REQUIRE(line);
                REQUIRE(*line == want);
            }
            std::array<char, 10> body;
            auto n = co_await r.read_exact(body);
            REQUIRE(n);
            REQUIRE(*n == 10);
            REQUIRE(std::string_view(body.data(), body.size()) == small);
            auto put = co_await r.read_until("\r\n\r\n", 256);
            REQUIRE(put);
            REQUIRE(*put == "PUT /y HTTP/1.1\r\n\r\n");
            std::vector<char> got(big.size());
            auto m = co_await r.read_exact(got);
            REQUIRE(m);
            REQUIRE(*m == big.size());
            REQUIRE(got == big);
            auto bye = co_await r.read_line();
            REQUIRE(bye);
            REQUIRE(*bye == "BYE");
            auto eof = co_await r.read_line();
            REQUIRE(eof.error() == weft::errc::eof);
        };
        auto writer = [&]() -> weft::task<void> {
            if (!co_await p.client.write_all(wire) || !p.client.shutdown()) sent = false;
        };
        co_await weft::when_all(reader(), writer());
        REQUIRE(sent);
    }());
}

TEMPLATE_TEST_CASE("buffered_reader read_some serves buffered bytes first and refuses an empty buffer", "[buffered]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        reader_t<TestType> r(std::move(p.server), 64);
        CO_REQUIRE(co_await p.client.write_all(std::string_view("line\nrest-of-data")));
        auto line = co_await r.read_line();
        REQUIRE(line);
        REQUIRE(*line == "line");
        std::array<char, 4> four;
        auto a = co_await r.read_some(four);
        REQUIRE(a);
        REQUIRE(std::string_view(four.data(), *a) == "rest");
        // An empty buffer fails at once (0 bytes would read as EOF), buffered or not.
        auto none = co_await r.read_some(std::span<char>());
        REQUIRE(none.error() == weft::errc::empty_buffer);
        std::array<char, 128> big;  // larger than the capacity
        auto b = co_await r.read_some(big);
        REQUIRE(b);
        REQUIRE(std::string_view(big.data(), *b) == "-of-data");  // the buffered bytes, no stream read
        REQUIRE(r.buffered().empty());
        auto none2 = co_await r.read_some(std::span<char>());
        REQUIRE(none2.error() == weft::errc::empty_buffer);
        // Nothing buffered and a big buffer: read straight into it.
        CO_REQUIRE(co_await r.stream().write_all(std::string_view("ping")));  // writes go through stream()
        std::array<char, 4> ping;
        CO_REQUIRE(co_await p.client.read_exact(ping));
        REQUIRE(std::string_view(ping.data(), ping.size()) == "ping");
        CO_REQUIRE(co_await p.client.write_all(std::string_view("pong")));
        auto c = co_await r.read_some(big);
        REQUIRE(c);
        REQUIRE(std::string_view(big.data(), *c) == "pong");
        REQUIRE(r.buffered().empty());
    }());
}

TEMPLATE_TEST_CASE("a buffered read_line cancelled by with_timeout loses no bytes", "[buffered][cancel]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        reader_t<TestType> r(std::move(p.server), 64);
        // The peer sends half a line and goes silent.
        CO_REQUIRE(co_await p.client.write_all(std::string_view("hel")));
        auto silent = co_await weft::with_timeout(r.read_line(), 50ms);
        REQUIRE(silent.error() == std::errc::timed_out);
        REQUIRE(text_of(r.buffered()) == "hel");  // kept for the next call
        CO_REQUIRE(co_await p.client.write_all(std::string_view("lo\n")));
        auto line = co_await weft::with_timeout(r.read_line(), 5s);
        REQUIRE(line);
        REQUIRE(*line == "hello");
        // Cancelled while it is still skipping an over-long line: the skip goes on later.
        CO_REQUIRE(co_await p.client.write_all(std::string(100, 'z')));
        auto too_long = co_await r.read_line();
        REQUIRE(too_long.error() == weft::errc::line_too_long);
        auto skipping = co_await weft::with_timeout(r.read_line(), 30ms);
        REQUIRE(skipping.error() == std::errc::timed_out);
        CO_REQUIRE(co_await p.client.write_all(std::string_view("zz\nok\n")));
        auto ok = co_await weft::with_timeout(r.read_line(), 5s);
        REQUIRE(ok);
        REQUIRE(*ok == "ok");
        // read_exact cancelled half way consumes nothing.
        CO_REQUIRE(co_await p.client.write_all(std::string_view("ab")));
        std::array<char, 4> four;
        auto part = co_await weft::with_timeout(r.read_exact(four), 30ms);
        REQUIRE(part.error() == std::errc::timed_out);
        REQUIRE(text_of(r.buffered()) == "ab");
        CO_REQUIRE(co_await p.client.write_all(std::string_view("cd")));
        auto whole = co_await weft::with_timeout(r.read_exact(four), 5s);
        REQUIRE(whole);
        REQUIRE(std::string_view(four.data(), four.size()) == "abcd");
    }());
}

TEMPLATE_TEST_CASE("buffered_reader: 1,000 read_line calls after warm-up allocate nothing", "[buffered][alloc]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    // 20 lines of varied length and 8 bytes of binary per batch, through a 256-byte
    // buffer: every batch takes several reads and compactions.
    std::vector<std::string> lines;
    std::string batch;
    for (int i = 0; i < 20; ++i) {
        lines.push_back("line " + std::to_string(i) + std::string(static_cast<std::size_t>(i * 7 % 40), '.'));
        batch += lines.back() + (i % 3 == 0 ? "\r\n" : "\n");
    }
    batch += std::string_view("\x01\x02\n\r\x03\x04\x05\x06", 8);
    constexpr int rounds = 100;  // 2,000 read_line calls (and 100 read_exact): 1,000 measured
    std::size_t wrong = 0, steady_allocs = 0;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        reader_t<TestType> r(std::move(p.server), 256);
        alloc_counts warm{};
        // Measured from the middle, not the start: on backend::blocking the harness's own
        // deadline thread allocates as it starts (see echo_allocations).
        wrong = co_await read_batches(r, p.client, batch, lines, rounds, warm);
        steady_allocs = alloc_snapshot().allocs - warm.allocs;
    }());
    REQUIRE(wrong == 0);
    REQUIRE(steady_allocs == 0);
}

TEMPLATE_TEST_CASE("buffered_reader: a second call in flight takes its frame from the heap", "[buffered][alloc]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        reader_t<TestType> r(std::move(p.server));
        CO_REQUIRE(co_await p.client.write_all(std::string_view("warm\none\ntwo\n")));
        auto warm = co_await r.read_line();  // the arena's block now exists
        REQUIRE(warm);
        auto before = alloc_snapshot();
        std::size_t allocs = 0, frees = 0;
        std::string first, second;
        {
            auto t1 = r.read_line();  // the arena's block
            auto t2 = r.read_line();  // block in use: the heap
            auto a = co_await std::move(t1);
            if (a) first = *a;  // (copied: the view lasts only until the next call)
            auto b = co_await std::move(t2);
            if (b) second = *b;
        }
        auto after = alloc_snapshot();
        allocs = after.allocs - before.allocs;
        frees = after.frees - before.frees;
        REQUIRE(first == "one");
        REQUIRE(second == "two");
        // At most the second frame (the strings fit their small buffers); clang may elide
        // it into this coroutine's frame (0). On backend::blocking the harness's deadline
        // thread may allocate in this window (see echo_allocations).
        if constexpr (TestType::kind != weft::backend_kind::blocking) {
            REQUIRE(allocs <= 1);
            REQUIRE(frees == allocs);
        }
    }());
}

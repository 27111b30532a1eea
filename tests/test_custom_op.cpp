// The extension point: an IO operation written outside weft, from the contract that
// `weft::io_operation` states (io.hpp) and docs/guides/custom-operations.md walks
// through. The operation here is a peek (recv with MSG_PEEK: the bytes stay queued),
// which weft does not have; it gets the tests every weft operation gets: the happy
// path, a timeout, cancellation by close, and the fd-reuse check.
#include "fd_reuse.hpp"
#include "helpers.hpp"

#include <sys/socket.h>

#include <array>
#include <atomic>
#include <optional>
#include <span>
#include <string>

using namespace weft_test;

namespace {

/// Looks at the bytes waiting on a stream socket without taking them.
struct peek_op {
    int fd;
    std::span<std::byte> buf;
    // The proactor's submission points at these; they are filled in `prepare`, after
    // the operation has been moved into its awaiter (pointers made earlier would dangle).
    iovec iov{};
    msghdr msg{};

    static constexpr weft::interest dir = weft::interest::read;

    /// Reactors and blocking: the syscall itself, through weft::sys (the fault hook sees it).
    int try_now() noexcept { return static_cast<int>(weft::sys::recv(fd, buf.data(), buf.size(), MSG_PEEK)); }
    /// A peek takes nothing off the socket, so no result proves it drained.
    bool drained(int) const noexcept { return false; }
    /// io_uring: a recvmsg with MSG_PEEK.
    template <class P>
    void prepare(P& p) noexcept {
        iov = {buf.data(), buf.size()};
        msg = {};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        p.recvmsg(fd, &msg, MSG_PEEK);
    }
    weft::result<std::size_t> make(int res) const noexcept { return weft::op_result<std::size_t>(res); }
};

/// `co_await peek(stream, buf)`: the bytes waiting, at least 1 (0 at EOF), left in place.
template <class B, weft::mutable_byte_buffer Buf>
weft::io_awaiter<B, peek_op> peek(weft::tcp_stream<B>& s, Buf&& buf) {
    return {s.backend(), {s.native_handle(), weft::as_writable_bytes(buf)}};
}

static_assert(weft::io_operation<peek_op, weft::backend::epoll_et>);
static_assert(weft::io_operation<peek_op, weft::backend::blocking>);
#if WEFT_HAS_URING
static_assert(weft::io_operation<peek_op, weft::backend::uring>);
#endif

}  // namespace

TEMPLATE_TEST_CASE("custom operation: a peek sees the waiting bytes and leaves them to be read", "[custom-op]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        // Waits for data first (the peek parks, or submits, or blocks), then sees it.
        auto sender = [](weft::tcp_stream<TestType>& c) -> weft::task<void> {
            (void)co_await weft::sleep_for(10ms);
            auto w = co_await c.write_all(std::string_view("hello, peek"));
            REQUIRE(w);
        };
        std::array<char, 5> head{};
        auto peeker = [](weft::tcp_stream<TestType>& s, std::array<char, 5>& h) -> weft::task<weft::result<std::size_t>> {
            co_return co_await peek(s, h);
        };
        auto [seen, sent] = co_await weft::when_all(peeker(p.server, head), sender(p.client));
        (void)sent;
        REQUIRE(seen);
        REQUIRE(*seen == 5);
        REQUIRE(std::string_view(head.data(), 5) == "hello");
        // Still there: the read takes all of it, peeked bytes included.
        std::string all(11, '\0');
        auto r = co_await p.server.read_exact(all);
        REQUIRE(r);
        REQUIRE(all == "hello, peek");
        // At EOF a peek sees 0, as a read does.
        REQUIRE(p.client.close());
        auto end = co_await peek(p.server, head);
        REQUIRE(end);
        REQUIRE(*end == 0);
    }());
}

TEMPLATE_TEST_CASE("custom operation: a timed-out peek leaves its buffer alone and the bytes to the next read",
                   "[custom-op][cancel]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        std::string buf(16, 'x');
        auto r = co_await weft::with_timeout(peek(p.server, buf), 20ms);
        REQUIRE_FALSE(r);
        REQUIRE(r.error() == std::errc::timed_out);
        REQUIRE(buf == std::string(16, 'x'));
        auto w = co_await p.client.write_all(std::string_view("after"));
        REQUIRE(w);
        std::string got(5, '\0');
        auto n = co_await weft::with_timeout(p.server.read_exact(got), 2s);
        REQUIRE(n);
        REQUIRE(got == "after");
    }());
}

TEMPLATE_TEST_CASE("custom operation: a peek closed under it completes once and never reads the socket that takes its "
                   "number",
                   "[custom-op][lifetime][fd-reuse]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    std::atomic<int> completions{0};
    std::optional<std::error_code> error;
    std::string buf(64, 'x');
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        std::optional<reused_stream<TestType>> next;
        auto peeker = [&](weft::tcp_stream<TestType>& s) -> weft::task<void> {
            auto r = co_await peek(s, buf);
            if (!r) error = r.error();
            ++completions;
        };
        auto closer = [&](tcp_pair<TestType>& pair) -> weft::task<void> {
            (void)co_await weft::sleep_for(20ms);  // the peek waits by now
            int fd = pair.server.native_handle();
            CHECK(pair.server.close());
            next.emplace(new_stream_on(loop, fd));  // the number is reused at once
        };
        co_await weft::when_all(peeker(p.server), closer(p));
        REQUIRE(next);
        co_await check_new_stream(*next);  // its bytes are all there, none taken by the peek
        (void)co_await weft::sleep_for(10ms);
    }());
    REQUIRE(completions == 1);
    REQUIRE(error);
    REQUIRE(*error == std::errc::operation_canceled);
    REQUIRE(buf == std::string(64, 'x'));  // nothing written into it after the close
}

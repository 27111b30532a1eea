// Unix domain sockets on every backend: stream listener and stream at a path and in the
// abstract namespace, socketpair, passing fds (an open TCP socket that then carries data),
// datagrams, clear errors for bad paths, and the lifetime rules (cancel, close, reuse).
#include "helpers.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>

using namespace weft_test;

namespace {
/// A fresh directory under /tmp for one test's socket files, removed with them.
struct temp_dir {
    std::string path;
    temp_dir() {
        char tmpl[] = "/tmp/weft-unix-XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        path = tmpl;
    }
    ~temp_dir() {
        std::string cmd = "rm -rf '" + path + "'";
        [[maybe_unused]] int r = std::system(cmd.c_str());
    }
    std::string file(std::string_view name) const { return path + "/" + std::string(name); }
};

std::string unique_abstract(std::string_view what) {
    static std::atomic<int> n{0};
    return "weft-test-" + std::to_string(::getpid()) + "-" + std::string(what) + "-" + std::to_string(n++);
}

bool exists(const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0;
}
}  // namespace

TEST_CASE("unix_endpoint: paths, abstract names, and clear errors", "[unix]") {
    auto p = weft::unix_endpoint::from_path("/run/app.sock");
    REQUIRE(p);
    REQUIRE(p->name() == "/run/app.sock");
    REQUIRE(p->to_string() == "/run/app.sock");
    REQUIRE_FALSE(p->is_abstract());
    auto a = weft::unix_endpoint::abstract("app");
    REQUIRE(a);
    REQUIRE(a->is_abstract());
    REQUIRE(a->name() == "app");
    REQUIRE(a->to_string() == "@app");
    REQUIRE(weft::unix_endpoint().is_unnamed());
    std::string longest(weft::unix_endpoint::max_length, 'x');
    REQUIRE(weft::unix_endpoint::from_path(longest));
    auto too_long = weft::unix_endpoint::from_path(longest + "x");
    REQUIRE_FALSE(too_long);
    REQUIRE(too_long.error() == weft::errc::path_too_long);
    REQUIRE(too_long.error().message().find("too long") != std::string::npos);
    REQUIRE(weft::unix_endpoint::abstract(longest + "y").error() == weft::errc::path_too_long);
    REQUIRE(weft::unix_endpoint::from_path("").error() == weft::errc::invalid_endpoint);
    REQUIRE(weft::unix_endpoint::from_path(std::string_view("a\0b", 3)).error() == weft::errc::invalid_endpoint);
}

TEMPLATE_TEST_CASE("unix streams at a path: listen, connect, echo; the file and unlink_existing", "[unix]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    temp_dir dir;
    auto at = weft::unix_endpoint::from_path(dir.file("s.sock")).value();
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto l = weft::unix_listener<TestType>::bind(loop, at);
        REQUIRE(l);
        REQUIRE(exists(dir.file("s.sock")));
        REQUIRE(l->local_endpoint().value() == at);
        auto [c, s] = co_await weft::when_all(weft::unix_stream<TestType>::connect(loop, at), l->accept());
        REQUIRE(c);
        REQUIRE(s);
        REQUIRE(c->remote_endpoint().value() == at);
        REQUIRE(c->local_endpoint().value().is_unnamed());
        REQUIRE(s->peer_credentials().value().pid == ::getpid());
        auto data = pattern(100'000, 3);
        std::vector<char> got(data.size());
        auto [w, r] = co_await weft::when_all(c->write_all(data), s->read_exact(got));
        REQUIRE(w);
        REQUIRE(r);
        REQUIRE(got == data);
        REQUIRE(c->shutdown());
        std::array<char, 8> buf{};
        auto eof = co_await s->read_some(buf);
        REQUIRE(eof);
        REQUIRE(*eof == 0);
        REQUIRE(l->close());
        // The file stays: binding again fails until it is removed (or unlink_existing).
        REQUIRE(exists(dir.file("s.sock")));
        auto again = weft::unix_listener<TestType>::bind(loop, at);
        REQUIRE_FALSE(again);
        REQUIRE(again.error() == std::errc::address_in_use);
        auto replaced = weft::unix_listener<TestType>::bind(loop, at, {.unlink_existing = true});
        REQUIRE(replaced);
        REQUIRE(replaced->close());
        REQUIRE(at.remove_file() == 0);
        REQUIRE_FALSE(exists(dir.file("s.sock")));
        auto nobody = co_await weft::unix_stream<TestType>::connect(loop, at);
        REQUIRE_FALSE(nobody);
        REQUIRE(nobody.error() == std::errc::no_such_file_or_directory);
    }());
}

TEMPLATE_TEST_CASE("unix streams in the abstract namespace and from socketpair", "[unix]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto at = weft::unix_endpoint::abstract(unique_abstract("stream")).value();
        auto l = weft::unix_listener<TestType>::bind(loop, at);
        REQUIRE(l);
        auto [c, s] = co_await weft::when_all(weft::unix_stream<TestType>::connect(loop, at), l->accept());
        REQUIRE(c);
        REQUIRE(s);
        CO_REQUIRE(co_await c->write_all(std::string_view("abstract")));
        std::array<char, 8> buf{};
        CO_REQUIRE(co_await s->read_exact(buf));
        REQUIRE(std::string_view(buf.data(), 8) == "abstract");
        REQUIRE(l->close());
        auto gone = co_await weft::unix_stream<TestType>::connect(loop, at);  // the name went with the listener
        REQUIRE_FALSE(gone);
        REQUIRE(gone.error() == std::errc::connection_refused);

        auto p = weft::unix_stream<TestType>::pair(loop);
        REQUIRE(p);
        auto& [a, b] = *p;
        CO_REQUIRE(co_await a.write_all(std::string_view("ping")));
        std::array<char, 4> four{};
        CO_REQUIRE(co_await b.read_exact(four));
        REQUIRE(std::string_view(four.data(), 4) == "ping");
        CO_REQUIRE(co_await b.write_all(std::string_view("pong")));
        CO_REQUIRE(co_await a.read_exact(four));
        REQUIRE(std::string_view(four.data(), 4) == "pong");
    }());
}

TEMPLATE_TEST_CASE("fd passing: an open TCP socket sent over a unix stream carries data on the other side", "[unix]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto tcp = co_await make_pair(loop);
        auto p = weft::unix_stream<TestType>::pair(loop).value();
        auto& [a, b] = p;
        int fds[1] = {tcp.server.native_handle()};
        auto sent = co_await a.send_fds(std::string_view("F"), fds);
        REQUIRE(sent);
        REQUIRE(*sent == 1);
        REQUIRE(tcp.server.close());  // ours is closed; the receiver's copy keeps the connection
        std::array<char, 4> buf{};
        std::array<int, 4> got{-1, -1, -1, -1};
        auto r = co_await b.receive_fds(buf, got);
        REQUIRE(r);
        REQUIRE(r->bytes == 1);
        REQUIRE(r->count == 1);
        REQUIRE_FALSE(r->truncated);
        REQUIRE((::fcntl(got[0], F_GETFD) & FD_CLOEXEC) != 0);
        // Adopted on this loop, the received socket is a working connection.
        int flags = ::fcntl(got[0], F_GETFL);
        if constexpr (TestType::socket_flags & SOCK_NONBLOCK)
            ::fcntl(got[0], F_SETFL, flags | O_NONBLOCK);
        else
            ::fcntl(got[0], F_SETFL, flags & ~O_NONBLOCK);
        auto moved = weft::tcp_stream<TestType>::adopt(loop.backend(), got[0]);
        REQUIRE(moved);
        CO_REQUIRE(co_await moved->write_all(std::string_view("via fd")));
        std::array<char, 6> six{};
        CO_REQUIRE(co_await tcp.client.read_exact(six));
        REQUIRE(std::string_view(six.data(), 6) == "via fd");

        // More fds than the receiver has room for: flagged, and the extra ones closed.
        int three[3] = {0, 1, 2};
        CO_REQUIRE(co_await a.send_fds(std::string_view("T"), three));
        std::array<int, 1> one{-1};
        auto t = co_await b.receive_fds(buf, one);
        REQUIRE(t);
        REQUIRE(t->count == 1);
        REQUIRE(t->truncated);
        ::close(one[0]);
        // Misuse is an error, not a silent drop.
        auto no_bytes = co_await a.send_fds(std::string_view(), three);
        REQUIRE_FALSE(no_bytes);
        REQUIRE(no_bytes.error() == std::errc::invalid_argument);
    }());
}

TEMPLATE_TEST_CASE("unix datagrams: boundaries, sender names, connected sockets", "[unix]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto a_ep = weft::unix_endpoint::abstract(unique_abstract("dgram-a")).value();
        auto b_ep = weft::unix_endpoint::abstract(unique_abstract("dgram-b")).value();
        auto a = weft::unix_datagram_socket<TestType>::bind(loop, a_ep);
        auto b = weft::unix_datagram_socket<TestType>::bind(loop, b_ep);
        REQUIRE(a);
        REQUIRE(b);
        CO_REQUIRE(co_await a->send_to(std::string_view("hello"), b_ep));
        CO_REQUIRE(co_await a->send_to(std::string_view(), b_ep));
        std::array<char, 16> buf{};
        auto d = co_await b->receive_from(buf);
        REQUIRE(d);
        REQUIRE(std::string_view(buf.data(), d->size) == "hello");
        REQUIRE(d->from == a_ep);
        auto z = co_await b->receive_from(buf);
        REQUIRE(z);
        REQUIRE(z->size == 0);
        REQUIRE(a->connect(b_ep));
        CO_REQUIRE(co_await a->send(std::string_view("connected")));
        auto n = co_await b->receive(buf);
        REQUIRE(n);
        REQUIRE(std::string_view(buf.data(), *n) == "connected");
        // An unbound sender has no name to answer to.
        auto anon = weft::unix_datagram_socket<TestType>::open(loop);
        REQUIRE(anon);
        CO_REQUIRE(co_await anon->send_to(std::string_view("x"), b_ep));
        auto from_anon = co_await b->receive_from(buf);
        REQUIRE(from_anon);
        REQUIRE(from_anon->from.is_unnamed());
    }());
}

TEMPLATE_TEST_CASE(
    "unix: a cancelled or closed receive_fds completes once, leaks no fd, and spares the fd's next owner",
    "[unix][lifetime]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = weft::unix_stream<TestType>::pair(loop).value();
        auto& b = p.second;  // p.first stays open as b's peer (no structured binding: clang 14 cannot capture one)
        std::array<char, 4> buf{};
        std::array<int, 2> fds{-1, -1};
        auto t = co_await weft::with_timeout(b.receive_fds(buf, fds), 30ms);
        REQUIRE_FALSE(t);
        REQUIRE(t.error() == std::errc::timed_out);
        REQUIRE(fds[0] == -1);

        // Closed while waiting; a new pair takes the numbers at once and talks.
        int old = b.native_handle();
        weft::unix_stream<TestType> c, d;
        auto waiter = [&]() -> weft::task<weft::result<weft::received_fds>> {
            co_return co_await b.receive_fds(buf, fds);
        };
        auto closer = [&]() -> weft::task<void> {
            (void)co_await weft::sleep_for(20ms);
            REQUIRE(b.close());
            auto q = weft::unix_stream<TestType>::pair(loop).value();
            c = std::move(q.first);
            d = std::move(q.second);
        };
        auto [r, none] = co_await weft::when_all(waiter(), closer());
        REQUIRE_FALSE(r);
        REQUIRE(r.error() == std::errc::operation_canceled);
        REQUIRE((c.native_handle() == old || d.native_handle() == old));
        CO_REQUIRE(co_await c.write_all(std::string_view("new!")));
        CO_REQUIRE(co_await d.read_exact(buf));
        REQUIRE(std::string_view(buf.data(), 4) == "new!");
        REQUIRE(fds[0] == -1);
    }());
}

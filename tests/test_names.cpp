// Names on every backend: the host:port splitter, resolve off the loop thread (a name
// that does not exist, a lookup cancelled mid-flight, a loop destroyed mid-lookup),
// connect by name trying each address with a per-attempt timeout, and bind by name.
#include "helpers.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace weft_test;

TEST_CASE("split_host_port: names, literals, brackets, service names, and what is malformed", "[names]") {
    auto ok = [](std::string_view text, std::string_view host, std::string_view service) {
        auto hp = weft::split_host_port(text);
        INFO(text);
        REQUIRE(hp);
        REQUIRE(hp->host == host);
        REQUIRE(hp->service == service);
    };
    ok("localhost:7000", "localhost", "7000");
    ok("127.0.0.1:80", "127.0.0.1", "80");
    ok("[::1]:8080", "::1", "8080");
    ok("[fe80::1%lo]:1", "fe80::1%lo", "1");
    ok("example.org:http", "example.org", "http");
    ok(":7000", "", "7000");
    ok("[::]:0", "::", "0");
    ok("host:65535", "host", "65535");
    auto bad = [](std::string_view text, weft::errc e) {
        auto hp = weft::split_host_port(text);
        INFO(text);
        REQUIRE_FALSE(hp);
        REQUIRE(hp.error() == e);
    };
    bad("localhost", weft::errc::endpoint_missing_port);
    bad("[::1]", weft::errc::endpoint_missing_port);
    bad("::1:80", weft::errc::invalid_endpoint);  // ambiguous without brackets
    bad("[::1", weft::errc::invalid_endpoint);
    bad("[::1]x80", weft::errc::invalid_endpoint);
    bad("host:", weft::errc::endpoint_bad_port);
    bad("host:65536", weft::errc::endpoint_bad_port);
    bad("host:123456", weft::errc::endpoint_bad_port);
    bad("host:ht/tp", weft::errc::endpoint_bad_port);
    bad(std::string_view("host\0x:80", 9), weft::errc::invalid_endpoint);
}

TEST_CASE("resolve errors have their own category with getaddrinfo's messages", "[names]") {
    std::error_code ec(EAI_NONAME, weft::resolve_category());
    REQUIRE(std::string(ec.category().name()) == "resolve");
    REQUIRE(ec.message() == gai_strerror(EAI_NONAME));
}

namespace {
/// A test's stand-in for getaddrinfo (see `weft::set_resolve_hook`): it can hold a lookup
/// until released, and answer with a chosen list of addresses.
struct fake_dns {
    static inline std::mutex m;
    static inline std::condition_variable cv;
    static inline bool hold = false;
    static inline std::atomic<int> started{0}, finished{0};
    static inline std::vector<std::string> answer;  // "a.b.c.d:port" literals, in order

    static int lookup(const char*, const char*, const addrinfo* hints, addrinfo** out) {
        started.fetch_add(1);
        {
            std::unique_lock l(m);
            cv.wait(l, [] { return !hold; });
        }
        addrinfo* head = nullptr;
        addrinfo** tail = &head;
        for (const std::string& a : answer) {
            auto hp = weft::split_host_port(a).value();
            addrinfo h = *hints;
            h.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
            addrinfo* one = nullptr;
            int rc = ::getaddrinfo(std::string(hp.host).c_str(), std::string(hp.service).c_str(), &h, &one);
            if (rc != 0) return rc;
            *tail = one;
            while (*tail) tail = &(*tail)->ai_next;  // glibc frees node by node: lists may be joined
        }
        finished.fetch_add(1);
        *out = head;
        return head ? 0 : EAI_NONAME;
    }
    static void release() {
        {
            std::lock_guard l(m);
            hold = false;
        }
        cv.notify_all();
    }
    /// Installs the hook for one test, and removes it (releasing any held lookup) after.
    struct installed {
        explicit installed(std::vector<std::string> a, bool held = false) {
            answer = std::move(a);
            hold = held;
            started = 0;
            finished = 0;
            weft::set_resolve_hook(&lookup);
        }
        ~installed() {
            release();
            // Lookups still running read `answer`: wait for them before it changes.
            while (finished.load() < started.load()) std::this_thread::sleep_for(1ms);
            weft::set_resolve_hook(nullptr);
        }
    };
};
}  // namespace

TEMPLATE_TEST_CASE("resolve: localhost, a literal, and a name that does not exist", "[names]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto r = co_await weft::resolve(loop, "localhost", "7000");
        REQUIRE(r);
        REQUIRE_FALSE(r->empty());
        bool has_v4 = std::find(r->begin(), r->end(), weft::endpoint::loopback_v4(7000)) != r->end();
        bool has_v6 = std::find(r->begin(), r->end(), weft::endpoint::loopback_v6(7000)) != r->end();
        REQUIRE((has_v4 || has_v6));
        auto lit = co_await weft::resolve(loop, "::1", "80");
        REQUIRE(lit);
        REQUIRE(lit->size() == 1);
        REQUIRE(lit->front() == weft::endpoint::loopback_v6(80));
        auto svc = co_await weft::resolve(loop, "127.0.0.1", "http");  // a service name
        REQUIRE(svc);
        REQUIRE(svc->front().port() == 80);
        // `.invalid` never exists (RFC 6761); without a network the answer may also be
        // "try again": either way an error of the resolver's category, never a hang.
        auto none = co_await weft::with_timeout(weft::resolve(loop, "no-such-host.invalid", "80"), 15s);
        REQUIRE_FALSE(none);
        REQUIRE(none.error().category() == weft::resolve_category());
    }());
}

TEMPLATE_TEST_CASE("resolve: a lookup cancelled mid-flight returns at once; the late answer is dropped",
                   "[names][lifetime]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    fake_dns::installed dns({"127.0.0.1:9"}, /*held=*/true);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto t0 = weft::clock::now();
        auto r = co_await weft::with_timeout(weft::resolve(loop, "slow.test", "9"), 50ms);
        REQUIRE_FALSE(r);
        REQUIRE(r.error() == std::errc::timed_out);
        REQUIRE(weft::clock::now() - t0 < 5s);  // did not wait for the held lookup
        REQUIRE(fake_dns::started.load() == 1);
        // The loop keeps working while that lookup is still held on its thread.
        CO_REQUIRE(co_await weft::sleep_for(5ms));
        fake_dns::release();
        // Its answer arrives into a request nobody waits for; the next lookup is fresh.
        auto again = co_await weft::resolve(loop, "slow.test", "9");
        REQUIRE(again);
        REQUIRE(again->front() == weft::endpoint::loopback_v4(9));
    }());
}

TEMPLATE_TEST_CASE("resolve: a loop destroyed while a lookup is held is not touched by its answer", "[names][lifetime]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    fake_dns::installed dns({"127.0.0.1:9"}, /*held=*/true);
    std::atomic<bool> resumed{false};  // outlives the loop: a blocking task thread ends during ~loop
    // Captureless, parameters in the frame: the task may run after this statement ends.
    auto waiter = [](weft::loop<TestType>& l, std::atomic<bool>& done) -> weft::task<void> {
        auto r = co_await weft::resolve(l, "slow.test", "9");
        (void)r;
        done = true;
    };
    {
        weft::loop<TestType> loop;
        loop.spawn(waiter(loop, resumed));
        while (fake_dns::started.load() == 0) loop.run_once(1ms);
        REQUIRE_FALSE(resumed.load());
    }  // the loop and the waiting frame go; the lookup is still held
    fake_dns::release();
    while (fake_dns::finished.load() < 1) std::this_thread::sleep_for(1ms);
    std::this_thread::sleep_for(20ms);  // the resolver thread finishes delivering (to nobody); ASan watches
}

TEMPLATE_TEST_CASE("connect by name tries each address in turn, each within its timeout", "[names][tcp]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    // Three addresses: nobody listens on the first (refused at once); the second's accept
    // queue is full, so its SYN is dropped and the attempt hangs until its timeout; the
    // third accepts.
    auto refused = [&] {
        auto l = weft::tcp_listener<TestType>::bind(loop, weft::endpoint::loopback_v4(0)).value();
        return l.local_endpoint().value();
    }();
    int full = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    auto any = weft::endpoint::loopback_v4(0);
    REQUIRE(::bind(full, any.data(), any.size()) == 0);
    REQUIRE(::listen(full, 0) == 0);
    sockaddr_in fa{};
    socklen_t flen = sizeof fa;
    REQUIRE(::getsockname(full, reinterpret_cast<sockaddr*>(&fa), &flen) == 0);
    auto full_ep = weft::endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&fa), flen);
    std::vector<int> fillers;
    for (int i = 0; i < 4; ++i) {  // more than the queue holds: later SYNs are dropped
        int c = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        (void)::connect(c, full_ep.data(), full_ep.size());
        fillers.push_back(c);
    }
    std::this_thread::sleep_for(20ms);
    auto good = weft::tcp_listener<TestType>::bind(loop, "127.0.0.1:0").value();
    auto good_ep = good.local_endpoint().value();
    fake_dns::installed dns({refused.to_string(), full_ep.to_string(), good_ep.to_string()});
    run_bounded(loop, [&]() -> weft::task<void> {
        auto t0 = weft::clock::now();
        auto [c, s] =
            co_await weft::when_all(weft::tcp_stream<TestType>::connect(loop, "several.test:1", 200ms), good.accept());
        REQUIRE(c);
        REQUIRE(s);
        REQUIRE(c->remote_endpoint().value() == good_ep);
        REQUIRE(weft::clock::now() - t0 >= 150ms);  // it waited out the hanging attempt
        CO_REQUIRE(co_await c->write_all(std::string_view("hi")));
        std::array<char, 2> buf{};
        CO_REQUIRE(co_await s->read_exact(buf));
        REQUIRE(std::string_view(buf.data(), 2) == "hi");
    }());
    for (int f : fillers) ::close(f);
    ::close(full);
}

TEMPLATE_TEST_CASE("connect and bind by name: localhost, errors for bad text and for every address refused",
                   "[names][tcp]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto l = weft::tcp_listener<TestType>::bind(loop, "localhost:0");
        REQUIRE(l);
        auto ep = l->local_endpoint().value();
        std::string target = "localhost:" + std::to_string(ep.port());
        auto [c, s] = co_await weft::when_all(weft::tcp_stream<TestType>::connect(loop, target), l->accept());
        REQUIRE(c);
        REQUIRE(s);
        auto bad = co_await weft::tcp_stream<TestType>::connect(loop, "localhost");
        REQUIRE_FALSE(bad);
        REQUIRE(bad.error() == weft::errc::endpoint_missing_port);
        REQUIRE(l->close());
        auto refused = co_await weft::tcp_stream<TestType>::connect(loop, target);
        REQUIRE_FALSE(refused);
        REQUIRE(refused.error() == std::errc::connection_refused);
        auto bad_bind = weft::tcp_listener<TestType>::bind(loop, "[::1:80");
        REQUIRE_FALSE(bad_bind);
        REQUIRE(bad_bind.error() == weft::errc::invalid_endpoint);
    }());
}

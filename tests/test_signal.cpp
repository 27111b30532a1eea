// Signals and graceful shutdown on every backend: signal_set delivers signals in order,
// keeps one that arrived while nobody waited, cancels cleanly, puts the old disposition
// back, never writes into a reused fd number; the drain pattern under load (SIGTERM:
// stop accepting, finish what was received, close); run() again after stop().
#include "helpers.hpp"

#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <list>
#include <thread>

using namespace weft_test;

namespace {
/// The current disposition of `signo`.
void (*handler_of(int signo))(int) {
    struct sigaction sa {};
    ::sigaction(signo, nullptr, &sa);
    return sa.sa_handler;
}
}  // namespace

TEMPLATE_TEST_CASE("signal_set: every signal arrives once, is kept until awaited, and the old disposition returns",
                   "[signal]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    REQUIRE(handler_of(SIGUSR1) == SIG_DFL);
    {
        auto set = weft::signal_set<TestType>::open(loop, {SIGUSR1, SIGUSR2});
        REQUIRE(set);
        REQUIRE(handler_of(SIGUSR1) != SIG_DFL);
        run_bounded(loop, [&]() -> weft::task<void> {
            ::kill(::getpid(), SIGUSR1);  // nobody awaits yet: kept
            ::kill(::getpid(), SIGUSR2);
            auto a = co_await set->next();
            auto b = co_await set->next();
            REQUIRE(a);
            REQUIRE(b);
            // Both, each once. (In the order their handlers ran: with several threads, as
            // on `blocking`, two signals may be handled on two threads at once.)
            REQUIRE(((*a == SIGUSR1 && *b == SIGUSR2) || (*a == SIGUSR2 && *b == SIGUSR1)));
            // From another thread, while the loop waits.
            std::thread t([] {
                std::this_thread::sleep_for(20ms);
                ::kill(::getpid(), SIGUSR2);
            });
            auto c = co_await set->next();
            t.join();
            REQUIRE(c);
            REQUIRE(*c == SIGUSR2);
            // Cancelled: timed_out; a signal after that is still delivered.
            auto none = co_await weft::with_timeout(set->next(), 20ms);
            REQUIRE_FALSE(none);
            REQUIRE(none.error() == std::errc::timed_out);
            ::kill(::getpid(), SIGUSR1);
            auto d = co_await set->next();
            REQUIRE(d);
            REQUIRE(*d == SIGUSR1);
        }());
        auto bad = set->add(SIGKILL);
        REQUIRE_FALSE(bad);
        REQUIRE(bad.error() == std::errc::invalid_argument);
        REQUIRE(set->add(SIGIO).error() == std::errc::invalid_argument);
    }
    REQUIRE(handler_of(SIGUSR1) == SIG_DFL);
    REQUIRE(handler_of(SIGUSR2) == SIG_DFL);
}

TEMPLATE_TEST_CASE("signal_set: a closed set never writes into the socket that takes its fd number",
                   "[signal][lifetime]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    auto keeper = weft::signal_set<TestType>::open(loop, {SIGUSR1}).value();  // keeps the handler installed
    run_bounded(loop, [&]() -> weft::task<void> {
        auto set = weft::signal_set<TestType>::open(loop, {SIGUSR1}).value();
        auto waiter = [&]() -> weft::task<weft::result<int>> { co_return co_await set.next(); };
        auto closer = [&]() -> weft::task<void> {
            (void)co_await weft::sleep_for(20ms);
            set.close();
        };
        auto [r, none] = co_await weft::when_all(waiter(), closer());
        REQUIRE_FALSE(r);
        REQUIRE(r.error() == std::errc::operation_canceled);
        // The set's two fds are free now; a new socket pair takes them.
        int sv[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
        ::kill(::getpid(), SIGUSR1);
        auto k = co_await keeper.next();
        REQUIRE(k);
        REQUIRE(*k == SIGUSR1);
        char b;
        REQUIRE(::recv(sv[0], &b, 1, 0) == -1);  // nothing was written into the new sockets
        REQUIRE(::recv(sv[1], &b, 1, 0) == -1);
        ::close(sv[0]);
        ::close(sv[1]);
    }());
}

namespace {
/// The drain pattern (README, "Graceful shutdown"): sessions register here so that a
/// shutdown can tell them to finish (`draining`) and wake the idle ones by half-closing
/// their read side: each answers what it already received, then ends by itself.
template <class B>
struct sessions {
    std::list<weft::tcp_stream<B>*> live;
    bool draining = false;
    std::size_t ended = 0;
};

template <class B>
weft::task<void> echo_session(weft::tcp_stream<B> s, sessions<B>& reg) {
    auto me = reg.live.insert(reg.live.end(), &s);
    std::array<char, 4096> buf;
    for (;;) {
        auto n = co_await s.read_some(buf);
        if (!n || *n == 0) break;
        if (!co_await s.write_all(std::span(buf.data(), *n))) break;
        if (reg.draining) break;  // answered what it had; take no new request
    }
    reg.live.erase(me);
    ++reg.ended;
}
}  // namespace

TEMPLATE_TEST_CASE("SIGTERM during load: stop accepting, echo everything received, close every session, run again",
                   "[signal][shutdown]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    WEFT_NOT_ON_BLOCKING(TestType, "its sessions are threads: the session registry here is single-threaded");
    constexpr int clients = 8;
    weft::loop<TestType> loop;
    auto before = handler_of(SIGTERM);  // (Catch2 has one for SIGTERM)
    auto listener = weft::tcp_listener<TestType>::bind(loop, "127.0.0.1:0").value();
    auto at = listener.local_endpoint().value();
    sessions<TestType> reg;
    std::atomic<long> echoed{0};
    bool drained = false;
    auto server = [&]() -> weft::task<void> {
        auto signals = weft::signal_set<TestType>::open(loop, {SIGTERM}).value();
        auto accept_loop = [&]() -> weft::task<void> {
            for (;;) {
                auto s = co_await listener.accept();
                if (!s) co_return;
                loop.spawn(echo_session(std::move(*s), reg));
            }
        };
        auto which = co_await weft::when_any(accept_loop(), signals.next());
        REQUIRE(which.index() == 1);
        REQUIRE(std::get<1>(which).value() == SIGTERM);
        REQUIRE(listener.close());                               // 1. stop accepting
        reg.draining = true;                                     // 2. sessions finish what they received...
        for (auto* s : reg.live) REQUIRE(s->shutdown(SHUT_RD));  // ...and idle ones wake to EOF
        auto deadline = weft::clock::now() + 5s;                 // 3. wait, within a deadline
        while (!reg.live.empty() && weft::clock::now() < deadline) (void)co_await weft::sleep_for(1ms);
        drained = reg.live.empty();
        loop.stop();
    };
    auto client = [&](int id) -> weft::task<void> {
        auto c = co_await weft::tcp_stream<TestType>::connect(loop, at);
        if (!c) co_return;
        auto data = pattern(64, std::uint64_t(id));
        std::array<char, 64> in{};
        for (;;) {  // echo until the server half-closes us
            if (!co_await c->write_all(data)) co_return;
            auto r = co_await c->read_exact(in);
            if (!r) co_return;  // EOF after the drain
            if (std::equal(in.begin(), in.end(), data.begin())) echoed.fetch_add(1);
        }
    };
    loop.spawn(server());
    for (int i = 0; i < clients; ++i) loop.spawn(client(i));
    std::thread killer([&] {
        auto give_up = std::chrono::steady_clock::now() + 10s;
        while (echoed.load() < 2000 && std::chrono::steady_clock::now() < give_up) std::this_thread::sleep_for(1ms);
        ::kill(::getpid(), SIGTERM);  // the process survives: the set watches SIGTERM
    });
    auto t0 = weft::clock::now();
    loop.run();  // returns at stop()
    killer.join();
    REQUIRE(drained);
    REQUIRE(reg.ended >= std::size_t(clients));
    REQUIRE(weft::clock::now() - t0 < 20s);
    REQUIRE(handler_of(SIGTERM) == before);  // the set is gone, and the earlier disposition is back
    // run() may be called again after stop(): the stop request was consumed. The clients
    // see EOF and finish.
    run_until_idle(loop);
    REQUIRE(loop.live_tasks() == 0);
}

TEMPLATE_TEST_CASE("the drain's shutdown(SHUT_RD) ends a read that is already waiting, at once", "[signal][drain]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    // sigio gets no signal for a socket's own shutdown: before the fix its waiting read
    // slept until the session's deadline (the drain's "wait, then cancel" took its
    // whole 4 s in kv_server).
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        auto reader = [](weft::tcp_stream<TestType>& s) -> weft::task<weft::result<std::size_t>> {
            char buf[16];
            co_return co_await weft::with_timeout(s.read_some(buf), 5s);
        };
        auto closer = [](weft::loop<TestType>& l, weft::tcp_stream<TestType>& s) -> weft::task<void> {
            (void)co_await l.sleep_for(20ms);
            REQUIRE(s.shutdown(SHUT_RD));
        };
        auto start = weft::clock::now();
        auto [r, unit] = co_await weft::when_all(reader(p.server), closer(loop, p.server));
        (void)unit;
        REQUIRE(r.value() == 0);  // EOF
        REQUIRE(weft::clock::now() - start < 2s);
    }());
}

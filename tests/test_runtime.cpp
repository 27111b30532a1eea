// Every core: runtime<B> (N loops on N threads), channel<T> between loops, spawn_on,
// switch_to, moving a connection, spreading connections, and stopping it all. Every
// test runs several threads, so Catch2's assertions stay on the test's own thread: the
// tasks record what they saw and the test checks it after run() (Catch2 2's macros are
// not thread-safe). The same holds for backend::blocking, whose tasks are threads, so
// these tests run under TSan on every backend (.ci/run).
#include "helpers.hpp"

#include <weft/channel.hpp>
#include <weft/runtime.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace weft_test;

namespace {

/// Runs `rt` until it is done, stopping it (and failing the test afterwards) after `limit`.
template <class B>
bool run_within(weft::runtime<B>& rt, std::chrono::milliseconds limit = 30000ms) {
    std::atomic<bool> done{false};
    std::atomic<bool> timed_out{false};
    std::thread watchdog([&] {
        const auto deadline = weft::clock::now() + limit;
        while (!done.load()) {
            if (weft::clock::now() > deadline) {
                timed_out = true;
                rt.stop();
                return;
            }
            std::this_thread::sleep_for(5ms);
        }
    });
    rt.run();
    done = true;
    watchdog.join();
    return !timed_out.load();
}

/// Counts the objects alive: a task that holds one is counted out when its frame goes,
/// whether it ran or was destroyed unstarted.
struct alive {
    std::atomic<long>* count;
    explicit alive(std::atomic<long>& c) noexcept : count(&c) { count->fetch_add(1); }
    alive(alive&& o) noexcept : count(std::exchange(o.count, nullptr)) {}
    alive(const alive&) = delete;
    ~alive() {
        if (count) count->fetch_sub(1);
    }
};

/// A blocking client socket connected to 127.0.0.1:`port`, or -1.
int connect_plain(std::uint16_t port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

/// A port that was free a moment ago (for serve's reuse_port listeners, which need a fixed one).
std::uint16_t free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(fd);
    return ntohs(a.sin_port);
}

template <class B>
constexpr bool threaded = B::kind == weft::backend_kind::blocking;

/// The calling thread's id, from the kernel. Not std::this_thread::get_id(): that is
/// pthread_self(), which glibc declares `const`, so clang may compute it once for a whole
/// coroutine and give the thread it started on after the coroutine moved (it did, at -O1
/// under ASan: a task that had moved reported its old thread).
inline long thread_now() noexcept { return ::syscall(SYS_gettid); }

/// A task that owns the lambda `f` and awaits what it returns. A coroutine lambda's
/// body reads its captures through the closure, so a closure that is a temporary of
/// the spawning expression would be gone when the spawned task runs.
template <class F>
weft::task<void> call(F f) {
    co_await f();
}

}  // namespace

TEMPLATE_TEST_CASE("channel: 1,000,000 messages between two loops, each received once and in order", "[runtime]",
                   WEFT_TEST_BACKENDS) {
    using B = TestType;
    WEFT_REQUIRE_BACKEND(B);
    weft::runtime<B> rt({.threads = 2});
    weft::channel<std::uint32_t> ch(1024);
    constexpr std::uint32_t n = 1'000'000;
    std::atomic<std::uint32_t> received{0};
    std::atomic<std::uint32_t> out_of_order{0};
    std::atomic<int> send_errors{0};
    REQUIRE(rt.spawn_on(0,
                        [](weft::channel<std::uint32_t>& ch, std::atomic<std::uint32_t>& received,
                           std::atomic<std::uint32_t>& bad) -> weft::task<void> {
                            for (std::uint32_t i = 0; i < n; ++i) {
                                auto v = co_await ch.receive();
                                if (!v || *v != i) bad.fetch_add(1);
                                received.fetch_add(1, std::memory_order_relaxed);
                            }
                        }(ch, received, out_of_order)));
    REQUIRE(rt.spawn_on(1, [](weft::channel<std::uint32_t>& ch, std::atomic<int>& errors) -> weft::task<void> {
        for (std::uint32_t i = 0; i < n; ++i)
            if (!co_await ch.send(std::uint32_t{i})) errors.fetch_add(1);
    }(ch, send_errors)));
    REQUIRE(run_within(rt, 50000ms));
    CHECK(received.load() == n);
    CHECK(out_of_order.load() == 0);
    CHECK(send_errors.load() == 0);
    CHECK(ch.size() == 0);
}

TEMPLATE_TEST_CASE(
    "channel: senders on every loop fill a small channel; each value arrives once, each sender's in order", "[runtime]",
    WEFT_TEST_BACKENDS) {
    using B = TestType;
    WEFT_REQUIRE_BACKEND(B);
    weft::runtime<B> rt({.threads = 2});
    weft::channel<std::uint64_t> ch(2);  // full almost always: senders park, the receiver hands over
    constexpr std::uint64_t per_sender = 20'000;
    constexpr std::uint64_t senders = 4;
    std::vector<std::uint64_t> next(senders, 0);  // written by the receiver only
    std::atomic<std::uint64_t> bad{0};
    REQUIRE(rt.spawn_on(0, call([&]() -> weft::task<void> {
                            for (std::uint64_t k = 0; k < per_sender * senders; ++k) {
                                auto v = co_await ch.receive();
                                if (!v) {
                                                        bad.fetch_add(1);
                                    continue;
                                }
                                const std::uint64_t who = *v >> 32, seq = *v & 0xffffffff;
                                if (who >= senders || next[who] != seq) bad.fetch_add(1);
                                if (who < senders) next[who] = seq + 1;
                            }
                        })));
    for (std::uint64_t s = 0; s < senders; ++s)
        REQUIRE(rt.spawn_on(s % 2, call([&ch, &bad, s]() -> weft::task<void> {
                                for (std::uint64_t i = 0; i < per_sender; ++i)
                                    if (!co_await ch.send((s << 32) | i)) bad.fetch_add(1);
                            })));
    REQUIRE(run_within(rt));
    CHECK(bad.load() == 0);
    for (std::uint64_t s = 0; s < senders; ++s) CHECK(next[s] == per_sender);
}

TEMPLATE_TEST_CASE("channel: a cancelled receive and a cancelled send take nothing and lose nothing", "[runtime]",
                   WEFT_TEST_BACKENDS) {
    using B = TestType;
    WEFT_REQUIRE_BACKEND(B);
    weft::runtime<B> rt({.threads = 2});
    weft::channel<std::unique_ptr<int>> ch(2);
    std::error_code receive_timeout, send_timeout;
    bool kept = false;
    std::vector<int> got;
    REQUIRE(rt.spawn_on(0, call([&]() -> weft::task<void> {
                            // An empty channel: the receive times out.
                            auto r = co_await weft::with_timeout(ch.receive(), 20ms);
                            receive_timeout = r ? std::error_code{} : r.error();
                            // Fill it, then a third send times out and keeps its value.
                            (void)co_await ch.send(std::make_unique<int>(1));
                            (void)co_await ch.send(std::make_unique<int>(2));
                            auto third = std::make_unique<int>(3);
                            auto s = co_await weft::with_timeout(ch.send(third), 20ms);
                            send_timeout = s ? std::error_code{} : s.error();
                            kept = third && *third == 3;
                            // The receive that moves to another loop still gets both, in order, and no third.
                            (void)co_await weft::switch_to(rt.at(1));
                            for (int i = 0; i < 2; ++i) {
                                auto v = co_await ch.receive();
                                if (v && *v) got.push_back(**v);
                            }
                            auto none = ch.try_receive();
                            if (none || none.error() != weft::errc::channel_empty) got.push_back(-1);
                        })));
    REQUIRE(run_within(rt));
    CHECK(receive_timeout == std::errc::timed_out);
    CHECK(send_timeout == std::errc::timed_out);
    CHECK(kept);
    CHECK(got == std::vector<int>{1, 2});
}

TEMPLATE_TEST_CASE("channel: close wakes the receiver and the waiting senders; what was sent first is still received",
                   "[runtime]", WEFT_TEST_BACKENDS) {
    using B = TestType;
    WEFT_REQUIRE_BACKEND(B);
    weft::runtime<B> rt({.threads = 2});
    weft::channel<std::string> ch(2);
    std::atomic<int> sent_ok{0}, refused{0}, refused_kept{0};
    std::vector<std::string> got;
    std::error_code last;
    REQUIRE(rt.spawn_on(1, call([&]() -> weft::task<void> {
                            for (int i = 0; i < 5; ++i) {  // two fit; the third waits for room until the close
                                std::string v = "v" + std::to_string(i);
                                auto r = co_await ch.send(v);
                                if (r) {
                                    sent_ok.fetch_add(1);
                                } else {
                                    refused.fetch_add(1);
                                    if (v == "v" + std::to_string(i)) refused_kept.fetch_add(1);
                                }
                            }
                        })));
    REQUIRE(rt.spawn_on(0, call([&]() -> weft::task<void> {
                            (void)co_await weft::sleep_for(50ms);  // the sender is parked on a full channel by now
                            ch.close();
                            for (;;) {
                                auto v = co_await ch.receive();
                                if (!v) {
                                    last = v.error();
                                    break;
                                }
                                got.push_back(*v);
                            }
                        })));
    REQUIRE(run_within(rt));
    CHECK(sent_ok.load() == 2);
    CHECK(refused.load() == 3);
    CHECK(refused_kept.load() == 3);
    CHECK(got == std::vector<std::string>{"v0", "v1"});
    CHECK(last == weft::errc::channel_closed);
    CHECK(ch.is_closed());
}

TEMPLATE_TEST_CASE("channel: a receiving loop torn down while another loop sends: a clear error, nothing lost",
                   "[runtime]", WEFT_TEST_BACKENDS) {
    using B = TestType;
    WEFT_REQUIRE_BACKEND(B);
    weft::channel<int> ch(8);
    std::atomic<int> received{0};
    std::atomic<int> sent_ok{0};
    std::error_code refusal;
    {
        // Two plain loops on two threads: the receiver's loop goes while the sender goes on.
        std::thread receiver([&] {
            weft::loop<B> loop;
            loop.spawn(call([&]() -> weft::task<void> {
                for (;;) {
                    auto v = co_await ch.receive();
                    if (!v) co_return;
                    received.fetch_add(1);
                }
            }));
            while (received.load() < 1000) loop.run_once(10ms);
            // ~loop: the receiver is destroyed (parked in receive(), or about to be) with the loop.
        });
        std::thread sender([&] {
            weft::loop<B> loop;
            loop.run([&]() -> weft::task<void> {
                for (int i = 0;; ++i) {
                    auto r = co_await weft::with_timeout(ch.send(int{i}), 2000ms);
                    if (!r) {
                        refusal = r.error();
                        co_return;
                    }
                    sent_ok.fetch_add(1);
                }
            }());
        });
        receiver.join();
        sender.join();
    }
    // Every value the sender was told went in was received, or is still in the channel.
    int left = 0;
    while (ch.try_receive()) ++left;
    CHECK(refusal == weft::errc::channel_closed);
    CHECK(sent_ok.load() == received.load() + left);
}

TEMPLATE_TEST_CASE("runtime: spawn_on from other threads and from loops under load: every task runs once", "[runtime]",
                   WEFT_TEST_BACKENDS) {
    using B = TestType;
    WEFT_REQUIRE_BACKEND(B);
    weft::runtime<B> rt({.threads = 2});
    constexpr int from_outside = 2000, hops = 200;
    std::atomic<int> ran{0};
    std::atomic<int> chain_end{0};
    // Load: a task on each loop that keeps yielding (a busy loop never sleeps).
    std::atomic<bool> loaded{true};
    for (std::size_t i = 0; i < 2; ++i)
        REQUIRE(rt.spawn_on(i, call([&]() -> weft::task<void> {
                                while (loaded.load()) (void)co_await weft::sleep_for(0ms);
                            })));
    // A chain of tasks, each spawning the next on the other loop.
    struct chain {
        static weft::task<void> step(weft::runtime<B>& rt, int left, std::atomic<int>& end) {
            if (left == 0) {
                end.fetch_add(1);
                co_return;
            }
            (void)rt.spawn_on((rt.current_index() + 1) % rt.size(), step(rt, left - 1, end));
        }
    };
    REQUIRE(rt.spawn_on(0, chain::step(rt, hops, chain_end)));
    std::thread a([&] {
        for (int i = 0; i < from_outside / 2; ++i)
            (void)rt.spawn_on(static_cast<std::size_t>(i) % 2, [](std::atomic<int>& r) -> weft::task<void> {
                r.fetch_add(1);
                co_return;
            }(ran));
    });
    for (int i = from_outside / 2; i < from_outside; ++i)
        (void)rt.spawn_on(static_cast<std::size_t>(i) % 2, [](std::atomic<int>& r) -> weft::task<void> {
            r.fetch_add(1);
            co_return;
        }(ran));
    a.join();
    REQUIRE(rt.spawn_on(1, call([&]() -> weft::task<void> {
                            while (ran.load() < from_outside || chain_end.load() < 1)
                                (void)co_await weft::sleep_for(1ms);
                            loaded = false;
                        })));
    REQUIRE(run_within(rt));
    CHECK(ran.load() == from_outside);
    CHECK(chain_end.load() == 1);
    CHECK(rt.live_tasks() == 0);
}

TEMPLATE_TEST_CASE(
    "runtime: stop racing spawn_on and sends: every task runs or is destroyed, every value accounted for", "[runtime]",
    WEFT_TEST_BACKENDS) {
    using B = TestType;
    WEFT_REQUIRE_BACKEND(B);
    std::atomic<long> frames{0};
    std::atomic<int> accepted{0}, refused{0};
    weft::channel<int> ch(64);
    std::atomic<int> sent_ok{0}, received{0};
    {
        weft::runtime<B> rt({.threads = 2});
        REQUIRE(rt.spawn_on(0, call([&]() -> weft::task<void> {
                                for (;;) {
                                    auto v = co_await ch.receive();
                                    if (!v) co_return;
                                    received.fetch_add(1);
                                }
                            })));
        REQUIRE(rt.spawn_on(1, call([&]() -> weft::task<void> {
                                for (int i = 0;; ++i) {
                                    if (!co_await ch.send(int{i})) co_return;
                                    sent_ok.fetch_add(1);
                                }
                            })));
        std::atomic<bool> go{true};
        std::thread spawner([&] {
            for (int i = 0; go.load(); ++i) {
                auto r = rt.spawn_on(static_cast<std::size_t>(i) % 2, [](alive) -> weft::task<void> {
                    (void)co_await weft::sleep_for(1ms);
                }(alive(frames)));
                (r ? accepted : refused).fetch_add(1);
                if (!r) break;
            }
        });
        std::this_thread::sleep_for(50ms);
        rt.stop();
        rt.run();
        go = false;
        spawner.join();
    }
    int left = 0;
    while (ch.try_receive()) ++left;
    CHECK(frames.load() == 0);  // each task's frame went: ran to its end, or destroyed
    CHECK(accepted.load() > 0);
    CHECK(sent_ok.load() <= received.load() + left);  // the last send may be destroyed mid-way
    CHECK(received.load() + left <= sent_ok.load() + 1);
}

TEMPLATE_TEST_CASE("runtime: switch_to moves a task, and its awaiter resumes on its own loop", "[runtime]",
                   WEFT_TEST_BACKENDS) {
    using B = TestType;
    WEFT_REQUIRE_BACKEND(B);
    weft::runtime<B> rt({.threads = 2});
    long parent_before = 0, child_there = 0, parent_after = 0;
    int child_result = 0;
    std::string caught;
    REQUIRE(rt.spawn_on(0, call([&]() -> weft::task<void> {
                            parent_before = thread_now();
                            auto child = [&]() -> weft::task<int> {
                                auto r = co_await weft::switch_to(rt.at(1));
                                if (!r) co_return -1;
                                child_there = thread_now();
                                (void)co_await weft::sleep_for(1ms);  // a timer on the new loop
                                co_return 42;
                            };
                            child_result = co_await child();
                            parent_after = thread_now();
                            auto thrower = [&]() -> weft::task<void> {
                                (void)co_await weft::switch_to(rt.at(1));
                                throw std::runtime_error("thrown on loop 1");
                            };
                            try {
                                co_await thrower();
                            } catch (const std::exception& e) {
                                caught = e.what();
                            }
                        })));
    REQUIRE(run_within(rt));
    CHECK(child_result == 42);
    CHECK(parent_after == parent_before);
    if constexpr (threaded<B>)
        CHECK(child_there == parent_before);  // thread per task: the task keeps its thread
    else
        CHECK(child_there != parent_before);
    CHECK(caught == "thrown on loop 1");
}

TEMPLATE_TEST_CASE("runtime: a connection moved to another loop keeps its bytes in order", "[runtime]",
                   WEFT_TEST_BACKENDS) {
    using B = TestType;
    WEFT_REQUIRE_BACKEND(B);
    weft::runtime<B> rt({.threads = 2});
    const std::vector<char> data = pattern(1 << 20, 7);
    std::vector<char> got;
    std::error_code busy, moved_error;
    long read_on_before = 0, read_on_after = 0;
    std::atomic<std::uint16_t> port{0};
    std::atomic<bool> send_now{false};
    REQUIRE(rt.spawn_on(0, call([&]() -> weft::task<void> {
                            auto listener = weft::tcp_listener<B>::bind(rt.at(0), weft::endpoint::loopback_v4(0));
                            if (!listener) co_return;
                            port = listener->local_endpoint()->port();
                            auto conn = co_await listener->accept();
                            if (!conn) co_return;
                            weft::tcp_stream<B> s = std::move(*conn);
                            std::vector<char> buf(4096);
                            // A stream with a read pending cannot move (the client sends nothing yet, so the
                            // read waits; the release comes 20 ms later, when on blocking the read's thread
                            // is inside recv).
                            co_await weft::when_any(s.read_some(buf), [&]() -> weft::task<void> {
                                (void)co_await weft::sleep_for(20ms);
                                auto r = s.release();
                                busy = r ? std::error_code{} : r.error();
                                if (r) ::close(*r);
                            }());
                            send_now = true;
                            // Part of it on loop 0.
                            while (got.size() < data.size() / 3) {
                                auto n = co_await s.read_some(buf);
                                if (!n || *n == 0) co_return;
                                got.insert(got.end(), buf.begin(), buf.begin() + static_cast<long>(*n));
                            }
                            read_on_before = thread_now();
                            // The listener belongs to loop 0: closed here, not by the frame's end on loop 1 (a
                            // socket is used only from its own loop's thread; TSan caught this test's first
                            // version closing it from loop 1 while loop 0 watched it).
                            (void)listener->close();
                            auto moved = co_await rt.move_to(s, 1);
                            if (!moved) {
                                moved_error = moved.error();
                                co_return;
                            }
                            read_on_after = thread_now();
                            weft::tcp_stream<B> there = std::move(*moved);
                            for (;;) {
                                auto n = co_await there.read_some(buf);
                                if (!n || *n == 0) break;
                                got.insert(got.end(), buf.begin(), buf.begin() + static_cast<long>(*n));
                            }
                        })));
    std::thread client([&] {
        while (port.load() == 0) std::this_thread::sleep_for(1ms);
        int fd = connect_plain(port.load());
        if (fd < 0) return;
        while (!send_now.load()) std::this_thread::sleep_for(1ms);
        std::size_t off = 0;
        while (off < data.size()) {
            ssize_t n = ::send(fd, data.data() + off, std::min<std::size_t>(8192, data.size() - off), MSG_NOSIGNAL);
            if (n <= 0) break;
            off += static_cast<std::size_t>(n);
        }
        ::close(fd);
    });
    REQUIRE(run_within(rt));
    client.join();
    CHECK(busy == std::errc::device_or_resource_busy);
    CHECK(!moved_error);
    if constexpr (!threaded<B>) CHECK(read_on_after != read_on_before);
    REQUIRE(got.size() == data.size());
    CHECK(got == data);
}

TEMPLATE_TEST_CASE("runtime: serve spreads connections by SO_REUSEPORT and by hand-off", "[runtime]",
                   WEFT_TEST_BACKENDS) {
    using B = TestType;
    WEFT_REQUIRE_BACKEND(B);
    for (weft::spread how : {weft::spread::reuse_port, weft::spread::hand_off}) {
        INFO((how == weft::spread::reuse_port ? "reuse_port" : "hand_off"));
        weft::runtime<B> rt({.threads = 2});
        constexpr int n = 64;
        std::atomic<int> served{0};
        std::uint16_t port = 0;
        weft::result<weft::endpoint> ok = weft::errc::invalid_endpoint;
        for (int attempt = 0; attempt < 5 && !ok; ++attempt) {
            port = free_port();
            ok = rt.serve(
                weft::endpoint::loopback_v4(port),
                [&served](weft::tcp_stream<B> s) -> weft::task<void> {
                    char c;
                    auto r = co_await s.read_some(std::span(&c, 1));  // held open until the client's byte
                    if (r && *r == 1) {
                        (void)co_await s.write_all(std::span(&c, 1));
                        served.fetch_add(1);
                    }
                },
                how);
        }
        REQUIRE(ok);
        std::thread client([&] {
            std::vector<int> fds;
            for (int i = 0; i < n; ++i) fds.push_back(connect_plain(port));
            // Every connection is open (and counted live) before the first byte goes.
            while (rt.stats(0).connections + rt.stats(1).connections < n) std::this_thread::sleep_for(1ms);
            for (int fd : fds) {
                char c = 'x';
                if (fd >= 0 && ::send(fd, &c, 1, MSG_NOSIGNAL) == 1) (void)::recv(fd, &c, 1, 0);
                if (fd >= 0) ::close(fd);
            }
            rt.shutdown(2000ms);
        });
        REQUIRE(run_within(rt));
        client.join();
        const auto a = rt.stats(0), b = rt.stats(1);
        CHECK(served.load() == n);
        CHECK(a.connections + b.connections == n);
        CHECK(a.live_connections + b.live_connections == 0);
        if (how == weft::spread::hand_off) {
            // Every connection stayed open until all were accepted: the counts alternate.
            CHECK((a.connections > b.connections ? a.connections - b.connections : b.connections - a.connections) <= 1);
        } else {
            CHECK(a.connections > 0);  // the kernel's hash: all 64 on one listener is 2^-63
            CHECK(b.connections > 0);
        }
    }
}

TEMPLATE_TEST_CASE("runtime: shutdown stops accepting, lets sessions finish, cancels the rest at the deadline",
                   "[runtime]", WEFT_TEST_BACKENDS) {
    using B = TestType;
    WEFT_REQUIRE_BACKEND(B);
    weft::runtime<B> rt({.threads = 2});
    std::atomic<int> finished{0}, cancelled{0};
    std::uint16_t port = 0;
    weft::result<weft::endpoint> ok = weft::errc::invalid_endpoint;
    for (int attempt = 0; attempt < 5 && !ok; ++attempt) {
        port = free_port();
        ok = rt.serve(weft::endpoint::loopback_v4(port), [&](weft::tcp_stream<B> s) -> weft::task<void> {
            char buf[64];
            for (;;) {
                auto r = co_await s.read_some(buf);
                if (!r) {
                    if (r.error() == std::errc::operation_canceled) cancelled.fetch_add(1);
                    co_return;
                }
                if (*r == 0) {
                    finished.fetch_add(1);
                    co_return;
                }
            }
        });
    }
    REQUIRE(ok);
    int polite = connect_plain(port);  // closes during the drain: its session ends by itself
    int stuck = connect_plain(port);   // never closes: its session is cancelled at the deadline
    REQUIRE(polite >= 0);
    REQUIRE(stuck >= 0);
    while (rt.stats(0).live_connections + rt.stats(1).live_connections < 2) std::this_thread::sleep_for(1ms);
    const auto began = weft::clock::now();
    std::atomic<int> late_connect{0};
    std::thread driver([&] {
        rt.shutdown(300ms);
        std::this_thread::sleep_for(100ms);
        int late = connect_plain(port);  // the listeners are closed by now
        late_connect = late >= 0 ? 1 : -1;
        if (late >= 0) ::close(late);
        ::close(polite);
    });
    REQUIRE(run_within(rt, 10000ms));
    driver.join();
    const auto took = weft::clock::now() - began;
    ::close(stuck);
    CHECK(finished.load() == 1);
    CHECK(cancelled.load() == 1);
    CHECK(late_connect.load() == -1);
    CHECK(took >= 300ms);
    CHECK(took < 1300ms);  // the deadline, not the extra second for tasks that ignore it
}

TEMPLATE_TEST_CASE("runtime: stop from a signal handler ends run(), destroying what is left", "[runtime]",
                   WEFT_TEST_BACKENDS) {
    using B = TestType;
    WEFT_REQUIRE_BACKEND(B);
    static std::atomic<weft::runtime<B>*> target{nullptr};
    std::atomic<long> frames{0};
    weft::runtime<B> rt({.threads = 2});
    for (std::size_t i = 0; i < 2; ++i)
        REQUIRE(rt.spawn_on(i, [](alive) -> weft::task<void> {
            // Ends only when cancelled (on blocking, the loop's teardown cancels its
            // task threads and waits for them; elsewhere the frame is destroyed).
            while (co_await weft::sleep_for(1s)) {
            }
        }(alive(frames))));
    target = &rt;
    struct sigaction sa {};
    sa.sa_handler = [](int) {
        if (auto* r = target.load()) r->stop();
    };
    struct sigaction old {};
    sigaction(SIGUSR2, &sa, &old);
    std::thread killer([] {
        std::this_thread::sleep_for(50ms);
        ::kill(::getpid(), SIGUSR2);
    });
    const bool in_time = run_within(rt, 10000ms);
    killer.join();
    sigaction(SIGUSR2, &old, nullptr);
    target = nullptr;
    CHECK(in_time);
    CHECK(frames.load() == 0);
}

TEMPLATE_TEST_CASE("runtime: stop destroys a task that moved to another loop and waits there on that loop's socket",
                   "[runtime]", WEFT_TEST_BACKENDS) {
    using B = TestType;
    WEFT_REQUIRE_BACKEND(B);
    // The task belongs to loop 0 (spawned there) but waits in loop 1's backend: at the
    // teardown, loop 0 destroys it while loop 1 holds its operation. On io_uring that
    // operation is in loop 1's ring, which only loop 1's thread may enter: every loop
    // settles what it has in the kernel before any task is destroyed.
    std::atomic<long> frames{0};
    std::atomic<int> waiting{0};
    {
        weft::runtime<B> rt({.threads = 2});
        for (int k = 0; k < 2; ++k)
            REQUIRE(rt.spawn_on(0, [](weft::runtime<B>& rt, std::atomic<int>& waiting, alive) -> weft::task<void> {
                if (!co_await weft::switch_to(rt.at(1))) co_return;
                auto listener = weft::tcp_listener<B>::bind(rt.at(1), weft::endpoint::loopback_v4(0));
                if (!listener) co_return;
                waiting.fetch_add(1);
                (void)co_await listener->accept();  // nobody connects
            }(rt, waiting, alive(frames))));
        while (waiting.load() < 2) std::this_thread::sleep_for(1ms);
        std::thread stopper([&] {
            std::this_thread::sleep_for(20ms);
            rt.stop();
        });
        const bool in_time = run_within(rt, 10000ms);
        stopper.join();
        CHECK(in_time);
    }
    CHECK(frames.load() == 0);
}

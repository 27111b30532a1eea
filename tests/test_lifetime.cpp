// Lifetime: an operation never outlives its socket (DESIGN invariants 10 and 11).
//
// The fd-reuse family: for each kind of operation, close the socket while the operation
// is pending (in the same turn it started, once it waits in the kernel, and right after
// the peer made progress possible), give a new socket the same fd number at once, and
// check that the old operation completes exactly once, that no byte crosses between the
// two sockets, and that the new socket works.
#include <atomic>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <csignal>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fd_reuse.hpp"
#include "helpers.hpp"

using namespace weft_test;

namespace {

/// When the old socket is closed, relative to its operation.
enum class phase {
    same_turn,  ///< in the turn the operation started (uring: its SQE not yet submitted)
    waiting,    ///< once it waits (uring: in the kernel; reactors: parked)
    progress,   ///< in the turn the peer made progress possible (data sent, space made)
};
const char* name_of(phase p) {
    return p == phase::same_turn ? "same turn" : p == phase::waiting ? "waiting" : "after progress";
}

enum class read_kind { read_some, read_exact, readv, receive, wait_readable };
const char* name_of(read_kind k) {
    switch (k) {
        case read_kind::read_some: return "read_some";
        case read_kind::read_exact: return "read_exact";
        case read_kind::readv: return "readv";
        case read_kind::receive: return "receive";
        case read_kind::wait_readable: return "wait_readable";
    }
    return "?";
}

/// The old stream's read side: one operation of kind `k`; what it completed with.
struct read_outcome {
    std::atomic<int> completions{0};
    std::error_code error;
    std::string got;  ///< bytes it delivered
};

template <class B>
weft::task<void> old_read(weft::tcp_stream<B>& s, read_kind k, read_outcome& out) {
    std::string buf(4096, '\0');
    std::size_t n = 0;
    switch (k) {
        case read_kind::read_some: {
            auto r = co_await s.read_some(buf);
            if (r) n = *r; else out.error = r.error();
            break;
        }
        case read_kind::read_exact: {
            auto r = co_await s.read_exact(std::span(buf.data(), 100));
            if (r) n = *r; else out.error = r.error();
            break;
        }
        case read_kind::readv: {
            iovec v[2]{{buf.data(), 7}, {buf.data() + 7, 2000}};
            auto r = co_await s.read_some(std::span<iovec>(v));
            if (r) n = *r; else out.error = r.error();
            break;
        }
        case read_kind::receive: {
            auto r = co_await s.receive();
            if (r) out.got.assign(r->text()); else out.error = r.error();
            break;
        }
        case read_kind::wait_readable: {
            auto r = co_await s.wait_readable();
            if (!r) out.error = r.error();
            break;
        }
    }
    if (n) out.got.assign(buf.data(), n);
    ++out.completions;
}

/// Closes the old read side at `when` and gives its number to a new socket.
template <class B>
weft::task<void> close_reader(weft::loop<B>& loop, tcp_pair<B>& p, phase when, read_kind k,
                              std::optional<reused_stream<B>>& next) {
    if (when != phase::same_turn) (void)co_await weft::sleep_for(20ms);
    if (when == phase::progress) {
        if (k == read_kind::read_exact) {  // partial progress first: 10 of its 100 bytes
            send_raw(p.client.native_handle(), "oooooooooo");
            (void)co_await weft::sleep_for(20ms);
        }
        // More data lands now; the close comes in the same turn, before the loop waits.
        send_raw(p.client.native_handle(), "oooooooooo");
    }
    int fd = p.server.native_handle();
    CHECK(p.server.close());
    next.emplace(new_stream_on(loop, fd));  // the number is reused at once
}

template <class B>
void read_side_case(read_kind k, phase when, typename B::options opts = {}) {
    INFO(name_of(k) << ", closed " << name_of(when));
    weft::loop<B> loop(opts);
    read_outcome out;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        std::optional<reused_stream<B>> next;
        co_await weft::when_all(old_read(p.server, k, out), close_reader(loop, p, when, k, next));
        REQUIRE(next);
        // At once: the old socket's late completions land while the new one's operations
        // are in flight (uring: a stale busy bit would make them fail with EBUSY).
        co_await check_new_stream(*next);
        (void)co_await weft::sleep_for(10ms);
    }());
    REQUIRE(out.completions == 1);
    // It completed cancelled, or with what it really got: only the old peer's bytes.
    if (out.error) REQUIRE(out.error == std::errc::operation_canceled);
    REQUIRE(out.got.find_first_not_of('o') == std::string::npos);
}

/// The old stream's write side: one operation that cannot finish at once.
enum class write_kind { write_some, write_all, writev_all, wait_writable, send_file };
const char* name_of(write_kind k) {
    switch (k) {
        case write_kind::write_some: return "write_some";
        case write_kind::write_all: return "write_all";
        case write_kind::writev_all: return "writev_all";
        case write_kind::wait_writable: return "wait_writable";
        case write_kind::send_file: return "send_file";
    }
    return "?";
}

struct write_outcome {
    std::atomic<int> completions{0};
    std::error_code error;
};

constexpr std::size_t big = 16 << 20;  // more than any loopback socket buffer takes

template <class B>
weft::task<void> old_write(weft::tcp_stream<B>& s, write_kind k, const std::string& data, write_outcome& out,
                           weft::file<B>* f = nullptr) {
    switch (k) {
        case write_kind::send_file: {  // the file holds `data` too
            auto r = co_await weft::send_file(s, *f, 0, data.size());
            if (!r) out.error = r.error();
            break;
        }
        case write_kind::write_some: {
            auto r = co_await s.write_some(data);
            if (!r) out.error = r.error();
            break;
        }
        case write_kind::write_all: {
            auto r = co_await s.write_all(data);
            if (!r) out.error = r.error();
            break;
        }
        case write_kind::writev_all: {
            iovec v[2]{{const_cast<char*>(data.data()), 1000}, {const_cast<char*>(data.data()) + 1000, data.size() - 1000}};
            auto r = co_await s.write_all(std::span<iovec>(v));
            if (!r) out.error = r.error();
            break;
        }
        case write_kind::wait_writable: {
            auto r = co_await s.wait_writable();
            if (!r) out.error = r.error();
            break;
        }
    }
    ++out.completions;
}

template <class B>
weft::task<void> close_writer(weft::loop<B>& loop, tcp_pair<B>& p, phase when, std::optional<reused_stream<B>>& next) {
    if (when != phase::same_turn) (void)co_await weft::sleep_for(20ms);
    if (when == phase::progress) drain_some(p.server.native_handle(), 1 << 20);  // room for more, now
    int fd = p.client.native_handle();
    CHECK(p.client.close());
    next.emplace(new_stream_on(loop, fd));
}

template <class B>
void write_side_case(write_kind k, phase when, typename B::options opts = {}) {
    INFO(name_of(k) << ", closed " << name_of(when));
    weft::loop<B> loop(opts);
    write_outcome out;
    const std::string data(big, 'o');
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        if (k == write_kind::wait_writable) {  // fill the pipe so the wait has to wait
            std::string fill(big, 'o');
            (void)co_await weft::with_timeout(p.client.write_all(fill), 50ms);
        }
        weft::file<B> f;
        if (k == write_kind::send_file) {
            // `data`, as a file: written, opened, and unlinked at once (the open file lives on).
            const std::string path = "/tmp/weft-lifetime-" + std::to_string(::getpid()) + ".bin";
            int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
            REQUIRE(fd >= 0);
            REQUIRE(::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
            ::close(fd);
            auto opened = co_await weft::file<B>::open(loop, path);
            ::unlink(path.c_str());
            REQUIRE(opened);
            f = std::move(*opened);
        }
        std::optional<reused_stream<B>> next;
        co_await weft::when_all(old_write(p.client, k, data, out, &f), close_writer(loop, p, when, next));
        REQUIRE(next);
        co_await check_new_stream(*next);  // its peer gets "fresh" only: no old 'o' byte
        (void)co_await weft::sleep_for(10ms);
    }());
    REQUIRE(out.completions == 1);
    if (out.error) REQUIRE(out.error == std::errc::operation_canceled);
}

/// The moments at which backend `B` can close: all three, except "the same turn" on a
/// thread per task, where the closer is another thread (closing a stream another thread
/// is about to use is a race in the program, not in weft).
template <class B>
std::vector<phase> phases_for(std::initializer_list<phase> wanted = {phase::same_turn, phase::waiting,
                                                                    phase::progress}) {
    std::vector<phase> v;
    for (phase p : wanted)
        if (B::kind != weft::backend_kind::blocking || p != phase::same_turn) v.push_back(p);
    return v;
}

}  // namespace

TEMPLATE_TEST_CASE("fd reuse: a read closed under it never touches the socket that takes its number",
                   "[lifetime][fd-reuse]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    for (read_kind k : {read_kind::read_some, read_kind::read_exact, read_kind::readv, read_kind::receive,
                        read_kind::wait_readable})
        for (phase when : phases_for<TestType>()) read_side_case<TestType>(k, when);
}

TEMPLATE_TEST_CASE("fd reuse: a write closed under it sends nothing to the socket that takes its number",
                   "[lifetime][fd-reuse]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    for (write_kind k : {write_kind::write_some, write_kind::write_all, write_kind::writev_all, write_kind::wait_writable,
                         write_kind::send_file})
        for (phase when : phases_for<TestType>()) write_side_case<TestType>(k, when);
}

#if WEFT_HAS_URING
// The registered file table holds each socket at the slot of its number: the old
// socket's operations, and the table's own reference, must be gone before the number
// (and the slot) belong to the next socket.
TEST_CASE("fd reuse on uring with a registered file table: reads and writes closed under them",
          "[lifetime][fd-reuse][uring]") {
    using uring = weft::backend::uring;
    WEFT_REQUIRE_BACKEND(uring);
    const uring::options fixed{.fixed_files = true};
    for (read_kind k : {read_kind::read_some, read_kind::read_exact, read_kind::readv, read_kind::receive,
                        read_kind::wait_readable})
        for (phase when : phases_for<uring>()) read_side_case<uring>(k, when, fixed);
    for (write_kind k : {write_kind::write_some, write_kind::write_all, write_kind::writev_all, write_kind::wait_writable,
                         write_kind::send_file})
        for (phase when : phases_for<uring>()) write_side_case<uring>(k, when, fixed);
}
#endif

TEMPLATE_TEST_CASE("fd reuse: an accept closed under it leaves the listener that takes its number alone",
                   "[lifetime][fd-reuse]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    for (phase when : phases_for<TestType>()) {
        INFO("closed " << name_of(when));
        weft::loop<TestType> loop;
        std::atomic<int> completions{0};
        std::error_code error;
        bool accepted = false;
        run_bounded(loop, [&]() -> weft::task<void> {
            auto l = weft::tcp_listener<TestType>::bind(loop, weft::endpoint::loopback_v4(0));
            REQUIRE(l);
            auto ep = l->local_endpoint().value();
            raw_fd early;  // the peer of a connection the old accept may really get
            std::optional<weft::tcp_listener<TestType>> next;
            sockaddr_in next_addr{};
            auto acceptor = [&]() -> weft::task<void> {
                auto r = co_await l->accept();
                if (r) accepted = true; else error = r.error();
                ++completions;
            };
            auto closer = [&]() -> weft::task<void> {
                if (when != phase::same_turn) (void)co_await weft::sleep_for(20ms);
                if (when == phase::progress) {  // a connection arrives in the closing turn
                    early = raw_fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
                    REQUIRE(::connect(early.fd, ep.data(), ep.size()) == 0);
                }
                int fd = l->native_handle();
                CHECK(l->close());
                hold_number(fd);
                raw_fd nl = raw_listener(next_addr);
                take_number<TestType>(nl, fd);
                auto adopted = weft::tcp_listener<TestType>::adopt(loop, fd);
                REQUIRE(adopted);
                next.emplace(std::move(*adopted));
            };
            co_await weft::when_all(acceptor(), closer());
            REQUIRE(next);
            (void)co_await weft::sleep_for(10ms);
            // The new listener gets its own connection.
            raw_fd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
            REQUIRE(::connect(c.fd, reinterpret_cast<sockaddr*>(&next_addr), sizeof next_addr) == 0);
            auto s = co_await weft::with_timeout(next->accept(), 2s);
            REQUIRE(s);
            CO_REQUIRE(co_await s->write_all(fresh));
            REQUIRE(read_raw(c.fd) == fresh);
        }());
        REQUIRE(completions == 1);
        if (!accepted) REQUIRE(error == std::errc::operation_canceled);
    }
}

TEMPLATE_TEST_CASE("fd reuse: a connect closed under it leaves the socket that takes its number alone",
                   "[lifetime][fd-reuse]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    // A listener whose backlog is full never completes a handshake: the connect waits.
    sockaddr_in full_addr;
    raw_fd full = raw_listener(full_addr);
    REQUIRE(::listen(full.fd, 0) == 0);
    std::vector<raw_fd> fillers;
    for (int i = 0; i < 4; ++i) {
        raw_fd f(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        (void)::connect(f.fd, reinterpret_cast<sockaddr*>(&full_addr), sizeof full_addr);
        fillers.push_back(std::move(f));
    }
    ::usleep(20000);
    for (phase when : phases_for<TestType>({phase::same_turn, phase::waiting})) {
        INFO("closed " << name_of(when));
        weft::loop<TestType> loop;
        std::atomic<int> completions{0};
        std::error_code error;
        run_bounded(loop, [&]() -> weft::task<void> {
            int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | TestType::socket_flags, 0);
            REQUIRE(fd >= 0);
            auto s = weft::tcp_stream<TestType>::adopt(loop.backend(), fd);
            REQUIRE(s);
            std::optional<reused_stream<TestType>> next;
            auto connector = [&]() -> weft::task<void> {
                // The connect step of tcp_stream::connect, on a socket the test owns.
                auto peer = weft::endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&full_addr), sizeof full_addr);
                auto r = co_await weft::io_awaiter<TestType, weft::detail::connect_op>(&loop.backend(), {fd, peer});
                if (!r) error = r.error();
                ++completions;
            };
            auto closer = [&]() -> weft::task<void> {
                if (when != phase::same_turn) (void)co_await weft::sleep_for(20ms);
                CHECK(s->close());
                next.emplace(new_stream_on(loop, fd));
            };
            co_await weft::when_all(connector(), closer());
            REQUIRE(next);
            (void)co_await weft::sleep_for(10ms);
            co_await check_new_stream(*next);
        }());
        REQUIRE(completions == 1);
        if (error) REQUIRE(error == std::errc::operation_canceled);
    }
}

namespace {

/// A loop whose receive() pool has one buffer, of `whole_buffer` bytes.
template <class B>
typename B::options one_buffer() {
    typename B::options o{};
    o.buffer_count = 1;
    o.buffer_size = 64;
    return o;
}
/// A message that fills the buffer: a buffer consumed incrementally (uring) leaves the
/// ring only once it is full.
const std::string whole_buffer(64, 'a');

/// A receive in its own task: how it completed.
struct receive_outcome {
    std::atomic<int> completions{0};
    std::error_code error;
    std::string got;
};
template <class B>
weft::task<void> receive_into(weft::tcp_stream<B>& s, receive_outcome& out) {
    auto r = co_await s.receive();
    if (r)
        out.got.assign(r->text());
    else
        out.error = r.error();
    ++out.completions;
}

}  // namespace

TEMPLATE_TEST_CASE("fd reuse: a receive waiting for a pooled buffer is cancelled by close and never reads the new socket",
                   "[lifetime][fd-reuse][receive]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop(one_buffer<TestType>());
    receive_outcome out;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto a = co_await make_pair(loop);
        auto b = co_await make_pair(loop);
        CO_REQUIRE(co_await a.client.write_all(whole_buffer));
        auto held = co_await a.server.receive();  // the only buffer, on loan
        REQUIRE(held);
        REQUIRE(held->text() == whole_buffer);
        std::optional<reused_stream<TestType>> next;
        auto closer = [&]() -> weft::task<void> {
            send_raw(b.client.native_handle(), "oooo");  // readable: the receive wants a buffer
            (void)co_await weft::sleep_for(30ms);
            REQUIRE(out.completions == 0);  // it waits for the buffer
            int fd = b.server.native_handle();
            CHECK(b.server.close());
            next.emplace(new_stream_on(loop, fd));
            held->release();  // the buffer comes back in the same turn
        };
        co_await weft::when_all(receive_into(b.server, out), closer());
        REQUIRE(next);
        (void)co_await weft::sleep_for(10ms);
        co_await check_new_stream(*next);
    }());
    REQUIRE(out.completions == 1);
    REQUIRE(out.error == std::errc::operation_canceled);
    REQUIRE(out.got.empty());
}

TEMPLATE_TEST_CASE("a returned buffer whose woken receive leaves in the same turn wakes the next one",
                   "[lifetime][receive]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    for (bool by_close : {false, true}) {
        INFO((by_close ? "the woken receive's socket is closed" : "the woken receive is cancelled"));
        weft::loop<TestType> loop(one_buffer<TestType>());
        receive_outcome first, second;
        run_bounded(loop, [&]() -> weft::task<void> {
            auto a = co_await make_pair(loop);
            auto b = co_await make_pair(loop);
            auto c = co_await make_pair(loop);
            CO_REQUIRE(co_await a.client.write_all(whole_buffer));
            auto held = co_await a.server.receive();
            REQUIRE(held);
            REQUIRE(held->size() == whole_buffer.size());
            send_raw(b.client.native_handle(), "bbbb");
            send_raw(c.client.native_handle(), "cccc");
            std::stop_source stop_first;
            auto release = [&]() -> weft::task<void> {
                (void)co_await weft::sleep_for(30ms);  // both receives wait for the one buffer
                REQUIRE(first.completions == 0);
                REQUIRE(second.completions == 0);
                held->release();  // wakes the first waiter...
                if (by_close)     // ...which leaves in the same turn, without the buffer
                    CHECK(b.server.close());
                else
                    stop_first.request_stop();
            };
            auto second_waits = [&]() -> weft::task<void> {
                (void)co_await weft::sleep_for(5ms);  // second in line
                co_await receive_into(c.server, second);
            };
            co_await weft::when_all(weft::with_stop_token(receive_into(b.server, first), stop_first.get_token()),
                                    second_waits(), release());
        }(), 5000ms);
        REQUIRE(first.completions == 1);
        REQUIRE(second.completions == 1);
        REQUIRE(second.got == "cccc");  // the buffer reached it: no lost wake-up
    }
}

TEMPLATE_TEST_CASE("urgent data does not stall a reader: a short read at the urgent mark is not 'drained'",
                   "[lifetime][edge]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    for (bool use_receive : {false, true}) {
        INFO((use_receive ? "receive()" : "read_some"));
        run_bounded(loop, [&]() -> weft::task<void> {
            auto p = co_await make_pair(loop);
            int c = p.client.native_handle();
            send_raw(c, "AAAA");
            REQUIRE(::send(c, "B", 1, MSG_OOB | MSG_NOSIGNAL) == 1);
            send_raw(c, "CCCC");
            // Let the loop see (and use up) the edge with nobody reading yet.
            (void)co_await weft::sleep_for(20ms);
            std::string got;
            while (got.size() < 8) {
                if (use_receive) {
                    auto r = co_await weft::with_timeout(p.server.receive(), 2s);
                    INFO("after \"" << got << "\"");
                    REQUIRE(r);
                    got.append(r->text());
                } else {
                    char buf[64];
                    auto r = co_await weft::with_timeout(p.server.read_some(buf), 2s);
                    INFO("after \"" << got << "\"");
                    REQUIRE(r);
                    got.append(buf, *r);
                }
            }
            REQUIRE(got == "AAAACCCC");  // every in-band byte; the urgent one is out of band
        }());
    }
}

TEMPLATE_TEST_CASE("vectored IO over more than IOV_MAX entries is not taken as drained after one syscall",
                   "[lifetime][edge][vectored]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        constexpr std::size_t entries = IOV_MAX + 976;  // 2000
        // Read side: 1,500 bytes wait; one recvmsg takes IOV_MAX of them.
        const std::string data(1500, 'r');
        send_raw(p.client.native_handle(), data);
        (void)co_await weft::sleep_for(20ms);  // the edge is seen and used up
        std::string in(entries, '\0');
        std::vector<iovec> iov(entries);
        std::size_t got = 0;
        while (got < data.size()) {
            for (std::size_t i = 0; i < entries; ++i) iov[i] = {in.data() + i, 1};
            auto r = co_await weft::with_timeout(p.server.read_some(std::span<iovec>(iov)), 2s);
            INFO("read " << got << " of " << data.size());
            REQUIRE(r);
            got += *r;
        }
        REQUIRE(got == data.size());
        // Write side: one sendmsg sends IOV_MAX bytes of the 2,000; the socket has room.
        std::string out(entries, 'w');
        std::size_t sent = 0;
        while (sent < entries) {
            std::vector<iovec> wv;
            for (std::size_t i = sent; i < entries; ++i) wv.push_back({out.data() + i, 1});
            auto r = co_await weft::with_timeout(p.client.write_some(std::span<iovec>(wv)), 2s);
            INFO("wrote " << sent << " of " << entries);
            REQUIRE(r);
            sent += *r;
        }
        REQUIRE(read_raw(p.server.native_handle()) == out);
    }());
}

namespace {
/// fd number -> what it refers to ("socket:[123]", "anon_inode:[eventfd]"...), for this process.
inline std::map<int, std::string> open_fds() {
    std::map<int, std::string> fds;
    DIR* d = ::opendir("/proc/self/fd");
    REQUIRE(d);
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.') continue;
        int fd = std::atoi(e->d_name);
        if (fd == ::dirfd(d)) continue;
        char target[256];
        long n = ::readlink((std::string("/proc/self/fd/") + e->d_name).c_str(), target, sizeof target - 1);
        if (n > 0) fds[fd] = std::string(target, static_cast<std::size_t>(n));
    }
    ::closedir(d);
    return fds;
}

/// What a freshly exec'd program sees open: `ls -l` of the shell's own fd table.
inline std::string fds_after_exec() {
    int out[2];
    REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::dup2(out[1], 1);  // (dup2 clears CLOEXEC on the copy: the shell writes here)
        ::execl("/bin/sh", "sh", "-c", "ls -l /proc/$$/fd", static_cast<char*>(nullptr));
        ::_exit(127);
    }
    ::close(out[1]);
    std::string text;
    char buf[4096];
    long n;
    while ((n = ::read(out[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<std::size_t>(n));
    ::close(out[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
    return text;
}
}  // namespace

TEMPLATE_TEST_CASE("every fd weft opens is close-on-exec", "[lifetime][hygiene]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    auto before = open_fds();
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);  // a listener (and its reserve fd), a connected and an accepted socket
        auto l = weft::tcp_listener<TestType>::bind(loop, weft::endpoint::loopback_v4(0));
        REQUIRE(l);
        CO_REQUIRE(co_await p.client.write_all(std::string_view("x")));
        auto lease = co_await p.server.receive();  // the provided buffers (uring: the buffer ring)
        REQUIRE(lease);
        // Everything weft opened: the loop's own fds (epoll, eventfd, signalfd, the ring) and these sockets.
        std::vector<std::string> ours;  // as `ls -l` shows them: "N -> target"
        for (const auto& [fd, target] : open_fds())
            if (!before.count(fd) || before[fd] != target) ours.push_back(" " + std::to_string(fd) + " -> " + target);
        REQUIRE(ours.size() >= 3);
        std::string seen = fds_after_exec();
        INFO("after exec:\n" << seen);
        for (const auto& target : ours) {
            INFO("weft's fd" << target << " survived exec");
            REQUIRE(seen.find(target) == std::string::npos);
        }
    }());
}

namespace {
weft::loop<weft::backend::sigio>* g_sigio_loop = nullptr;
volatile int g_errno_seen = 0;
extern "C" void stop_from_handler(int) {
    errno = EDOM;
    g_sigio_loop->stop();
    g_errno_seen = errno;
}
}  // namespace

TEST_CASE("sigio: post() and stop() reach the loop while the real-time signal queue is full", "[lifetime][sigio]") {
    using weft::backend::sigio;
    weft::loop<sigio> loop;
    // A soft RLIMIT_SIGPENDING of 0: no real-time signal can be queued to this process,
    // as when other queued signals have used up the limit.
    rlimit old{};
    REQUIRE(::getrlimit(RLIMIT_SIGPENDING, &old) == 0);
    rlimit none = old;
    none.rlim_cur = 0;
    REQUIRE(::setrlimit(RLIMIT_SIGPENDING, &none) == 0);
    struct restore {
        rlimit r;
        ~restore() { ::setrlimit(RLIMIT_SIGPENDING, &r); }
    } restore_limit{old};

    // post() from another thread.
    std::atomic<bool> posted{false};
    std::thread poster([&] {
        std::this_thread::sleep_for(20ms);
        loop.post([&] { posted = true; });
    });
    auto t0 = weft::clock::now();
    while (!posted && weft::clock::now() < t0 + 10s) loop.run_once(10s);  // a lost wake-up sleeps it out
    poster.join();
    REQUIRE(posted);
    REQUIRE(weft::clock::now() - t0 < 3s);

    // stop() from another thread ends run() although a task still sleeps.
    loop.spawn([]() -> weft::task<void> { (void)co_await weft::sleep_for(std::chrono::hours(1)); }());
    std::thread stopper([&] {
        std::this_thread::sleep_for(20ms);
        loop.stop();
    });
    auto start = weft::clock::now();
    loop.run();
    stopper.join();
    REQUIRE(weft::clock::now() - start < 3s);

    // stop() from a signal handler leaves errno alone (the failed tgkill set EAGAIN).
    g_sigio_loop = &loop;
    struct sigaction sa{}, previous{};
    sa.sa_handler = stop_from_handler;
    REQUIRE(::sigaction(SIGUSR1, &sa, &previous) == 0);
    ::raise(SIGUSR1);
    ::sigaction(SIGUSR1, &previous, nullptr);
    REQUIRE(g_errno_seen == EDOM);
}

namespace {
/// A loop destroyed while an accept waits and connections are arriving: every accepted
/// fd (handed out, queued by a multishot accept, or completed into a dying frame) is
/// closed, and the process's fd count returns to where it was.
template <class B>
void accept_teardown_leaks_nothing(typename B::options opts) {
    const std::size_t baseline = open_fds().size();
    std::vector<raw_fd> clients;
    {
        weft::loop<B> loop(opts);
        auto l = weft::tcp_listener<B>::bind(loop, weft::endpoint::loopback_v4(0));
        REQUIRE(l);
        auto ep = l->local_endpoint().value();
        bool ran = false;
        loop.spawn([](weft::tcp_listener<B>& l, bool& ran) -> weft::task<void> {
            ran = true;
            auto s = co_await l.accept();  // the first connection: kept by this frame until teardown
            (void)co_await l.accept();     // the second may complete into the dying frame
            (void)co_await weft::sleep_for(std::chrono::hours(1));
        }(*l, ran));
        for (int i = 0; i < 20 && !ran; ++i) loop.run_once(10ms);
        REQUIRE(ran);
        for (int i = 0; i < 4; ++i) {
            raw_fd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
            REQUIRE(::connect(c.fd, ep.data(), ep.size()) == 0);  // completes in the kernel's backlog
            clients.push_back(std::move(c));
            loop.run_once(std::chrono::milliseconds(i == 0 ? 20 : 0));
        }
        for (int i = 0; i < 2; ++i) {  // and two the loop never looks at before teardown
            raw_fd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
            REQUIRE(::connect(c.fd, ep.data(), ep.size()) == 0);
            clients.push_back(std::move(c));
        }
        // The listener closes first, then the loop goes with the accepted, queued and
        // in-flight connections.
    }
    clients.clear();
    auto now = open_fds();
    INFO("fds before: " << baseline << ", after: " << now.size());
    REQUIRE(now.size() <= baseline);
}
}  // namespace

TEMPLATE_TEST_CASE("a loop torn down while connections arrive leaks no accepted fd", "[lifetime][accept]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    WEFT_NOT_ON_BLOCKING(TestType, "run_once does not drive task threads step by step");
    accept_teardown_leaks_nothing<TestType>({});
}

#if WEFT_HAS_URING
TEST_CASE("uring: single-shot accepts torn down while connections arrive leak no fd", "[lifetime][accept][uring]") {
    WEFT_REQUIRE_BACKEND(weft::backend::uring);
    accept_teardown_leaks_nothing<weft::backend::uring>({.multishot_accept = false});
}
#endif

// Found by the operation fuzzer (libFuzzer, uring) and reduced: two more ways a loop's
// teardown leaked an accepted connection.
namespace {
/// A raw client of `ep`, returned once its connection waits in the listener's backlog.
raw_fd connect_and_queue(const weft::endpoint& ep, int listener) {
    raw_fd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(::connect(c.fd, ep.data(), ep.size()) == 0);
    pollfd p{listener, POLLIN, 0};
    REQUIRE(::poll(&p, 1, 2000) == 1);  // (looks, does not accept)
    return c;
}

enum class teardown { close_stream_then_listener, accept_in_ready_queue };

template <class B>
void teardown_leaks_no_connection(teardown how) {
    const auto before = open_fds();
    raw_fd c1, c2;
    {
        weft::loop<B> loop;
        auto l = weft::tcp_listener<B>::bind(loop, weft::endpoint::loopback_v4(0));
        REQUIRE(l);
        const auto ep = l->local_endpoint().value();
        const int lfd = l->native_handle();
        c1 = connect_and_queue(ep, lfd);
        // uring: this accept arms the listener's multishot accept, which stays armed.
        auto s = run_bounded(loop, [](weft::tcp_listener<B>& l) -> weft::task<weft::result<weft::tcp_stream<B>>> {
            co_return co_await l.accept();
        }(*l));
        REQUIRE(s);
        if (how == teardown::close_stream_then_listener) {
            // uring: a receive() arms the stream's multishot recv, which stays armed.
            send_raw(c1.fd, "x");
            auto n = run_bounded(loop, [](weft::tcp_stream<B>& s) -> weft::task<std::size_t> {
                auto r = co_await s.receive();
                co_return r ? r->size() : 0;
            }(*s));
            REQUIRE(n == 1);
            c2 = connect_and_queue(ep, lfd);  // the loop never runs again
            // uring: closing the stream runs the ring's deferred work, and with it the
            // listener's pending multishot accept: c2 gets an fd whose completion nobody
            // reaped before the ring went away.
            REQUIRE(s->close());
            REQUIRE(l->close());
        } else {
            c2 = connect_and_queue(ep, lfd);
            if constexpr (B::kind == weft::backend_kind::proactor) {  // the multishot accepts c2 first
                for (int i = 0; i < 100 && loop.backend().queued_connections(lfd) == 0; ++i) loop.run_once(10ms);
                REQUIRE(loop.backend().queued_connections(lfd) == 1);
            }
            bool started = false;
            loop.spawn([](weft::tcp_listener<B>& l, bool& started) -> weft::task<void> {
                started = true;
                auto s2 = co_await l.accept();  // completes into the ready queue, never resumed
                (void)co_await weft::sleep_for(std::chrono::hours(1));
            }(*l, started));
            loop.run_once(0ms);  // starts the task; its accept would resume in the next turn
            REQUIRE(started);
            REQUIRE(l->close());
            // ~loop used to mark queued completions idle before destroying the frames, so
            // the accept's awaiter never released the fd it had been handed.
        }
    }
    c1 = raw_fd();
    c2 = raw_fd();
    const auto after = open_fds();
    std::string added;
    for (const auto& [fd, what] : after)
        if (!before.count(fd)) added += " " + std::to_string(fd) + "=" + what;
    INFO("fds left open:" << added);
    REQUIRE(after.size() <= before.size());
}
}  // namespace

TEMPLATE_TEST_CASE("a connection accepted while a stream closes right before teardown is not leaked",
                   "[lifetime][accept]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    WEFT_NOT_ON_BLOCKING(TestType, "the loop must stay idle between steps: run_once does not drive task threads");
    teardown_leaks_no_connection<TestType>(teardown::close_stream_then_listener);
}

TEMPLATE_TEST_CASE("an accept completed into the ready queue is not leaked when the loop dies", "[lifetime][accept]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    WEFT_NOT_ON_BLOCKING(TestType, "the loop must stay idle between steps: run_once does not drive task threads");
    teardown_leaks_no_connection<TestType>(teardown::accept_in_ready_queue);
}

// File IO and send_file on every backend: positional and vectored reads and writes,
// short reads at the end, large files, stat/sync/close, opening beneath a directory
// (the escapes a static-file server must refuse), several reads in flight on one file,
// cancelling a read a worker is running (under ASan: no use after free), closing a
// file with a read in flight (its number is not reused meanwhile), send_file larger
// than the socket buffer to a slow reader, and send_file cancelled mid-way.
#include "alloc_counter.hpp"
#include "helpers.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace weft_test;

namespace {
struct temp_dir {
    std::string path;
    temp_dir() {
        char tmpl[] = "/tmp/weft-file-XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        path = tmpl;
    }
    ~temp_dir() {
        std::string cmd = "rm -rf '" + path + "'";
        [[maybe_unused]] int r = std::system(cmd.c_str());
    }
    std::string file(std::string_view name) const { return path + "/" + std::string(name); }
};

/// Writes `data` to `path` with plain POSIX calls (the reference the tests read back).
void write_plain(const std::string& path, const std::vector<char>& data) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
    ::close(fd);
}

std::vector<char> read_plain(const std::string& path) {
    std::vector<char> out;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    char buf[65536];
    for (;;) {
        ssize_t r = ::read(fd, buf, sizeof buf);
        REQUIRE(r >= 0);
        if (r == 0) break;
        out.insert(out.end(), buf, buf + r);
    }
    ::close(fd);
    return out;
}

std::span<std::byte> bytes_of(std::vector<char>& v) { return std::as_writable_bytes(std::span(v)); }

bool fd_is_open(int fd) { return ::fcntl(fd, F_GETFD) >= 0; }
}  // namespace

TEMPLATE_TEST_CASE("file: write and read at offsets, short reads at the end, stat, sync, close", "[file]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    temp_dir dir;
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto f = co_await weft::file<TestType>::open(loop, dir.file("a.bin"), O_RDWR | O_CREAT | O_TRUNC, 0600);
        REQUIRE(f);
        REQUIRE(f->is_open());
        REQUIRE((::fcntl(f->native_handle(), F_GETFD) & FD_CLOEXEC) != 0);
        std::vector<char> a = pattern(1000, 1), b = pattern(500, 2);
        auto w1 = co_await f->write_at(bytes_of(a), 0);
        REQUIRE(w1.value() == 1000);
        auto w2 = co_await f->write_at(bytes_of(b), 2000);  // leaves a hole of zeros
        REQUIRE(w2.value() == 500);
        auto st = co_await f->stat();
        REQUIRE(st);
        REQUIRE(st->size == 2500);
        REQUIRE(st->is_regular());
        REQUIRE((st->mode & 0777) == 0600);
        REQUIRE(st->mtime_sec > 0);
        std::vector<char> in(800);
        auto r = co_await f->read_at(bytes_of(in), 500);
        REQUIRE(r.value() == 800);
        REQUIRE(std::equal(in.begin(), in.begin() + 500, a.begin() + 500));
        REQUIRE(std::all_of(in.begin() + 500, in.end(), [](char c) { return c == 0; }));
        auto tail = co_await f->read_at(bytes_of(in), 2300);  // short: 200 bytes left
        REQUIRE(tail.value() == 200);
        REQUIRE(std::equal(in.begin(), in.begin() + 200, b.begin() + 300));
        auto at_end = co_await f->read_at(bytes_of(in), 2500);
        REQUIRE(at_end.value() == 0);
        auto past = co_await f->read_at(bytes_of(in), 1'000'000);
        REQUIRE(past.value() == 0);
        CO_REQUIRE(co_await f->sync());
        CO_REQUIRE(co_await f->sync(true));
        int fd = f->native_handle();
        auto c = co_await f->close();
        REQUIRE(c);
        REQUIRE_FALSE(f->is_open());
        REQUIRE_FALSE(fd_is_open(fd));
        // Every operation on a closed file fails with EBADF, without a syscall.
        auto again = co_await f->read_at(bytes_of(in), 0);
        REQUIRE(again.error() == std::errc::bad_file_descriptor);
        CO_REQUIRE(co_await f->close());  // closing twice is harmless
    }());
}

TEMPLATE_TEST_CASE("file: vectored reads and writes, a large file, several reads in flight", "[file]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    temp_dir dir;
    const std::size_t big = 8u << 20;
    std::vector<char> data = pattern(big, 7);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto f = co_await weft::file<TestType>::open(loop, dir.file("big.bin"), O_RDWR | O_CREAT | O_TRUNC);
        REQUIRE(f);
        // Written in 1 MiB pieces, each as two iovecs (vectored write).
        for (std::size_t off = 0; off < big; off += 1u << 20) {
            iovec iov[2] = {{data.data() + off, 300'000}, {data.data() + off + 300'000, (1u << 20) - 300'000}};
            std::size_t done = 0;
            while (done < (1u << 20)) {
                auto w = co_await f->write_at_vectored(weft::detail::advance(std::span(iov), done), off + done);
                REQUIRE(w);
                done += *w;
            }
        }
        REQUIRE(read_plain(dir.file("big.bin")) == data);
        // Vectored read across three buffers.
        std::vector<char> x(100), y(5000), z(70'000);
        iovec riov[3] = {{x.data(), x.size()}, {y.data(), y.size()}, {z.data(), z.size()}};
        auto r = co_await f->read_at(std::span<const iovec>(riov), 12345);
        REQUIRE(r.value() == 75'100);
        REQUIRE(std::equal(x.begin(), x.end(), data.begin() + 12345));
        REQUIRE(std::equal(y.begin(), y.end(), data.begin() + 12445));
        REQUIRE(std::equal(z.begin(), z.end(), data.begin() + 17445));
        // Four reads of one file in flight at once (positional: they do not interfere).
        std::vector<char> p0(1u << 20), p1(1u << 20), p2(1u << 20), p3(1u << 20);
        auto [r0, r1, r2, r3] = co_await weft::when_all(f->read_at(bytes_of(p0), 0), f->read_at(bytes_of(p1), 1u << 20),
                                                        f->read_at(bytes_of(p2), 5u << 20),
                                                        f->read_at(bytes_of(p3), big - 1000));
        REQUIRE(r0.value() == p0.size());
        REQUIRE(r1.value() == p1.size());
        REQUIRE(r2.value() == p2.size());
        REQUIRE(r3.value() == 1000);
        REQUIRE(std::equal(p0.begin(), p0.end(), data.begin()));
        REQUIRE(std::equal(p1.begin(), p1.end(), data.begin() + (1u << 20)));
        REQUIRE(std::equal(p2.begin(), p2.end(), data.begin() + (5u << 20)));
        REQUIRE(std::equal(p3.begin(), p3.begin() + 1000, data.end() - 1000));
    }());
}

TEMPLATE_TEST_CASE("file: open errors, and open_beneath refuses every way out of its directory", "[file]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    temp_dir dir, outside;
    REQUIRE(::mkdir(dir.file("root").c_str(), 0755) == 0);
    REQUIRE(::mkdir(dir.file("root/sub").c_str(), 0755) == 0);
    write_plain(dir.file("root/sub/in.txt"), pattern(10, 1));
    write_plain(outside.file("secret.txt"), pattern(10, 2));
    write_plain(dir.file("sibling.txt"), pattern(10, 3));
    REQUIRE(::symlink(outside.file("secret.txt").c_str(), dir.file("root/out-abs").c_str()) == 0);
    REQUIRE(::symlink("../sibling.txt", dir.file("root/out-rel").c_str()) == 0);
    REQUIRE(::symlink("sub/in.txt", dir.file("root/in-link").c_str()) == 0);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto missing = co_await weft::file<TestType>::open(loop, dir.file("nope"));
        REQUIRE(missing.error() == std::errc::no_such_file_or_directory);
        auto exists = co_await weft::file<TestType>::open(loop, dir.file("sibling.txt"), O_WRONLY | O_CREAT | O_EXCL);
        REQUIRE(exists.error() == std::errc::file_exists);
        auto root = co_await weft::file<TestType>::open(loop, dir.file("root"), O_DIRECTORY | O_PATH);
        REQUIRE(root);
        auto ok = co_await weft::file<TestType>::open_beneath(*root, "sub/in.txt");
        REQUIRE(ok);
        auto via_link = co_await weft::file<TestType>::open_beneath(*root, "in-link");
        REQUIRE(via_link);
        auto inner_dots = co_await weft::file<TestType>::open_beneath(*root, "sub/../sub/in.txt");
        REQUIRE(inner_dots);
        for (const char* escape : {"../sibling.txt", "sub/../../sibling.txt", "/etc/passwd", "out-abs", "out-rel",
                                   "sub/../out-rel"}) {
            auto r = co_await weft::file<TestType>::open_beneath(*root, escape);
            INFO(escape);
            REQUIRE_FALSE(r);
        }
        auto closed = co_await weft::file<TestType>::open_beneath(weft::file<TestType>(), "x");
        REQUIRE(closed.error() == std::errc::bad_file_descriptor);
    }());
}

TEMPLATE_TEST_CASE("file: a cancelled read completes once, with its data or operation_canceled", "[file][cancel]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    // One worker, held busy by an open(2) of a FIFO, which blocks until a writer opens
    // it; the read is queued behind it. The stop comes before the writer opens, so on a
    // readiness backend the read has provably not started: it is cancelled with its
    // buffer untouched. (A 64 MiB read of /dev/zero used to hold the worker, and on a
    // loaded machine it could end before the 1 ms timer fired: the read then ran.) The
    // open itself may be stopped or succeed; the writer's end is opened O_RDWR, which
    // never blocks, so an open that is already waiting, or starts later, returns.
    temp_dir dir;
    const std::string fifo = dir.path + "/fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    weft::loop<TestType> loop;
    loop.set_worker_threads(1);
    loop.set_inline_file_attempts(false);  // /dev/zero would be read inline
    std::vector<char> small(4096, 'x');
    int writer = -1;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto f = co_await weft::file<TestType>::open(loop, "/dev/zero");
        REQUIRE(f);
        std::stop_source stop;
        auto blocker = [](weft::loop<TestType>& l, std::string path) -> weft::task<bool> {
            auto r = co_await weft::file<TestType>::open(l, std::move(path));
            co_return r || r.error() == std::errc::operation_canceled || r.error() == std::errc::interrupted;
        };
        auto reader = [](weft::file<TestType>& file, std::span<std::byte> buf) -> weft::task<weft::result<std::size_t>> {
            co_return co_await file.read_at(buf, 0);
        };
        auto canceller = [](weft::loop<TestType>& l, std::stop_source& s, const std::string& path,
                            int& w) -> weft::task<void> {
            (void)co_await l.sleep_for(1ms);
            s.request_stop();
            w = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
        };
        auto [opened, b, done] = co_await weft::when_all(
            weft::with_stop_token(blocker(loop, fifo), stop.get_token()),
            weft::with_stop_token(reader(*f, bytes_of(small)), stop.get_token()), canceller(loop, stop, fifo, writer));
        (void)done;
        REQUIRE(writer >= 0);
        REQUIRE(opened);
        if (b) {  // delivered: what it read (io_uring may stop a read part-way: a short read)
            REQUIRE(*b > 0);
            REQUIRE(*b <= small.size());
            REQUIRE(std::all_of(small.begin(), small.begin() + static_cast<long>(*b), [](char c) { return c == 0; }));
        } else {
            REQUIRE(b.error() == std::errc::operation_canceled);
        }
        if constexpr (TestType::kind == weft::backend_kind::reactor) {
            // The queued one never started: cancelled before a worker took it, buffer untouched.
            REQUIRE_FALSE(b);
            REQUIRE(std::all_of(small.begin(), small.end(), [](char c) { return c == 'x'; }));
        }
    }());
    if (writer >= 0) ::close(writer);
}

TEMPLATE_TEST_CASE("file: a loop destroyed while a worker runs a read waits for it (no use after free)",
                   "[file][lifetime]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    WEFT_NOT_ON_BLOCKING(TestType, "a task's call runs on its own thread; the loop joins it");
    // The buffer lives in the frame: if the loop freed the frame while a worker still
    // wrote into it, ASan would report it.
    bool completed = false;
    {
        weft::loop<TestType> loop;
        loop.set_inline_file_attempts(false);  // /dev/zero would be read inline
        auto reader = [](weft::loop<TestType>& l, bool& done) -> weft::task<void> {
            auto f = co_await weft::file<TestType>::open(l, "/dev/zero");
            REQUIRE(f);
            std::vector<char> b(64u << 20);
            (void)co_await f->read_at(bytes_of(b), 0);
            done = true;  // (io_uring may finish it inline, before the loop goes)
        };
        loop.spawn(reader(loop, completed));
        // Run until the read is in flight (on a worker, or in the kernel), then drop the loop.
        for (int i = 0; i < 3 && !completed; ++i) loop.run_once(1ms);
    }
    SUCCEED("the frame outlived the read (completed in time: " << completed << ")");
}

TEMPLATE_TEST_CASE("file: closing a file with a read in flight keeps its number until the read ends",
                   "[file][lifetime]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    WEFT_NOT_ON_BLOCKING(TestType, "a task's read runs on its own thread: another task cannot close the file meanwhile");
    temp_dir dir;
    write_plain(dir.file("other.txt"), pattern(100, 5));
    weft::loop<TestType> loop;
    loop.set_inline_file_attempts(false);  // /dev/zero would be read inline
    std::vector<char> big(64u << 20, 'x');
    // A read that is still in flight when the file is closed: on a worker, 64 MiB of
    // /dev/zero; in io_uring (which would finish that inline), the read end of a pipe,
    // which waits for data (io_uring ignores the offset of a stream).
    int pipe_fds[2] = {-1, -1};
    const bool proactor = TestType::kind == weft::backend_kind::proactor;
    if (proactor) REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
    run_bounded(loop, [&]() -> weft::task<void> {
        weft::file<TestType> f;
        if (proactor) {
            f = weft::file<TestType>::adopt(loop, pipe_fds[0]);
        } else {
            auto z = co_await weft::file<TestType>::open(loop, "/dev/zero");
            REQUIRE(z);
            f = std::move(*z);
        }
        const int old_fd = f.native_handle();
        bool read_done = false;
        auto reader = [](weft::file<TestType>& file, std::vector<char>& b,
                         bool& flag) -> weft::task<weft::result<std::size_t>> {
            auto r = co_await file.read_at(bytes_of(b), 0);
            flag = true;
            co_return r;
        };
        auto closer = [](weft::loop<TestType>& l, weft::file<TestType>& file, const std::string& other, int old,
                         const bool& flag, int wake_fd) -> weft::task<void> {
            (void)co_await l.sleep_for(1ms);
            REQUIRE_FALSE(flag);  // still in flight
            auto c = co_await file.close();
            REQUIRE(c);
            REQUIRE_FALSE(file.is_open());
            REQUIRE(fd_is_open(old));  // the read still holds it
            // The number is still the read's: a file opened now gets another one. Opened
            // with open(2) right here, not through weft: close() did not suspend, so the
            // read cannot have ended in between. (A weft open runs on a worker; the read
            // could end first and legitimately free the number, which made this racy.)
            const int g = ::open(other.c_str(), O_RDONLY | O_CLOEXEC);
            REQUIRE(g >= 0);
            REQUIRE_FALSE(flag);
            REQUIRE(g != old);
            ::close(g);
            // A weft open is served all the same (whatever number it gets).
            auto g2 = co_await weft::file<TestType>::open(l, other);
            REQUIRE(g2);
            if (wake_fd >= 0) REQUIRE(::write(wake_fd, "data", 4) == 4);  // the pipe's read ends
        };
        auto [r, unit] = co_await weft::when_all(reader(f, big, read_done),
                                                 closer(loop, f, dir.file("other.txt"), old_fd, read_done, pipe_fds[1]));
        (void)unit;
        REQUIRE(r.value() == (proactor ? 4u : big.size()));
        // The read is over (its awaiter gone): now the descriptor is closed.
        REQUIRE_FALSE(fd_is_open(old_fd));
    }());
    if (pipe_fds[1] >= 0) ::close(pipe_fds[1]);
}

TEMPLATE_TEST_CASE("file: cached reads need no worker; reads inline or on the pool allocate nothing per operation",
                   "[file][alloc]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    temp_dir dir;
    write_plain(dir.file("f.bin"), pattern(4096, 9));
    weft::loop<TestType> loop;
    std::size_t inline_allocs = 0, pool_allocs = 0;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto f = co_await weft::file<TestType>::open(loop, dir.file("f.bin"));
        REQUIRE(f);
        std::vector<char> buf(4096);
        // The file was just written: its pages are cached, so a reactor reads it with
        // preadv2(RWF_NOWAIT) on the loop thread, and its open and stat were inline too.
        for (int i = 0; i < 20; ++i) CO_REQUIRE(co_await f->read_at(bytes_of(buf), 0));
        CO_REQUIRE(co_await f->stat());
        if constexpr (TestType::kind == weft::backend_kind::reactor) REQUIRE(loop.worker_threads_started() == 0);
        auto before = alloc_snapshot();
        for (int i = 0; i < 200; ++i) {
            auto r = co_await f->read_at(bytes_of(buf), static_cast<std::uint64_t>(i));
            REQUIRE(r.value() == 4096u - static_cast<std::size_t>(i));  // short only at the end
        }
        inline_allocs = alloc_snapshot().allocs - before.allocs;
        // With inline attempts off, every read is a worker's.
        loop.set_inline_file_attempts(false);
        auto z = co_await weft::file<TestType>::open(loop, "/dev/zero");
        REQUIRE(z);
        for (int i = 0; i < 20; ++i) CO_REQUIRE(co_await z->read_at(bytes_of(buf), 0));  // warm: threads started
        if constexpr (TestType::kind == weft::backend_kind::reactor) REQUIRE(loop.worker_threads_started() >= 1);
        before = alloc_snapshot();
        for (int i = 0; i < 200; ++i) {
            auto r = co_await z->read_at(bytes_of(buf), 0);
            REQUIRE(r.value() == 4096u);
        }
        pool_allocs = alloc_snapshot().allocs - before.allocs;
    }());
    // (On blocking the call is the task thread's own, and the harness's deadline is a
    // thread whose start-up allocates at a moment of its choosing: see alloc_counter.hpp.)
    if constexpr (TestType::kind != weft::backend_kind::blocking) {
        REQUIRE(inline_allocs == 0);
        REQUIRE(pool_allocs == 0);
    }
}

TEMPLATE_TEST_CASE("send_file: a file larger than the socket buffer reaches a slow reader byte-exact", "[file][send_file]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    temp_dir dir;
    const std::size_t size = (3u << 20) + 12345;
    std::vector<char> data = pattern(size, 11);
    write_plain(dir.file("s.bin"), data);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        REQUIRE(p.server.set_send_buffer_size(16384));
        REQUIRE(p.client.set_receive_buffer_size(16384));
        auto f = co_await weft::file<TestType>::open(loop, dir.file("s.bin"));
        REQUIRE(f);
        auto slow_reader = [](weft::loop<TestType>& l, weft::tcp_stream<TestType>& s,
                              std::size_t n) -> weft::task<std::vector<char>> {
            std::vector<char> got;
            std::vector<char> buf(32768);
            int round = 0;
            while (got.size() < n) {
                if (++round % 8 == 0) (void)co_await l.sleep_for(1ms);
                auto r = co_await s.read_some(buf);
                REQUIRE(r);
                REQUIRE(*r > 0);
                got.insert(got.end(), buf.begin(), buf.begin() + static_cast<long>(*r));
            }
            co_return got;
        };
        // From offset 100, all but the last 45 bytes; then the rest asked with a count past the end.
        auto [sent, got] = co_await weft::when_all(weft::send_file(p.server, *f, 100, size - 145),
                                                   slow_reader(loop, p.client, size - 145));
        REQUIRE(sent.value() == size - 145);
        REQUIRE(std::equal(got.begin(), got.end(), data.begin() + 100));
        auto [tail, got2] = co_await weft::when_all(weft::send_file(p.server, *f, size - 45, 1000),
                                                    slow_reader(loop, p.client, 45));
        REQUIRE(tail.value() == 45);  // the file ended: what it had
        REQUIRE(std::equal(got2.begin(), got2.end(), data.end() - 45));
        auto none = co_await weft::send_file(p.server, *f, size, 10);
        REQUIRE(none.value() == 0);
    }());
}

TEMPLATE_TEST_CASE("send_file: cancelled mid-way, it reports the bytes that went out, and exactly those arrive",
                   "[file][send_file][cancel]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    temp_dir dir;
    const std::size_t size = 16u << 20;
    std::vector<char> data = pattern(size, 13);
    write_plain(dir.file("c.bin"), data);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        REQUIRE(p.server.set_send_buffer_size(65536));
        REQUIRE(p.client.set_receive_buffer_size(65536));
        auto f = co_await weft::file<TestType>::open(loop, dir.file("c.bin"));
        REQUIRE(f);
        // Nobody reads: the socket fills, and the timeout cancels the rest.
        auto sent = co_await weft::with_timeout(weft::send_file(p.server, *f, 0, size), 100ms);
        REQUIRE(sent);  // some bytes went out: the count, not an error
        REQUIRE(*sent > 0);
        REQUIRE(*sent < size);
        // The stream is usable afterwards, and carries exactly the bytes reported.
        std::vector<char> got(*sent);
        auto [r, w] = co_await weft::when_all(p.client.read_exact(got), p.server.write_all(std::string_view("END")));
        REQUIRE(r);
        REQUIRE(w);
        REQUIRE(std::equal(got.begin(), got.end(), data.begin()));
        char end[3];
        CO_REQUIRE(co_await p.client.read_exact(end));
        REQUIRE(std::string_view(end, 3) == "END");
    }());
}

TEMPLATE_TEST_CASE("send_file: a peer that is gone is an error, never a SIGPIPE", "[file][send_file][faults]",
                   WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    // sendfile(2) cannot be told MSG_NOSIGNAL: before the fix this process died of
    // SIGPIPE (the default disposition) on every backend but uring.
    REQUIRE(::signal(SIGPIPE, SIG_DFL) != SIG_ERR);
    temp_dir dir;
    const std::size_t size = 8u << 20;
    write_plain(dir.file("p.bin"), pattern(size, 17));
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        auto f = co_await weft::file<TestType>::open(loop, dir.file("p.bin"));
        REQUIRE(f);
        // The client reads a little, then closes with bytes unread: a reset.
        auto reader = [](weft::tcp_stream<TestType> s) -> weft::task<void> {
            std::vector<char> buf(65536);
            CO_REQUIRE(co_await s.read_exact(buf));
            (void)s.close();
        };
        auto [sent, unit] = co_await weft::when_all(weft::send_file(p.server, *f, 0, size), reader(std::move(p.client)));
        (void)unit;
        if (sent) REQUIRE(*sent < size);  // the bytes that went out before the reset
        // The next send reports the error itself.
        auto again = co_await weft::send_file(p.server, *f, 0, size);
        INFO("first: " << (sent ? std::to_string(*sent) : sent.error().message()) << ", then: "
                       << (again ? std::to_string(*again) : again.error().message()));
        REQUIRE_FALSE(again);
        REQUIRE((again.error() == std::errc::broken_pipe || again.error() == std::errc::connection_reset));
    }());
}

TEMPLATE_TEST_CASE("send_file with a header: header then body in one operation, counted together",
                   "[file][send_file]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    temp_dir dir;
    std::vector<char> data = pattern(300'000, 21);
    write_plain(dir.file("h.bin"), data);
    weft::loop<TestType> loop;
    run_bounded(loop, [&]() -> weft::task<void> {
        auto p = co_await make_pair(loop);
        auto f = co_await weft::file<TestType>::open(loop, dir.file("h.bin"));
        REQUIRE(f);
        const std::string header = "HTTP/1.1 200 OK\r\nContent-Length: 299000\r\n\r\n";
        std::vector<char> got(header.size() + 299'000);
        auto [sent, r] = co_await weft::when_all(
            weft::send_file(p.server, *f, 1000, 299'000, std::as_bytes(std::span(header))), p.client.read_exact(got));
        REQUIRE(sent.value() == got.size());
        REQUIRE(r);
        REQUIRE(std::string_view(got.data(), header.size()) == header);
        REQUIRE(std::equal(got.begin() + static_cast<long>(header.size()), got.end(), data.begin() + 1000));
        // A header alone (an empty body): sent without MSG_MORE, so it is not held back.
        const std::string empty = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        std::vector<char> got2(empty.size());
        auto [sent2, r2] = co_await weft::when_all(weft::send_file(p.server, *f, 0, 0, std::as_bytes(std::span(empty))),
                                                   p.client.read_exact(got2));
        REQUIRE(sent2.value() == empty.size());
        REQUIRE(r2);
        REQUIRE(std::string_view(got2.data(), got2.size()) == empty);
    }());
}

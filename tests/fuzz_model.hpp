// The operation fuzzer's generator and reference model (issue 10, harness item 2).
//
// A program is a sequence of steps drawn from a choice source (a seeded splitmix64 for
// the Catch2 test, the input bytes for the libFuzzer entry) over up to four TCP
// connections and one listener: open (connect, accept), read, write, receive, cancel
// through a stop token, timeout, shutdown, close, peer reset, peer half-close, destroy a
// frame, destroy the loop. Each connection's far end is a plain non-blocking socket the
// driver works itself, so the model is exact about what the peer sent and saw.
//
// What is checked (each violation is one line in `program::failures`):
// - exactly once: every operation completes at most once, and exactly once unless its
//   frame was destroyed first (by a destroy-frame step or by destroying the loop); every
//   frame dies exactly once;
// - byte-exact delivery in both directions, against `out_model` (what weft wrote, as the
//   peer must see it) and `in_model` (what the peer sent, as weft's reads must see it);
//   EOF is accepted only after every byte written before the half-close/close arrived;
// - errors only with a cause: `operation_canceled`/`timed_out` only for an operation that
//   was cancelled, timed out or had its socket closed; `ECONNRESET`/`EPIPE`/`eof` only
//   after a reset, a half-close or a close that explains them;
// - no fd leak: /proc/self/fd is back to the count from before the program;
// - no pooled buffer leak: `free_buffers()` is back to the pool size once every lease is
//   released and every stream closed (graceful ending only: a destroyed loop has no pool
//   left to ask);
// - no sanitizer report (ASan/UBSan builds).
//
// The generator draws the same number of choices in every step whatever the state, so a
// seed replays the same sequence of steps; what each step then does depends on what the
// previous ones produced, and that depends on the kernel's timing a little (an operation
// that did or did not complete before a cancel). A replay is therefore faithful in
// nearly all cases, not bit-for-bit.
#pragma once

#include <weft/weft.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <sstream>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

namespace weft_fuzz {

/// Number of open fds of this process (entries of /proc/self/fd, minus the one the
/// listing itself uses).
inline int count_fds() {
    DIR* d = ::opendir("/proc/self/fd");
    if (!d) return -1;
    int n = 0;
    while (dirent* e = ::readdir(d))
        if (e->d_name[0] != '.') ++n;
    ::closedir(d);
    return n - 1;
}

/// The open fds of this process and what each is ("socket:[123]", "anon_inode:[io_uring]"...).
inline std::map<int, std::string> list_fds() {
    std::map<int, std::string> out;
    DIR* d = ::opendir("/proc/self/fd");
    if (!d) return out;
    const int self = ::dirfd(d);
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.') continue;
        int fd = std::atoi(e->d_name);
        if (fd == self) continue;
        char target[256];
        std::string path = std::string("/proc/self/fd/") + e->d_name;
        long n = ::readlink(path.c_str(), target, sizeof target - 1);
        out[fd] = n > 0 ? std::string(target, static_cast<std::size_t>(n)) : "?";
    }
    ::closedir(d);
    return out;
}

/// splitmix64: the seeded stream behind both the choices and the payload bytes.
struct splitmix {
    std::uint64_t s;
    std::uint64_t next() noexcept {
        std::uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }
};

/// Where the generator's choices come from: a seed, or (libFuzzer) the input bytes.
/// With bytes, each choice takes two of them; once they run out every choice is 0 and
/// `exhausted()` ends the program.
class choices {
public:
    explicit choices(std::uint64_t seed) : rng_{seed} {}
    explicit choices(std::span<const std::uint8_t> bytes) : rng_{0}, bytes_(bytes), from_bytes_(true) {}

    std::uint32_t below(std::uint32_t n) noexcept {
        if (n <= 1) {
            (void)raw();  // keep the stream aligned whatever n is
            return 0;
        }
        return static_cast<std::uint32_t>(raw() % n);
    }
    bool exhausted() const noexcept { return from_bytes_ && at_ >= bytes_.size(); }

private:
    std::uint64_t raw() noexcept {
        if (!from_bytes_) return rng_.next();
        std::uint64_t v = 0;
        for (int i = 0; i < 2; ++i) v = (v << 8) | (at_ < bytes_.size() ? bytes_[at_++] : 0u);
        return v;
    }
    splitmix rng_;
    std::span<const std::uint8_t> bytes_;
    std::size_t at_ = 0;
    bool from_bytes_ = false;
};

/// What weft wrote on one connection, as the peer must see it: a list of segments, one
/// per write operation. A write that failed without saying how much it wrote
/// (`write_all` cancelled or failed) is a `maybe_prefix`: the peer sees an unknown
/// prefix of it. The write still in progress is `pending`: the peer may already see any
/// prefix of it, but nothing after it. The peer's progress is a (small) set of possible
/// positions, narrowed by every byte it reads; payloads are pseudo-random, so the set
/// collapses to one position within a few bytes.
class out_model {
public:
    /// Starts the segment of a write operation; returns its id for `resolve`.
    std::size_t begin_write(std::string data) {
        segs_.push_back({std::move(data), kind::pending});
        return base_ + segs_.size() - 1;
    }
    /// The write `id` completed having written `n` bytes (nullopt: an unknown prefix).
    /// Returns a failure description, or "".
    std::string resolve(std::size_t id, std::optional<std::size_t> n) {
        seg& s = segs_[id - base_];
        if (n) {
            if (*n > s.data.size()) return "write reported more bytes than it was given";
            s.data.resize(*n);
            s.k = kind::fixed;
        } else {
            s.k = kind::maybe_prefix;
        }
        std::vector<pos> kept;
        for (pos p : pos_)
            if (p.s != id - base_ || p.off <= s.data.size()) kept.push_back(p);
        if (kept.empty() && !gave_up_)
            return "the peer received more bytes of write #" + std::to_string(id) + " than the write reported (" +
                   std::to_string(s.data.size()) + ")";
        pos_ = close_over(kept);
        if (eof_) return check_end("after the write settled");
        return {};
    }
    /// The peer read `bytes`; returns a failure description, or "".
    std::string feed(std::string_view bytes) {
        if (gave_up_ || bytes.empty()) return {};
        std::vector<pos> next;
        std::size_t budget = 4'000'000;
        struct item {
            std::size_t s, off, i;
        };
        std::vector<item> stack;
        for (pos p : pos_) stack.push_back({p.s, p.off, 0});
        while (!stack.empty()) {
            if (--budget == 0) return give_up();
            item it = stack.back();
            stack.pop_back();
            if (it.i == bytes.size()) {
                for (pos q : close_over({{it.s, it.off}}))
                    if (std::find(next.begin(), next.end(), q) == next.end()) next.push_back(q);
                continue;
            }
            if (it.s >= segs_.size()) continue;  // nothing more was written
            const seg& s = segs_[it.s];
            std::size_t avail = s.data.size() - it.off, n = std::min(avail, bytes.size() - it.i);
            std::size_t c = 0;
            while (c < n && s.data[it.off + c] == bytes[it.i + c]) ++c;
            if (s.k == kind::maybe_prefix)
                for (std::size_t j = 0; j <= c && j < avail; ++j) stack.push_back({it.s + 1, 0, it.i + j});
            if (c < n) continue;
            if (it.off + n == s.data.size() && s.k != kind::pending)
                stack.push_back({it.s + 1, 0, it.i + n});
            else if (it.i + n == bytes.size())
                stack.push_back({it.s, it.off + n, it.i + n});
        }
        if (next.size() > 256) return give_up();
        if (next.empty()) return "the peer received bytes weft never wrote, at stream offset " + std::to_string(seen_) +
                                 describe(bytes);
        seen_ += bytes.size();
        pos_ = std::move(next);
        trim();
        return {};
    }
    /// The peer read EOF: every byte written must have arrived (a write still in
    /// progress may end where the peer stopped).
    std::string eof() {
        eof_ = true;
        return check_end("at the peer's EOF");
    }
    /// A reset may have cut the stream short (the peer can see EOF early): only what
    /// arrives is checked from now on, not that everything did.
    void may_be_cut() noexcept { cut_ = true; }
    /// Whether some position is at the very end (everything written was seen).
    bool at_end() const {
        for (pos p : pos_)
            if (p.s == segs_.size()) return true;
        return false;
    }
    std::size_t seen() const noexcept { return seen_; }
    bool gave_up() const noexcept { return gave_up_; }

private:
    enum class kind : std::uint8_t { fixed, maybe_prefix, pending };
    struct seg {
        std::string data;
        kind k;
    };
    struct pos {
        std::size_t s, off;
        bool operator==(const pos&) const = default;
    };
    /// Adds every position reachable without reading a byte: past the end of a settled
    /// segment, and past an unknown prefix at any point.
    std::vector<pos> close_over(std::vector<pos> v) const {
        for (std::size_t i = 0; i < v.size(); ++i) {
            pos p = v[i];
            if (p.s >= segs_.size()) continue;
            const seg& s = segs_[p.s];
            bool past = (s.k == kind::maybe_prefix) || (s.k == kind::fixed && p.off == s.data.size());
            if (past && std::find(v.begin(), v.end(), pos{p.s + 1, 0}) == v.end()) v.push_back({p.s + 1, 0});
        }
        return v;
    }
    std::string check_end(const char* when) const {
        if (gave_up_ || cut_) return {};
        for (pos p : pos_)
            if (p.s == segs_.size() || segs_[p.s].k == kind::pending) return {};
        return std::string("EOF ") + when + " but bytes weft reported written never arrived (peer saw " +
               std::to_string(seen_) + " bytes)";
    }
    std::string give_up() {
        gave_up_ = true;  // ambiguity we cannot afford to track: stop checking, don't fail
        return {};
    }
    std::string describe(std::string_view bytes) const {
        std::ostringstream o;
        o << " (" << bytes.size() << " bytes read; " << pos_.size() << " candidate position(s)";
        if (!pos_.empty() && pos_[0].s < segs_.size())
            o << ", first at write #" << base_ + pos_[0].s << " offset " << pos_[0].off << " of "
              << segs_[pos_[0].s].data.size();
        o << ")";
        return o.str();
    }
    /// Forgets segments no position can return to.
    void trim() {
        std::size_t lo = segs_.size();
        for (pos p : pos_) lo = std::min(lo, p.s);
        if (lo < 8) return;
        segs_.erase(segs_.begin(), segs_.begin() + static_cast<std::ptrdiff_t>(lo));
        base_ += lo;
        for (pos& p : pos_) p.s -= lo;
    }
    std::vector<seg> segs_;
    std::vector<pos> pos_{{0, 0}};
    std::size_t base_ = 0;
    std::size_t seen_ = 0;
    bool eof_ = false;
    bool gave_up_ = false;
    bool cut_ = false;
};

/// What the peer sent on one connection, as weft's reads must see it: the exact byte
/// sequence, and the set of positions the reader may be at (one, except right after a
/// `read_exact` that failed without saying how much it consumed).
class in_model {
public:
    void sent(std::string_view b) { data_.append(b); }
    /// Bytes were consumed and lost where the model cannot see (a receive's frame was
    /// destroyed with its buffer): stop checking content on this direction.
    void desync() noexcept { desynced_ = true; }
    void fin() noexcept { fin_ = true; }
    void reset() noexcept { reset_ = true; }
    bool fin_sent() const noexcept { return fin_; }
    bool was_reset() const noexcept { return reset_; }
    /// True when every byte the peer sent has certainly been read.
    bool all_read() const noexcept { return desynced_ || (cand_.size() == 1 && cand_[0] == data_.size()); }
    std::size_t unread_max() const noexcept {
        std::size_t lo = data_.size();
        for (auto c : cand_) lo = std::min(lo, c);
        return data_.size() - lo;
    }

    /// A read delivered `got`.
    std::string consume(std::string_view got) {
        if (got.empty() || desynced_) return {};
        std::vector<std::size_t> next;
        for (auto c : cand_)
            if (c + got.size() <= data_.size() && data_.compare(c, got.size(), got) == 0) next.push_back(c + got.size());
        if (next.empty()) {
            std::ostringstream o;
            o << "a read delivered " << got.size() << " bytes that are not the next bytes the peer sent (reader at "
              << cand_[0] << " of " << data_.size() << " sent";
            if (cand_[0] + got.size() > data_.size()) o << "; more than was sent";
            o << ")";
            return o.str();
        }
        cand_ = std::move(next);
        return {};
    }
    /// A read_exact of `buf.size()` bytes failed: it consumed some prefix of its buffer,
    /// how much is unknown. `fill` is what the buffer held before (the untouched tail
    /// must still hold it). `at_eof`: it failed with `eof`, so it consumed the rest.
    std::string consume_unknown(std::string_view buf, std::string_view fill, bool at_eof) {
        if (desynced_) return {};
        std::vector<std::size_t> next;
        for (auto c : cand_) {
            std::size_t k = 0;
            for (;; ++k) {
                bool tail_untouched = buf.substr(k) == fill.substr(k);
                bool eof_ok = !at_eof || c + k == data_.size() || reset_;
                if (tail_untouched && eof_ok && std::find(next.begin(), next.end(), c + k) == next.end())
                    next.push_back(c + k);
                if (k == buf.size() || c + k >= data_.size() || buf[k] != data_[c + k]) break;
            }
        }
        if (next.empty())
            return at_eof ? "read_exact failed with eof before reading every byte the peer sent"
                          : "a failed read_exact left bytes in its buffer that the peer never sent";
        cand_ = std::move(next);
        return {};
    }
    /// A read returned 0 (EOF).
    std::string eof() {
        if (!fin_ && !reset_) return "a read returned EOF but the peer neither half-closed nor reset";
        if (reset_ || desynced_) {
            cand_ = {data_.size()};
            return {};
        }
        if (std::find(cand_.begin(), cand_.end(), data_.size()) == cand_.end())
            return "a read returned EOF with " + std::to_string(unread_max()) + " bytes the peer sent still unread";
        cand_ = {data_.size()};
        return {};
    }

private:
    std::string data_;
    std::vector<std::size_t> cand_{0};
    bool fin_ = false;
    bool reset_ = false;
    bool desynced_ = false;
};

/// The kinds of step a program is made of (the order is the weight table's).
enum class step : std::uint8_t {
    connect,          ///< weft connects to the raw listener (an operation)
    peer_connect,     ///< a raw client connects to weft's listener
    accept,           ///< weft accepts (an operation)
    read,             ///< a read-side operation on a connection
    write,            ///< a write-side operation on a connection
    peer_write,       ///< the peer sends what fits
    peer_read,        ///< the peer reads what is there
    cancel,           ///< request_stop on a pending operation
    shutdown,         ///< weft half-closes (SHUT_WR)
    close,            ///< weft closes a stream, operations pending or not
    peer_reset,       ///< the peer closes with SO_LINGER 0 (RST)
    peer_half_close,  ///< the peer shuts down SHUT_WR (FIN)
    destroy_frame,    ///< destroy a pending operation's coroutine frame
    release_lease,    ///< give back a receive buffer held on loan
    run,              ///< let the loop run a little
    listener,         ///< close or reopen weft's listener
    retire,           ///< finish a closed connection: peer drains to EOF and closes
    timer,            ///< a sleep_for operation (cancellable)
    closed_op,        ///< an operation on a closed stream: EBADF at once
    count_
};
inline constexpr std::uint32_t step_weights[] = {4, 4, 4, 16, 14, 12, 12, 6, 2, 3, 2, 2, 3, 3, 10, 1, 2, 2, 1};
static_assert(std::size(step_weights) == static_cast<std::size_t>(step::count_));

enum class op_kind : std::uint8_t {
    connect, accept, read_some, read_exact, readv, receive, wait_readable,
    write_some, write_all, writev_all, wait_writable, sleep, drain
};
inline const char* name_of(op_kind k) {
    constexpr const char* names[] = {"connect", "accept", "read_some", "read_exact", "readv", "receive", "wait_readable",
                                     "write_some", "write_all", "writev_all", "wait_writable", "sleep", "drain"};
    return names[static_cast<int>(k)];
}
inline bool is_read(op_kind k) { return k >= op_kind::read_some && k <= op_kind::wait_readable; }
inline bool is_write(op_kind k) { return k >= op_kind::write_some && k <= op_kind::wait_writable; }

/// How an operation is awaited.
enum class wrap : std::uint8_t { plain, stop_token, timeout };

/// Program-level knobs.
struct settings {
    int steps = 80;                 ///< steps per program (byte-driven programs: until the input runs out)
    std::uint16_t buffer_count = 4;  ///< pooled receive buffers (small, so they run out; a power of two for uring)
    std::uint32_t buffer_size = 1024;
    bool verbose = false;  ///< print the trace as it goes (WEFT_FUZZ_VERBOSE)
};

/// A coroutine the driver hosts itself so that it can destroy it at any time: it hands
/// its environment (loop and stop token) to the task it awaits, like `loop::run` does.
struct root_frame {
    struct promise_type {
        weft::detail::task_env env;
        root_frame get_return_object() noexcept {
            return {std::coroutine_handle<promise_type>::from_promise(*this)};
        }
        std::suspend_always initial_suspend() const noexcept { return {}; }
        std::suspend_always final_suspend() const noexcept { return {}; }
        void return_void() const noexcept {}
        void unhandled_exception() const noexcept { std::terminate(); }  // the op bodies do not throw
    };
    std::coroutine_handle<promise_type> h;
};
inline root_frame host(weft::task<void> t) { co_await std::move(t); }

/// One operation: what it is, what it reports, and what may explain an error.
template <class B>
struct op_record {
    int id = 0;
    op_kind kind{};
    wrap how = wrap::plain;
    int conn = -1;          ///< index into program::conns_ (-1: listener, timer, connect)
    std::size_t len = 0;    ///< bytes asked for (reads), given (writes), ms (sleep)
    int timeout_ms = 0;
    bool hold = false;      ///< receive: keep the lease on loan until a release step
    bool root = false;      ///< hosted by the driver (destroyable) rather than spawned
    std::size_t out_seg = 0;
    std::string data;       ///< write payload
    std::string buf, fill;  ///< read buffer, and what it was filled with before
    std::vector<iovec> iov;
    std::stop_source stop;   ///< the operation's own token (spawn token / root env token)
    std::stop_source inner;  ///< a second token for the with_stop_token wrapper
    /// A hosted frame's token: tasks watch weft's own stop source, which `root_link`
    /// forwards `stop`'s request to (declared after the source: removed first).
    weft::detail::stop_source root_stop;
    std::optional<std::stop_callback<weft::detail::request_stop_on>> root_link;

    // Set by the operation (under program::mu_ when tasks are threads).
    int completions = 0;
    bool frame_gone = false;
    bool ok = false;
    std::error_code ec;
    std::size_t n = 0;
    std::string got;
    std::optional<weft::tcp_stream<B>> stream;  ///< accept / connect result
    weft::buffer_lease lease;                   ///< receive with hold

    // Driver bookkeeping.
    bool processed = false;
    bool stop_requested = false;
    bool closed_under = false;  ///< its socket (or listener) was closed while it was pending
    bool destroyed = false;     ///< the driver destroyed its frame
    std::coroutine_handle<root_frame::promise_type> frame{};  ///< when hosted by the driver
};


/// One connection: weft's stream and the raw socket at the other end, with the model.
template <class B>
struct conn {
    std::shared_ptr<weft::tcp_stream<B>> s;
    int peer = -1;
    out_model out;
    in_model in;
    int read_op = -1, write_op = -1;  ///< the pending operation of each direction
    bool shut_wr = false;             ///< weft half-closed
    bool closed = false;              ///< weft closed its stream
    bool peer_eof = false;            ///< the peer read EOF or a reset from weft's side
    bool peer_gone = false;           ///< the peer reset (its fd is closed)
    bool rst_from_weft = false;       ///< the peer got ECONNRESET: weft closed with unread data
};

/// Sets small kernel buffers so that writes fill the pipe and wait.
inline void small_buffers(int fd) {
    int v = 4096;
    (void)::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v);
    (void)::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof v);
}
inline int local_port(int fd) {
    sockaddr_in a{};
    socklen_t len = sizeof a;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) return -1;
    return ntohs(a.sin_port);
}
inline int remote_port(int fd) {
    sockaddr_in a{};
    socklen_t len = sizeof a;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) return -1;
    return ntohs(a.sin_port);
}

/// One generated program on backend `B`. Construct, `run()`, then read `failures`.
template <class B>
class program {
public:
    static constexpr bool threaded = B::kind == weft::backend_kind::blocking;

    program(choices& ch, std::uint64_t data_seed, settings cfg) : ch_(ch), data_rng_{data_seed}, cfg_(cfg) {}
    program(const program&) = delete;
    program& operator=(const program&) = delete;

    /// Failure descriptions (empty: the program passed).
    std::vector<std::string> failures;
    /// The last steps, for the failure message.
    std::deque<std::string> trace;
    /// Counts of what ran, for the report.
    std::size_t ops_started = 0, steps_run = 0;
    bool ended_by_destroying_loop = false;

    void run() {
        const int baseline = count_fds();
        const auto fds_before = list_fds();
        {
            typename B::options opts;
            opts.buffer_count = cfg_.buffer_count;
            opts.buffer_size = cfg_.buffer_size;
            loop_.emplace(opts);
            setup();
            for (int i = 0; cfg_.steps <= 0 || i < cfg_.steps; ++i) {
                if (ch_.exhausted() || i >= 400 || !failures.empty()) break;
                one_step();
                ++steps_run;
            }
            // The ending: graceful (everything settles, all is checked) or the loop is
            // destroyed with operations still pending in it.
            if (ch_.below(3) == 0 && failures.empty())
                end_by_destroying_loop();
            else
                end_gracefully();
        }
        close_raw();
        const int now = count_fds();
        if (baseline >= 0 && now != baseline) {
            std::string extra;
            for (auto& [fd, what] : list_fds())
                if (!fds_before.count(fd)) extra += " " + std::to_string(fd) + "=" + what;
            fail("fd leak: " + std::to_string(now) + " fds open after the program, " + std::to_string(baseline) +
                 " before; new:" + extra);
        }
    }

private:
    using stream_t = weft::tcp_stream<B>;
    using listener_t = weft::tcp_listener<B>;
    using record = op_record<B>;

    // ---- generator ---------------------------------------------------------------

    void one_step() {
        // Always the same number of draws per step, whatever the state (see the header).
        const std::uint32_t pick = ch_.below(total_weight());
        const std::uint32_t a = ch_.below(1u << 16), b = ch_.below(1u << 16), c = ch_.below(1u << 16);
        step k = step::count_;
        std::uint32_t acc = 0;
        for (std::size_t i = 0; i < std::size(step_weights); ++i) {
            acc += step_weights[i];
            if (pick < acc) {
                k = static_cast<step>(i);
                break;
            }
        }
        settle();
        switch (k) {
            case step::connect: start_connect(a); break;
            case step::peer_connect: peer_connect(); break;
            case step::accept: start_accept(a); break;
            case step::read: start_read(a, b, c); break;
            case step::write: start_write(a, b, c); break;
            case step::peer_write: peer_write(a, b); break;
            case step::peer_read: peer_read(a, b); break;
            case step::cancel: cancel_one(a, b); break;
            case step::shutdown: weft_shutdown(a); break;
            case step::close: weft_close(a); break;
            case step::peer_reset: peer_reset(a); break;
            case step::peer_half_close: peer_half_close(a); break;
            case step::destroy_frame: destroy_frame(a); break;
            case step::release_lease: release_lease(a); break;
            case step::run: run_some(a); break;
            case step::listener: toggle_listener(); break;
            case step::retire: retire(a); break;
            case step::timer: start_timer(a, b); break;
            case step::closed_op: closed_op(a); break;
            case step::count_: break;
        }
        settle();
    }
    static std::uint32_t total_weight() {
        std::uint32_t t = 0;
        for (auto w : step_weights) t += w;
        return t;
    }

    // ---- setup and ending ------------------------------------------------------------

    void setup() {
        raw_listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        small_buffers(raw_listener_);
        socklen_t len = sizeof addr;
        if (raw_listener_ < 0 || ::bind(raw_listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
            ::listen(raw_listener_, 64) != 0 || ::getsockname(raw_listener_, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
            return fail("cannot make the raw listener");
        raw_ep_ = weft::endpoint::loopback_v4(ntohs(addr.sin_port));
        open_listener();
        // Two connections to begin with, one each way, so that programs get to the point.
        start_connect(0);
        peer_connect();
        start_accept(0);
        auto deadline = weft::clock::now() + std::chrono::seconds(5);
        while (open_conns() < 2 && weft::clock::now() < deadline && failures.empty()) {
            loop_->run_once(std::chrono::milliseconds(1));
            settle();
        }
        if (open_conns() < 2) fail("setup: the first two connections did not open within 5 s");
    }

    /// Graceful ending: cancel everything, let it settle, drain both directions of each
    /// healthy connection to EOF, close, and check the pool and the frames.
    void end_gracefully() {
        note("end: graceful");
        for (auto& r : ops_)
            if (!r->processed && !r->destroyed) request_stop(*r, true);
        wait_all_settled("after cancelling everything");
        // Each healthy connection: the peer half-closes, weft reads the rest to EOF; weft
        // half-closes, the peer reads the rest to EOF.
        for (std::size_t i = 0; i < conns_.size(); ++i) {
            conn<B>& c = conns_[i];
            if (!c.s || c.closed || c.peer_gone) continue;
            if (!c.in.fin_sent()) {
                ::shutdown(c.peer, SHUT_WR);
                c.in.fin();
            }
            if (!c.in.was_reset()) {
                record& r = new_op(op_kind::drain, static_cast<int>(i));
                r.buf.assign(65536, '\0');
                c.read_op = r.id;
                r.how = wrap::timeout;
                r.timeout_ms = 5000;
                launch(r);
            }
        }
        wait_all_settled("while draining to EOF");
        for (std::size_t i = 0; i < conns_.size(); ++i) {
            conn<B>& c = conns_[i];
            if (!c.s || c.closed || c.peer_gone) continue;
            if (!c.in.was_reset() && !c.in.all_read())
                fail("conn " + std::to_string(i) + ": weft's reads ended before every byte the peer sent (" +
                     std::to_string(c.in.unread_max()) + " unread)");
            if (!c.shut_wr) {
                (void)c.s->shutdown();
                c.shut_wr = true;
            }
            peer_drain(static_cast<int>(i), /*want_eof=*/true);
        }
        for (std::size_t i = 0; i < conns_.size(); ++i)
            if (conns_[i].s) close_conn(static_cast<int>(i));
        if (listener_) {
            (void)listener_->close();
            listener_.reset();
        }
        for (auto& r : ops_) scrub(*r);
        wait_all_settled("after closing everything");
        for (auto& r : ops_) {
            if (r->root && r->frame) destroy_root(*r);
        }
        for (auto& c : conns_) c.s.reset();  // the raw peers stay open until close_raw
        for (auto& r : ops_) scrub(*r);
        const std::size_t free = loop_->backend().free_buffers();
        if (free != cfg_.buffer_count)
            fail("pooled buffer leak: " + std::to_string(free) + " of " + std::to_string(cfg_.buffer_count) +
                 " free after every lease was released and every stream closed");
        // An operation counts as settled when its task has recorded the completion; on
        // `blocking` the task's thread ends a moment later (the task itself still has to
        // return). So wait for the count, bounded, rather than read it once: under ASan on
        // a loaded machine a thread was seen between the two.
        for (auto deadline = weft::clock::now() + std::chrono::seconds(5);
             loop_->live_tasks() != 0 && weft::clock::now() < deadline;)
            loop_->run_once(std::chrono::milliseconds(1));
        if (loop_->live_tasks() != 0) fail("spawned tasks still live 5 s after everything settled");
        loop_.reset();
        check_frames();
    }

    /// The other ending: the loop is destroyed with operations still pending in it. The
    /// driver-hosted frames go first (a frame must not outlive its loop); the spawned
    /// ones die with the loop, each owning its stream (so their operations are still
    /// parked in the backend, not completed by a close).
    void end_by_destroying_loop() {
        ended_by_destroying_loop = true;
        std::size_t pending = 0;
        for (auto& r : ops_)
            if (!r->processed && !r->destroyed) ++pending;
        note("end: destroy the loop with " + std::to_string(pending) + " operation(s) pending");
        {
            std::lock_guard lk(mu_);
            teardown_ = true;  // tasks that still finish (blocking) keep no stream or lease
        }
        for (auto& r : ops_) {
            if (r->root && r->frame) destroy_root(*r);
            scrub(*r);
        }
        for (auto& c : conns_) c.s.reset();  // frames of pending operations keep theirs alive
        listener_.reset();
        loop_.reset();
        for (auto& r : ops_) scrub(*r);
        check_frames();
    }

    /// Every frame is gone, and completed at most once (exactly once unless destroyed
    /// before it could: by a step, or with the loop).
    void check_frames() {
        std::lock_guard lk(mu_);
        for (auto& r : ops_) {
            if (!r->frame_gone) fail_locked(op_name(*r) + ": its frame was never destroyed");
            if (r->completions > 1) fail_locked(op_name(*r) + ": completed " + std::to_string(r->completions) + " times");
            if (r->completions == 0 && !r->destroyed && !ended_by_destroying_loop)
                fail_locked(op_name(*r) + ": never completed");
        }
    }

    void wait_all_settled(const char* when) {
        auto deadline = weft::clock::now() + std::chrono::seconds(5);
        for (;;) {
            settle();
            bool all = true;
            for (auto& r : ops_)
                if (!r->processed && !r->destroyed) all = false;
            if (all) return;
            if (weft::clock::now() > deadline) {
                for (auto& r : ops_)
                    if (!r->processed && !r->destroyed) fail(op_name(*r) + ": still pending 5 s " + when);
                return;
            }
            loop_->run_once(std::chrono::milliseconds(1));
        }
    }

    // ---- operations --------------------------------------------------------------------

    record& new_op(op_kind k, int conn_index) {
        ops_.push_back(std::make_unique<record>());
        record& r = *ops_.back();
        r.id = static_cast<int>(ops_.size()) - 1;
        r.kind = k;
        r.conn = conn_index;
        ++ops_started;
        return r;
    }

    void choose_wrap(record& r, std::uint32_t x) {
        switch (x % 4) {
            case 0:
            case 1: r.how = wrap::plain; break;
            case 2: r.how = wrap::stop_token; break;
            default:
                r.how = wrap::timeout;
                r.timeout_ms = static_cast<int>((x >> 2) % 4 == 3 ? 5 : (x >> 2) % 4);
                break;
        }
        // Threads cannot be frame-destroyed: the driver hosts frames only on the loop's thread.
        r.root = !threaded && ((x >> 4) & 1);
    }

    void launch(record& r) {
        std::shared_ptr<stream_t> s;
        if (r.conn >= 0) s = conns_[static_cast<std::size_t>(r.conn)].s;
        auto t = body(frame_probe(this, &r), std::move(s), listener_);
        note("start " + op_name(r) + (r.how == wrap::timeout ? " timeout " + std::to_string(r.timeout_ms) + "ms"
                                      : r.how == wrap::stop_token ? " with_stop_token" : "") +
             (r.root ? " (hosted)" : " (spawned)"));
        if (r.root) {
            root_frame f = host(std::move(t));
            r.root_link.emplace(r.stop.get_token(), weft::detail::request_stop_on{&r.root_stop});
            f.h.promise().env = {&*loop_, r.root_stop.get_token()};
            r.frame = f.h;
            f.h.resume();  // as loop::run starts its task
        } else {
            loop_->spawn(std::move(t), r.stop.get_token());
        }
    }

    /// Marks the operation's frame dead when destroyed. A parameter, not a local: a
    /// parameter dies with the frame even when the body never started (a spawned task
    /// whose loop is destroyed before its first turn).
    struct frame_probe {
        program* p = nullptr;
        record* r = nullptr;
        frame_probe(program* p_, record* r_) noexcept : p(p_), r(r_) {}
        frame_probe(frame_probe&& o) noexcept : p(std::exchange(o.p, nullptr)), r(o.r) {}
        frame_probe& operator=(frame_probe&&) = delete;
        ~frame_probe() {
            if (!p) return;
            std::lock_guard lk(p->mu_);
            if (r->frame_gone) p->fail_locked(op_name(*r) + ": its frame was destroyed twice");
            r->frame_gone = true;
        }
    };

    /// The operation's coroutine: runs it (wrapped), then records the outcome once.
    static weft::task<void> body(frame_probe probe, std::shared_ptr<stream_t> s, std::shared_ptr<listener_t> l) {
        program* p = probe.p;
        record* r = probe.r;
        std::optional<weft::result<std::size_t>> res;
        switch (r->how) {
            case wrap::plain: {
                auto x = co_await run_op(p, r, s.get(), l.get());
                res.emplace(std::move(x));
                break;
            }
            case wrap::stop_token: {
                auto x = co_await weft::with_stop_token(run_op(p, r, s.get(), l.get()), r->inner.get_token());
                res.emplace(std::move(x));
                break;
            }
            case wrap::timeout: {
                auto x = co_await weft::with_timeout(run_op(p, r, s.get(), l.get()),
                                                     std::chrono::milliseconds(r->timeout_ms));
                res.emplace(std::move(x));
                break;
            }
        }
        std::lock_guard lk(p->mu_);
        if (++r->completions > 1) p->fail_locked(op_name(*r) + ": completed twice");
        r->ok = res->has_value();
        if (r->ok)
            r->n = **res;
        else
            r->ec = res->error();
        if (p->teardown_) {  // the loop is being destroyed: keep nothing that points into it
            r->stream.reset();
            r->lease.release();
        }
    }

    /// The operation itself; reads leave their bytes in `r->got`.
    static weft::task<weft::result<std::size_t>> run_op(program* p, record* r, stream_t* s, listener_t* l) {
        switch (r->kind) {
            case op_kind::connect: {
                auto c = co_await stream_t::connect(*p->loop_, p->raw_ep_);
                if (!c) co_return c.error();
                std::lock_guard lk(p->mu_);
                if (!p->teardown_) r->stream.emplace(std::move(*c));
                co_return std::size_t{0};
            }
            case op_kind::accept: {
                auto c = co_await l->accept();
                if (!c) co_return c.error();
                std::lock_guard lk(p->mu_);
                if (!p->teardown_) r->stream.emplace(std::move(*c));
                co_return std::size_t{0};
            }
            case op_kind::read_some: {
                auto x = co_await s->read_some(std::span(r->buf.data(), r->len));
                if (x) r->got.assign(r->buf.data(), *x);
                co_return x;
            }
            case op_kind::read_exact: {
                auto x = co_await s->read_exact(std::span(r->buf.data(), r->len));
                if (x) r->got.assign(r->buf.data(), *x);
                co_return x;
            }
            case op_kind::readv: {
                auto x = co_await s->read_some(std::span<iovec>(r->iov));
                if (x) r->got.assign(r->buf.data(), *x);  // the entries tile buf in order
                co_return x;
            }
            case op_kind::receive: {
                auto x = co_await s->receive();
                if (!x) co_return x.error();
                r->got.assign(x->text());
                std::size_t n = x->size();
                if (r->hold && n > 0) {
                    std::lock_guard lk(p->mu_);
                    if (!p->teardown_) r->lease = std::move(*x);
                }
                co_return n;
            }
            case op_kind::wait_readable: {
                auto x = co_await s->wait_readable();
                if (!x) co_return x.error();
                co_return std::size_t{0};
            }
            case op_kind::write_some: {
                auto x = co_await s->write_some(std::span(r->data.data(), r->len));
                co_return x;
            }
            case op_kind::write_all: {
                auto x = co_await s->write_all(std::span(r->data.data(), r->len));
                co_return x;
            }
            case op_kind::writev_all: {
                auto x = co_await s->write_all(std::span<iovec>(r->iov));
                co_return x;
            }
            case op_kind::wait_writable: {
                auto x = co_await s->wait_writable();
                if (!x) co_return x.error();
                co_return std::size_t{0};
            }
            case op_kind::sleep: {
                auto x = co_await weft::sleep_for(std::chrono::milliseconds(r->len));
                if (!x) co_return x.error();
                co_return std::size_t{0};
            }
            case op_kind::drain: {  // read_some to EOF; a failure ends it
                std::size_t total = 0;
                for (;;) {
                    auto x = co_await s->read_some(std::span(r->buf.data(), r->buf.size()));
                    if (!x) co_return x.error();
                    if (*x == 0) co_return total;
                    total += *x;
                    std::lock_guard lk(p->mu_);
                    r->got.append(r->buf.data(), *x);
                }
            }
        }
        co_return std::size_t{0};
    }

    void start_connect(std::uint32_t a) {
        if (free_slot() < 0 || pending_of(op_kind::connect) >= 2) return;
        record& r = new_op(op_kind::connect, -1);
        choose_wrap(r, a);
        launch(r);
    }
    void start_accept(std::uint32_t a) {
        if (!listener_ || pending_of(op_kind::accept) >= 1) return;
        if (threaded && (a & 3) != 0) return;  // blocking: an accept pins a thread until a client comes
        record& r = new_op(op_kind::accept, -1);
        choose_wrap(r, a);
        launch(r);
    }
    void start_timer(std::uint32_t a, std::uint32_t b) {
        record& r = new_op(op_kind::sleep, -1);
        r.len = b % 4 == 0 ? 3600'000 : b % 5;  // an hour: only a cancel or the ending settles it
        choose_wrap(r, a);
        launch(r);
    }

    void start_read(std::uint32_t a, std::uint32_t b, std::uint32_t c) {
        int i = pick_conn(a, [](const conn<B>& x) { return !x.closed && x.read_op < 0; });
        if (i < 0) return;
        static constexpr op_kind kinds[] = {op_kind::read_some, op_kind::read_some, op_kind::read_exact,
                                            op_kind::readv,     op_kind::receive,   op_kind::receive,
                                            op_kind::wait_readable};
        record& r = new_op(kinds[b % std::size(kinds)], i);
        r.len = 1 + (b >> 3) % (r.kind == op_kind::read_exact ? 6000 : 20000);
        r.hold = r.kind == op_kind::receive && (b >> 12) % 2;
        r.fill = payload(r.len);
        r.buf = r.fill;
        if (r.kind == op_kind::readv) {
            std::size_t cut = r.len / 3;
            r.iov = {{r.buf.data(), cut}, {r.buf.data() + cut, r.len - cut}};
        }
        choose_wrap(r, c);
        conns_[static_cast<std::size_t>(i)].read_op = r.id;
        launch(r);
    }

    void start_write(std::uint32_t a, std::uint32_t b, std::uint32_t c) {
        int i = pick_conn(a, [](const conn<B>& x) { return !x.closed && !x.shut_wr && x.write_op < 0; });
        if (i < 0) return;
        static constexpr op_kind kinds[] = {op_kind::write_some, op_kind::write_all, op_kind::write_all,
                                            op_kind::writev_all, op_kind::wait_writable};
        record& r = new_op(kinds[b % std::size(kinds)], i);
        conn<B>& cn = conns_[static_cast<std::size_t>(i)];
        if (r.kind != op_kind::wait_writable) {
            r.len = 1 + (b >> 3) % 30000;
            r.data = payload(r.len);
            if (r.kind == op_kind::writev_all) {  // three entries, the middle one empty
                std::size_t cut = r.len / 2;
                r.iov = {{r.data.data(), cut}, {r.data.data() + cut, 0}, {r.data.data() + cut, r.len - cut}};
            }
            r.out_seg = cn.out.begin_write(r.data);
        }
        choose_wrap(r, c);
        cn.write_op = r.id;
        launch(r);
    }

    void closed_op(std::uint32_t a) {
        // A stream that was closed: any operation completes at once with EBADF.
        int i = pick_conn(a, [](const conn<B>& x) { return x.closed && x.read_op < 0; });
        if (i < 0) return;
        record& r = new_op(op_kind::read_some, i);
        r.len = 16;
        r.fill = r.buf = std::string(16, 'x');
        r.closed_under = true;
        conns_[static_cast<std::size_t>(i)].read_op = r.id;
        launch(r);
    }

    // ---- settling: apply each finished operation to the model --------------------------

    void settle() {
        for (auto& rp : ops_) {
            record& r = *rp;
            if (r.processed || r.destroyed) continue;
            {
                std::lock_guard lk(mu_);
                if (r.completions == 0) continue;
            }
            if (r.root && r.frame && r.frame.done()) destroy_root(r);
            r.processed = true;
            apply(r);
        }
    }

    void apply(record& r) {
        note("done " + op_name(r) + ": " + (r.ok ? "ok " + std::to_string(r.n) : r.ec.message()));
        const bool cancelled = r.stop_requested || r.closed_under || r.how == wrap::timeout;
        if (!r.ok && (r.ec == std::errc::operation_canceled || r.ec == std::errc::timed_out)) {
            if (!cancelled) fail(op_name(r) + ": " + r.ec.message() + " but nothing cancelled it");
            if (r.ec == std::errc::timed_out && r.how != wrap::timeout)
                fail(op_name(r) + ": timed_out without a timeout");
        }
        if (r.kind == op_kind::connect || r.kind == op_kind::accept) return adopt(r);
        if (r.kind == op_kind::sleep) {
            if (!r.ok && !cancelled) fail(op_name(r) + ": " + r.ec.message());
            return;
        }
        conn<B>& c = conns_[static_cast<std::size_t>(r.conn)];
        if (is_read(r.kind) || r.kind == op_kind::drain) {
            if (c.read_op == r.id) c.read_op = -1;
            apply_read(r, c);
        } else {
            if (c.write_op == r.id) c.write_op = -1;
            apply_write(r, c);
        }
    }

    bool error_explained_read(const record& r, const conn<B>& c) const {
        const auto& e = r.ec;
        if (e == std::errc::operation_canceled || e == std::errc::timed_out) return true;  // checked above
        if (e == std::errc::connection_reset) return c.in.was_reset();
        if (e == std::errc::bad_file_descriptor) return r.closed_under;
        if (e == weft::errc::eof) return c.in.fin_sent() || c.in.was_reset();
        return false;
    }
    bool error_explained_write(const record& r, const conn<B>& c) const {
        const auto& e = r.ec;
        if (e == std::errc::operation_canceled || e == std::errc::timed_out) return true;
        if (e == std::errc::broken_pipe) return c.shut_wr || c.in.was_reset() || c.rst_from_weft;
        if (e == std::errc::connection_reset) return c.in.was_reset() || c.rst_from_weft;
        if (e == std::errc::bad_file_descriptor) return r.closed_under;
        return false;
    }

    void apply_read(record& r, conn<B>& c) {
        std::string err;
        if (r.kind == op_kind::drain) {
            err = c.in.consume(r.got);
            if (err.empty() && r.ok) err = c.in.eof();
            if (err.empty() && !r.ok && !error_explained_read(r, c))
                err = "drain failed with " + r.ec.message();
        } else if (r.kind == op_kind::wait_readable) {
            if (!r.ok && !error_explained_read(r, c)) err = "wait_readable failed with " + r.ec.message();
        } else if (r.ok) {
            if (r.kind == op_kind::read_exact && r.n != r.len) err = "read_exact returned a short count";
            if (err.empty()) err = r.n == 0 ? c.in.eof() : c.in.consume(r.got);
            if (err.empty() && r.got.size() != r.n) err = "a read's count and its bytes disagree";
        } else {
            if (!error_explained_read(r, c)) err = "failed with " + r.ec.message() + " (no cause in the model)";
            if (err.empty() && r.kind == op_kind::read_exact)
                err = c.in.consume_unknown(r.buf, r.fill, r.ec == weft::errc::eof);
            else if (err.empty() && r.kind != op_kind::receive && r.buf != r.fill)
                err = "a failed read wrote into its buffer";  // its bytes would be lost
        }
        if (!err.empty()) fail(op_name(r) + ": " + err);
    }

    void apply_write(record& r, conn<B>& c) {
        std::string err;
        if (r.kind == op_kind::wait_writable) {
            if (!r.ok && !error_explained_write(r, c)) err = "wait_writable failed with " + r.ec.message();
        } else if (r.ok) {
            if (r.kind != op_kind::write_some && r.n != r.len) err = "write_all returned a short count";
            if (r.n == 0 || r.n > r.len) err = "a write reported " + std::to_string(r.n) + " bytes";
            if (err.empty()) err = c.out.resolve(r.out_seg, r.n);
        } else {
            if (!error_explained_write(r, c)) err = "failed with " + r.ec.message() + " (no cause in the model)";
            // write_some says nothing was written; the looping ones do not say how much.
            if (err.empty())
                err = c.out.resolve(r.out_seg, r.kind == op_kind::write_some ? std::optional<std::size_t>(0)
                                                                              : std::nullopt);
        }
        if (!err.empty()) fail(op_name(r) + ": " + err);
    }

    /// A connect or accept finished: its stream becomes a connection, paired with the raw
    /// socket at the other end (found by port).
    void adopt(record& r) {
        std::optional<stream_t> st;
        {
            std::lock_guard lk(mu_);
            st = std::move(r.stream);
            r.stream.reset();
        }
        if (!r.ok) {
            bool explained = r.stop_requested || r.closed_under || r.how == wrap::timeout ||
                             (r.kind == op_kind::accept && r.ec == std::errc::bad_file_descriptor && r.closed_under);
            if (!explained) fail(op_name(r) + ": failed with " + r.ec.message());
            return;
        }
        if (!st || !st->is_open()) return fail(op_name(r) + ": succeeded without a stream");
        int peer = -1;
        if (r.kind == op_kind::connect) {
            int port = local_port(st->native_handle());
            accept_raw();
            auto it = raw_accepted_.find(port);
            if (it == raw_accepted_.end()) return fail("connect: the raw listener has no connection from port " +
                                                       std::to_string(port));
            peer = it->second;
            raw_accepted_.erase(it);
        } else {
            int port = remote_port(st->native_handle());
            auto it = clients_.find(port);
            if (it == clients_.end()) {
                // uring: an accept the kernel completed just before its listener closed
                // delivers that connection, whose raw client went with the listener.
                if (r.closed_under && std::find(abandoned_.begin(), abandoned_.end(), port) != abandoned_.end()) return;
                return fail("accept: a connection from unknown port " + std::to_string(port));
            }
            peer = it->second;
            clients_.erase(it);
        }
        int slot = free_slot();
        if (slot < 0) {  // no room: both ends go
            note("no free slot: closing the new connection");
            ::close(peer);
            return;
        }
        small_buffers(st->native_handle());
        conn<B>& c = conns_[static_cast<std::size_t>(slot)];
        c = conn<B>{};
        c.s = std::make_shared<stream_t>(std::move(*st));
        c.peer = peer;
        note("conn " + std::to_string(slot) + " open (" + name_of(r.kind) + ")");
    }

    // ---- driver actions ------------------------------------------------------------------

    void request_stop(record& r, bool env_token) {
        r.stop_requested = true;
        if (r.how == wrap::stop_token && !env_token)
            r.inner.request_stop();
        else
            r.stop.request_stop();
    }

    void cancel_one(std::uint32_t a, std::uint32_t b) {
        std::vector<record*> live;
        for (auto& r : ops_)
            if (!r->processed && !r->destroyed && r->kind != op_kind::drain) live.push_back(r.get());
        if (live.empty()) return;
        record& r = *live[a % live.size()];
        note("cancel " + op_name(r));
        request_stop(r, b & 1);
    }

    void destroy_frame(std::uint32_t a) {
        std::vector<record*> live;
        for (auto& r : ops_)
            if (r->root && r->frame && !r->processed) live.push_back(r.get());
        if (live.empty()) return;
        record& r = *live[a % live.size()];
        note("destroy the frame of " + op_name(r));
        destroy_root(r);
    }

    void destroy_root(record& r) {
        bool done = r.frame.done();
        r.frame.destroy();
        r.frame = {};
        if (done) return;
        r.destroyed = true;
        // The model learns nothing about what it did: a write becomes an unknown prefix,
        // a read an unknown (consumed) amount.
        if (r.conn >= 0) {
            conn<B>& c = conns_[static_cast<std::size_t>(r.conn)];
            if (is_write(r.kind)) {
                if (c.write_op == r.id) c.write_op = -1;
                if (r.kind != op_kind::wait_writable) (void)c.out.resolve(r.out_seg, std::nullopt);
            } else {
                if (c.read_op == r.id) c.read_op = -1;
                // A frame destroyed with its completion queued loses what it read (by
                // design): its buffer shows how much; a receive's lease shows nothing.
                if (r.kind == op_kind::receive) {
                    c.in.desync();
                } else if (r.kind != op_kind::wait_readable) {
                    std::string e = c.in.consume_unknown(r.buf, r.fill, false);
                    if (!e.empty()) fail(op_name(r) + " (frame destroyed): " + e);
                }
            }
        }
        std::lock_guard lk(mu_);
        r.stream.reset();
    }

    void release_lease(std::uint32_t a) {
        std::vector<record*> held;
        {
            std::lock_guard lk(mu_);
            for (auto& r : ops_)
                if (r->lease.size() > 0) held.push_back(r.get());
        }
        if (held.empty()) return;
        record& r = *held[a % held.size()];
        note("release the lease of " + op_name(r));
        std::lock_guard lk(mu_);
        r.lease.release();
    }

    void weft_shutdown(std::uint32_t a) {
        int i = pick_conn(a, [](const conn<B>& x) { return !x.closed && !x.shut_wr; });
        if (i < 0) return;
        conn<B>& c = conns_[static_cast<std::size_t>(i)];
        note("conn " + std::to_string(i) + ": weft shutdown(SHUT_WR)");
        auto r = c.s->shutdown();
        if (!r && r.error() != std::errc::not_connected) fail("shutdown failed: " + r.error().message());
        c.shut_wr = true;
    }

    void weft_close(std::uint32_t a) {
        // blocking: the closer is another thread than the operation's, and closing while
        // an operation has its fd is a race in the program (docs/lifetime.md).
        int i = pick_conn(a, [](const conn<B>& x) { return !x.closed && (!threaded || (x.read_op < 0 && x.write_op < 0)); });
        if (i < 0) return;
        note("conn " + std::to_string(i) + ": weft close");
        close_conn(i);
    }

    void close_conn(int i) {
        conn<B>& c = conns_[static_cast<std::size_t>(i)];
        for (int id : {c.read_op, c.write_op})
            if (id >= 0) ops_[static_cast<std::size_t>(id)]->closed_under = true;
        // Closing with bytes unread makes the kernel send RST instead of FIN, which drops
        // what was still queued for the peer: the peer may see EOF before all of it.
        if (c.in.unread_max() > 0) c.out.may_be_cut();
        if (!c.closed) {
            auto r = c.s->close();
            if (!r) fail("close failed: " + r.error().message());
        }
        c.closed = true;
    }

    void peer_reset(std::uint32_t a) {
        int i = pick_conn(a, [](const conn<B>& x) { return !x.peer_gone; });
        if (i < 0) return;
        conn<B>& c = conns_[static_cast<std::size_t>(i)];
        note("conn " + std::to_string(i) + ": peer reset");
        linger lg{1, 0};
        (void)::setsockopt(c.peer, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        ::close(c.peer);
        c.peer = -1;
        c.peer_gone = true;
        c.in.reset();
    }

    void peer_half_close(std::uint32_t a) {
        int i = pick_conn(a, [](const conn<B>& x) { return !x.peer_gone && !x.in.fin_sent(); });
        if (i < 0) return;
        conn<B>& c = conns_[static_cast<std::size_t>(i)];
        note("conn " + std::to_string(i) + ": peer shutdown(SHUT_WR)");
        ::shutdown(c.peer, SHUT_WR);
        c.in.fin();
    }

    void peer_write(std::uint32_t a, std::uint32_t b) {
        int i = pick_conn(a, [](const conn<B>& x) { return !x.peer_gone && !x.in.fin_sent(); });
        if (i < 0) return;
        conn<B>& c = conns_[static_cast<std::size_t>(i)];
        std::string data = payload(1 + b % 12000);
        // Data sent to a closed socket is answered with RST, which drops what weft's
        // kernel still had queued for the peer (after the peer's send sees the reset,
        // its recv reports plain EOF).
        if (c.closed) c.out.may_be_cut();
        long n = ::send(c.peer, data.data(), data.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) c.in.sent(std::string_view(data).substr(0, static_cast<std::size_t>(n)));
        int e = n < 0 ? errno : 0;
        note("conn " + std::to_string(i) + ": peer sent " + std::to_string(n) + " of " + std::to_string(data.size()));
        if (n < 0 && e != EAGAIN && !((e == EPIPE || e == ECONNRESET) && c.closed))
            fail("peer send failed: " + std::string(std::strerror(e)));
    }

    void peer_read(std::uint32_t a, std::uint32_t b) {
        int i = pick_conn(a, [](const conn<B>& x) { return !x.peer_gone && !x.peer_eof; });
        if (i < 0) return;
        peer_read_once(i, 1 + b % 40000);
    }

    /// One non-blocking recv by the peer; returns false when nothing more will come.
    bool peer_read_once(int i, std::size_t max) {
        conn<B>& c = conns_[static_cast<std::size_t>(i)];
        std::string buf(max, '\0');
        long n = ::recv(c.peer, buf.data(), max, MSG_DONTWAIT);
        int e = n < 0 ? errno : 0;
        std::string err;
        if (n > 0) {
            err = c.out.feed(std::string_view(buf.data(), static_cast<std::size_t>(n)));
        } else if (n == 0) {
            note("conn " + std::to_string(i) + ": peer read EOF");
            c.peer_eof = true;
            if (!c.shut_wr && !c.closed) err = "the peer read EOF but weft neither half-closed nor closed";
            if (err.empty()) err = c.out.eof();
        } else if (e == ECONNRESET) {
            note("conn " + std::to_string(i) + ": peer read ECONNRESET");
            c.peer_eof = true;
            c.rst_from_weft = true;
            if (!c.closed) err = "the peer got ECONNRESET but weft did not close";
        } else if (e != EAGAIN) {
            err = std::string("peer recv failed: ") + std::strerror(e);
        }
        if (!err.empty()) fail("conn " + std::to_string(i) + ": " + err);
        return n > 0 || (n < 0 && e == EAGAIN);
    }

    /// The peer reads everything until EOF (or a reset from weft's side), waiting for it.
    void peer_drain(int i, bool want_eof) {
        conn<B>& c = conns_[static_cast<std::size_t>(i)];
        if (c.peer_gone) return;
        auto deadline = weft::clock::now() + std::chrono::seconds(5);
        while (!c.peer_eof && failures.empty()) {
            if (weft::clock::now() > deadline) {
                if (want_eof)
                    fail("conn " + std::to_string(i) + ": the peer saw no EOF within 5 s after weft " +
                         (c.closed ? "closed" : "half-closed") + " (" + std::to_string(c.out.seen()) + " bytes seen)");
                return;
            }
            pollfd p{c.peer, POLLIN, 0};
            (void)::poll(&p, 1, 1);
            if (!threaded) loop_->run_once(std::chrono::milliseconds(0));  // a write may still be finishing
            settle();
            (void)peer_read_once(i, 65536);
        }
    }

    void run_some(std::uint32_t a) {
        if (cfg_.verbose) note("run");
        if (threaded) {  // the tasks run on their own threads: give them a moment
            loop_->run_once(std::chrono::microseconds(200 * (a % 8)));
            return;
        }
        if (a % 4 == 0)
            loop_->run_once(std::chrono::milliseconds(1 + a % 3));
        else
            for (std::uint32_t k = 0; k < 1 + a % 4; ++k) loop_->run_once(std::chrono::milliseconds(0));
    }

    void toggle_listener() {
        if (listener_) {
            if (threaded && pending_of(op_kind::accept) > 0) return;  // see weft_close
            note("listener close");
            for (auto& r : ops_)
                if (r->kind == op_kind::accept && !r->processed) r->closed_under = true;
            (void)listener_->close();
            listener_.reset();
            for (auto& [port, fd] : clients_) {  // their queued connections went with it
                ::close(fd);
                abandoned_.push_back(port);
            }
            clients_.clear();
        } else {
            open_listener();
        }
    }

    void open_listener() {
        auto l = listener_t::bind(*loop_, weft::endpoint::loopback_v4(0));
        if (!l) return fail("listener bind: " + l.error().message());
        listener_ = std::make_shared<listener_t>(std::move(*l));
        auto ep = listener_->local_endpoint();
        if (!ep) return fail("listener local_endpoint: " + ep.error().message());
        listen_ep_ = *ep;
        note("listener open on port " + std::to_string(listen_ep_.port()));
    }

    void peer_connect() {
        if (!listener_ || clients_.size() >= 3) return;
        int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return fail("socket: " + std::string(std::strerror(errno)));
        small_buffers(fd);
        if (::connect(fd, listen_ep_.data(), listen_ep_.size()) != 0) {  // loopback: done at once
            ::close(fd);
            return fail("peer connect: " + std::string(std::strerror(errno)));
        }
        (void)::fcntl(fd, F_SETFL, O_NONBLOCK);
        clients_[local_port(fd)] = fd;
        note("peer connected from port " + std::to_string(local_port(fd)));
    }

    void accept_raw() {
        for (;;) {
            int fd = ::accept4(raw_listener_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd < 0) return;
            raw_accepted_[remote_port(fd)] = fd;
        }
    }

    /// A closed connection whose operations are done: the peer reads the rest and must
    /// see EOF (or a reset, if weft closed with bytes unread); then the slot is free.
    void retire(std::uint32_t a) {
        int i = pick_conn(a, [](const conn<B>& x) { return x.closed && x.read_op < 0 && x.write_op < 0; });
        if (i < 0) return;
        note("conn " + std::to_string(i) + ": retire");
        peer_drain(i, true);
        conn<B>& c = conns_[static_cast<std::size_t>(i)];
        if (c.peer >= 0) ::close(c.peer);
        c = conn<B>{};
    }

    /// Leaves no stream or lease in a record (before the loop goes).
    void scrub(record& r) {
        std::lock_guard lk(mu_);
        r.stream.reset();
        r.lease.release();
    }

    void close_raw() {
        for (auto& c : conns_)
            if (c.peer >= 0) ::close(c.peer);
        conns_.clear();
        for (auto& [port, fd] : clients_) ::close(fd);
        clients_.clear();
        accept_raw();
        for (auto& [port, fd] : raw_accepted_) ::close(fd);
        raw_accepted_.clear();
        if (raw_listener_ >= 0) ::close(raw_listener_);
        raw_listener_ = -1;
    }

    // ---- helpers -----------------------------------------------------------------------

    template <class Pred>
    int pick_conn(std::uint32_t a, Pred ok) const {
        std::vector<int> v;
        for (std::size_t i = 0; i < conns_.size(); ++i)
            if (conns_[i].s && ok(conns_[i])) v.push_back(static_cast<int>(i));
        return v.empty() ? -1 : v[a % v.size()];
    }
    int free_slot() const {
        for (std::size_t i = 0; i < conns_.size(); ++i)
            if (!conns_[i].s) return static_cast<int>(i);
        return -1;
    }
    int open_conns() const {
        int n = 0;
        for (auto& c : conns_) n += c.s ? 1 : 0;
        return n;
    }
    int pending_of(op_kind k) const {
        int n = 0;
        for (auto& r : ops_) n += (r->kind == k && !r->processed && !r->destroyed) ? 1 : 0;
        return n;
    }
    std::string payload(std::size_t n) {
        std::string s(n, '\0');
        for (std::size_t i = 0; i < n; i += 8) {
            std::uint64_t v = data_rng_.next();
            std::memcpy(s.data() + i, &v, std::min<std::size_t>(8, n - i));
        }
        return s;
    }
    static std::string op_name(const record& r) {
        std::string s = "op #" + std::to_string(r.id) + " " + name_of(r.kind);
        if (r.conn >= 0) s += " on conn " + std::to_string(r.conn);
        if (r.len) s += " len " + std::to_string(r.len);
        return s;
    }
    void note(std::string s) {
        if (cfg_.verbose) std::fprintf(stderr, "  [%zu] %s\n", steps_run, s.c_str());
        trace.push_back("[" + std::to_string(steps_run) + "] " + std::move(s));
        if (trace.size() > 60) trace.pop_front();
    }
    void fail(std::string s) {
        std::lock_guard lk(mu_);
        fail_locked(std::move(s));
    }
    void fail_locked(std::string s) {
        if (failures.size() < 20) failures.push_back("[step " + std::to_string(steps_run) + "] " + std::move(s));
    }

    choices& ch_;
    splitmix data_rng_;
    settings cfg_;
    /// Guards what operations write (they are threads on backend::blocking).
    std::mutex mu_;
    bool teardown_ = false;
    // Destroyed in reverse: the loop goes before the records its frames point at.
    std::deque<std::unique_ptr<record>> ops_;
    std::vector<conn<B>> conns_ = std::vector<conn<B>>(4);
    std::shared_ptr<listener_t> listener_;
    std::optional<weft::loop<B>> loop_;
    weft::endpoint raw_ep_, listen_ep_;
    int raw_listener_ = -1;
    std::map<int, int> clients_;       ///< raw clients of weft's listener, by local port
    std::map<int, int> raw_accepted_;  ///< raw listener's connections, by the client's port
    std::vector<int> abandoned_;       ///< ports of clients closed with the listener they queued on

    template <class>
    friend struct op_record;
};

}  // namespace weft_fuzz

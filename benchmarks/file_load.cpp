// HTTP load client for the file-server "stutter" case study (benchmarks/file_bench.py).
//
//   file_load --port P [--host 127.0.0.1] --stream-path /big.bin [--streams N]
//             --small-path /small.txt [--small-clients M] [--seconds S] [--warmup W]
//             [--stream-bytes B] [--small-bytes B] [--verify] [--copy-body]
//             [--stall-timeout T]
//
// N stream connections each GET the large file over and over on one keep-alive
// connection and throw its body away as fast as they can. M small clients each send one
// GET for the small file, wait for the whole response, record its latency
// (CLOCK_MONOTONIC, request sent -> last body byte received) and send the next. The
// question is how long a small request waits while the server is busy streaming.
//
// One thread, level-triggered epoll; pin it to a CPU of its own. The small clients'
// events are handled before the streams' in every turn, and a stream reads at most
// --chunk bytes per event, so the client adds little to the latency it measures. By
// default a stream discards its body with recv(MSG_TRUNC) (the kernel frees the data
// without copying it; tcp(7)), which keeps the client cheap; --copy-body copies it into
// a buffer instead. --verify copies and checks every body byte against the pattern
// file_bench.py writes (block k of 4096 bytes starts with k*4096 as a little-endian
// u64, the other bytes are (i*131+7)&0xff for i = offset within the block).
//
// Responses are framed by Content-Length (status 200 or 206; chunked encoding is an
// error). A response with "Connection: close" is followed by a reconnect. Everything
// else is an error with a message naming the problem, and exit status 1: connection
// refused, a reset, EOF inside a response, a bad status, a Content-Length that differs
// from --stream-bytes/--small-bytes, a wrong body byte under --verify, or a connection
// with no progress for --stall-timeout seconds (default 10).
//
// After the warm-up it prints "window" (flushed) when the measured window opens, and at
// its end one line:
//   small_requests=N p50_us=.. p90_us=.. p99_us=.. p999_us=.. max_us=.. mean_us=..
//   small_pending=K oldest_pending_us=.. stream_MiB_s=.. stream_responses=R
//   stream_bytes=B seconds=T reconnects=C client_cpu_pct=P errors=0
// The percentiles are of the small requests that completed in the window (whenever they
// were sent). max_us also covers the K requests still outstanding when the window closes
// (their age then, oldest_pending_us), so a server that starves the small clients shows
// it instead of hiding it. stream_MiB_s counts the body bytes the streams received in
// the window; stream_responses the downloads completed in it.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

[[noreturn]] void fail(const std::string& what) {
    std::fprintf(stderr, "file_load: error: %s\n", what.c_str());
    std::exit(1);
}

std::uint64_t now_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<std::uint64_t>(ts.tv_nsec);
}

double cpu_seconds() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/// The body pattern of file_bench.py's files, byte at file offset `o`.
inline unsigned char pattern_byte(std::uint64_t o) noexcept {
    std::uint64_t in = o % 4096;
    if (in < 8) return static_cast<unsigned char>((o - in) >> (8 * in));
    return static_cast<unsigned char>((in * 131 + 7) & 0xff);
}

struct options {
    std::string host = "127.0.0.1";
    int port = -1;
    std::string stream_path, small_path;
    int streams = 4, small_clients = 4;
    double seconds = 10, warmup = 1, stall_timeout = 10;
    long long stream_bytes = -1, small_bytes = -1;
    bool verify = false, copy_body = false;
    std::size_t chunk = 256 * 1024;
};

double parse_double(const char* opt, const char* text) {
    char* end = nullptr;
    errno = 0;
    double v = std::strtod(text, &end);
    if (errno || end == text || *end || v < 0)
        fail(std::string(opt) + " must be a non-negative number, got '" + text + "'");
    return v;
}

long long parse_int(const char* opt, const char* text, long long lo, long long hi) {
    long long v = 0;
    std::string_view s(text);
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || p != s.data() + s.size() || v < lo || v > hi)
        fail(std::string(opt) + " must be a number " + std::to_string(lo) + ".." + std::to_string(hi) + ", got '" +
             text + "'");
    return v;
}

void usage() {
    std::fprintf(stderr,
                 "usage: file_load --port P [--host 127.0.0.1] --stream-path PATH [--streams N]\n"
                 "                 --small-path PATH [--small-clients M] [--seconds S] [--warmup W]\n"
                 "                 [--stream-bytes B] [--small-bytes B] [--verify] [--copy-body]\n"
                 "                 [--stall-timeout T] [--chunk BYTES]\n");
}

options parse(int argc, char** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        std::string v;
        bool has_value = false;
        if (auto eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
            v = a.substr(eq + 1);
            a = a.substr(0, eq);
            has_value = true;
        }
        if (a == "--help") {
            usage();
            std::exit(0);
        }
        if (a == "--verify" || a == "--copy-body") {
            (a == "--verify" ? o.verify : o.copy_body) = true;
            continue;
        }
        if (!has_value) {
            if (i + 1 >= argc) {
                usage();
                fail("option " + a + " needs a value");
            }
            v = argv[++i];
        }
        const char* opt = a.c_str();
        if (a == "--host")
            o.host = v;
        else if (a == "--port")
            o.port = static_cast<int>(parse_int(opt, v.c_str(), 1, 65535));
        else if (a == "--stream-path")
            o.stream_path = v;
        else if (a == "--small-path")
            o.small_path = v;
        else if (a == "--streams")
            o.streams = static_cast<int>(parse_int(opt, v.c_str(), 0, 10000));
        else if (a == "--small-clients")
            o.small_clients = static_cast<int>(parse_int(opt, v.c_str(), 0, 10000));
        else if (a == "--seconds")
            o.seconds = parse_double(opt, v.c_str());
        else if (a == "--warmup")
            o.warmup = parse_double(opt, v.c_str());
        else if (a == "--stall-timeout")
            o.stall_timeout = parse_double(opt, v.c_str());
        else if (a == "--stream-bytes")
            o.stream_bytes = parse_int(opt, v.c_str(), 0, 1LL << 50);
        else if (a == "--small-bytes")
            o.small_bytes = parse_int(opt, v.c_str(), 0, 1LL << 50);
        else if (a == "--chunk")
            o.chunk = static_cast<std::size_t>(parse_int(opt, v.c_str(), 4096, 64 << 20));
        else {
            usage();
            fail("unknown option " + a);
        }
    }
    if (o.port < 0) fail("--port is required");
    if (o.streams > 0 && o.stream_path.empty()) fail("--stream-path is required with --streams > 0");
    if (o.small_clients > 0 && o.small_path.empty()) fail("--small-path is required with --small-clients > 0");
    if (o.streams + o.small_clients == 0) fail("nothing to do: --streams and --small-clients are both 0");
    if (o.seconds <= 0) fail("--seconds must be > 0");
    for (auto* p : {&o.stream_path, &o.small_path})
        if (!p->empty() && ((*p)[0] != '/' || p->find_first_of(" \r\n") != std::string::npos))
            fail("a request path must start with '/' and contain no spaces: '" + *p + "'");
    return o;
}

sockaddr_storage resolve(const options& o, socklen_t& len) {
    sockaddr_storage ss{};
    auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
    if (inet_pton(AF_INET, o.host.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(static_cast<std::uint16_t>(o.port));
        len = sizeof(sockaddr_in);
    } else if (inet_pton(AF_INET6, o.host.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(static_cast<std::uint16_t>(o.port));
        len = sizeof(sockaddr_in6);
    } else {
        fail("--host must be a numeric IPv4 or IPv6 address, got '" + o.host + "'");
    }
    return ss;
}

bool iequals_prefix(std::string_view line, std::string_view name) {
    if (line.size() < name.size()) return false;
    for (std::size_t i = 0; i < name.size(); ++i)
        if (std::tolower(static_cast<unsigned char>(line[i])) != name[i]) return false;
    return true;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
    return s;
}

struct conn {
    enum class state { idle, head, body };
    int fd = -1;
    bool small = false;
    int index = 0;
    state st = state::idle;
    std::string request;  // the whole GET, sent in one go
    std::size_t sent = 0;
    std::string head;  // response bytes until the end of the headers
    std::uint64_t body_left = 0, body_offset = 0;
    bool close_after = false;
    std::uint64_t started = 0;        // when the request was written (ns)
    std::uint64_t last_progress = 0;  // for the stall timeout
    std::uint64_t responses = 0;
    bool want_out = false;
};

class client {
public:
    explicit client(options o) : o_(std::move(o)) {
        addr_ = resolve(o_, addr_len_);
        ep_ = epoll_create1(EPOLL_CLOEXEC);
        if (ep_ < 0) fail(std::string("epoll_create1: ") + std::strerror(errno));
        buf_.resize(std::max<std::size_t>(o_.chunk, 65536));
        std::string host_hdr = o_.host.find(':') != std::string::npos ? "[" + o_.host + "]" : o_.host;
        host_hdr += ":" + std::to_string(o_.port);
        conns_.resize(static_cast<std::size_t>(o_.small_clients + o_.streams));
        for (std::size_t i = 0; i < conns_.size(); ++i) {
            auto& c = conns_[i];
            c.small = static_cast<int>(i) < o_.small_clients;
            c.index = static_cast<int>(i);
            c.request = "GET " + (c.small ? o_.small_path : o_.stream_path) + " HTTP/1.1\r\nHost: " + host_hdr +
                        "\r\nUser-Agent: weft-file_load\r\n\r\n";
        }
    }

    int run() {
        for (auto& c : conns_) open(c);
        for (auto& c : conns_) send_request(c);
        std::uint64_t start = now_ns();
        std::uint64_t window_at = start + static_cast<std::uint64_t>(o_.warmup * 1e9);
        std::uint64_t end_at = window_at + static_cast<std::uint64_t>(o_.seconds * 1e9);
        bool in_window = false;
        double cpu0 = 0;
        std::vector<epoll_event> evs(256);
        std::vector<std::pair<conn*, std::uint32_t>> later;
        for (;;) {
            std::uint64_t t = now_ns();
            if (!in_window && t >= window_at) {
                in_window = true;
                window_start_ = t;
                stream_bytes_ = 0;
                stream_responses_ = 0;
                latencies_.clear();
                reconnects_window_ = 0;
                cpu0 = cpu_seconds();
                std::printf("window\n");
                std::fflush(stdout);
            }
            if (in_window && t >= end_at) break;
            check_stalls(t);
            std::uint64_t until = in_window ? end_at : window_at;
            int timeout_ms = static_cast<int>(std::min<std::uint64_t>((until - t) / 1000000 + 1, 100));
            int n = epoll_wait(ep_, evs.data(), static_cast<int>(evs.size()), timeout_ms);
            if (n < 0) {
                if (errno == EINTR) continue;
                fail(std::string("epoll_wait: ") + std::strerror(errno));
            }
            later.clear();
            // The small clients first: their completion time is what we measure.
            for (int i = 0; i < n; ++i) {
                auto* c = &conns_[evs[static_cast<std::size_t>(i)].data.u32];
                std::uint32_t events = evs[static_cast<std::size_t>(i)].events;
                if (c->small)
                    handle(*c, events);
                else
                    later.emplace_back(c, events);
            }
            for (auto [c, events] : later) handle(*c, events);
        }
        std::uint64_t t_end = now_ns();
        double cpu1 = cpu_seconds();
        double secs = static_cast<double>(t_end - window_start_) / 1e9;
        std::size_t pending = 0;
        std::uint64_t oldest = 0;
        for (auto& c : conns_)
            if (c.small && c.st != conn::state::idle) {
                oldest = std::max(oldest, t_end - c.started);
                ++pending;
            }
        std::sort(latencies_.begin(), latencies_.end());
        std::uint64_t max_ns = std::max(oldest, latencies_.empty() ? std::uint64_t{0} : latencies_.back());
        auto pct = [&](double p) -> double {
            if (latencies_.empty()) return 0;
            auto k = static_cast<std::size_t>(p * static_cast<double>(latencies_.size() - 1) + 0.5);
            return static_cast<double>(latencies_[std::min(k, latencies_.size() - 1)]) / 1000.0;
        };
        double sum = 0;
        for (auto v : latencies_) sum += static_cast<double>(v);
        double mean = latencies_.empty() ? 0 : sum / static_cast<double>(latencies_.size()) / 1000.0;
        std::printf(
            "small_requests=%zu p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f mean_us=%.1f "
            "small_pending=%zu oldest_pending_us=%.1f stream_MiB_s=%.1f stream_responses=%llu stream_bytes=%llu "
            "seconds=%.3f reconnects=%llu client_cpu_pct=%.1f errors=0\n",
            latencies_.size(), pct(0.5), pct(0.9), pct(0.99), pct(0.999), static_cast<double>(max_ns) / 1000.0, mean,
            pending, static_cast<double>(oldest) / 1000.0,
            static_cast<double>(stream_bytes_) / (1024.0 * 1024.0) / secs,
            static_cast<unsigned long long>(stream_responses_), static_cast<unsigned long long>(stream_bytes_), secs,
            static_cast<unsigned long long>(reconnects_window_), 100.0 * (cpu1 - cpu0) / secs);
        std::fflush(stdout);
        return 0;
    }

private:
    std::string name(const conn& c) const {
        return std::string(c.small ? "small client " : "stream ") +
               std::to_string(c.small ? c.index : c.index - o_.small_clients) + " (GET " +
               (c.small ? o_.small_path : o_.stream_path) + ")";
    }

    void open(conn& c) {
        c.fd = socket(addr_.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c.fd < 0) fail(std::string("socket: ") + std::strerror(errno));
        if (connect(c.fd, reinterpret_cast<sockaddr*>(&addr_), addr_len_) != 0)
            fail("connect to " + o_.host + ":" + std::to_string(o_.port) + " (" + name(c) +
                 "): " + std::strerror(errno));
        int one = 1;
        setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(c.fd, F_SETFL, fcntl(c.fd, F_GETFL) | O_NONBLOCK);
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLRDHUP;
        ev.data.u32 = static_cast<std::uint32_t>(c.index);
        if (epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &ev) != 0) fail(std::string("epoll_ctl: ") + std::strerror(errno));
        c.want_out = false;
        c.st = conn::state::idle;
    }

    void set_out(conn& c, bool on) {
        if (c.want_out == on) return;
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLRDHUP | (on ? EPOLLOUT : 0u);
        ev.data.u32 = static_cast<std::uint32_t>(c.index);
        if (epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev) != 0) fail(std::string("epoll_ctl: ") + std::strerror(errno));
        c.want_out = on;
    }

    void send_request(conn& c) {
        c.st = conn::state::head;
        c.sent = 0;
        c.head.clear();
        c.body_left = c.body_offset = 0;
        c.close_after = false;
        c.started = now_ns();
        c.last_progress = c.started;
        flush(c);
    }

    void flush(conn& c) {
        while (c.sent < c.request.size()) {
            ssize_t w = ::send(c.fd, c.request.data() + c.sent, c.request.size() - c.sent, MSG_NOSIGNAL);
            if (w > 0) {
                c.sent += static_cast<std::size_t>(w);
            } else if (w < 0 && errno == EINTR) {
                continue;
            } else if (w < 0 && errno == EAGAIN) {
                set_out(c, true);
                return;
            } else {
                fail("send to " + name(c) + ": " + std::strerror(errno));
            }
        }
        set_out(c, false);
    }

    void handle(conn& c, std::uint32_t events) {
        if (events & EPOLLOUT) flush(c);
        if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) read(c);
    }

    void read(conn& c) {
        if (c.st == conn::state::head) {
            ssize_t r = ::recv(c.fd, buf_.data(), std::min<std::size_t>(buf_.size(), 65536), 0);
            if (r == 0) return eof(c);
            if (r < 0) return recv_error(c);
            c.last_progress = now_ns();
            c.head.append(buf_.data(), static_cast<std::size_t>(r));
            auto end = c.head.find("\r\n\r\n");
            if (end == std::string::npos) {
                if (c.head.size() > 65536) fail(name(c) + ": response headers longer than 64 KiB");
                return;
            }
            parse_head(c, std::string_view(c.head).substr(0, end + 2));
            std::string_view rest = std::string_view(c.head).substr(end + 4);
            if (rest.size() > c.body_left)
                fail(name(c) + ": " + std::to_string(rest.size() - c.body_left) +
                     " bytes after the response body (answered before a request was sent)");
            consume(c, rest.data(), rest.size());
            c.st = conn::state::body;
            if (c.body_left == 0) return complete(c);
            return;
        }
        if (c.st == conn::state::body) {
            bool copy = c.small || o_.copy_body || o_.verify;
            std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(c.body_left, o_.chunk));
            ssize_t r = ::recv(c.fd, buf_.data(), want, copy ? 0 : MSG_TRUNC);
            if (r == 0) return eof(c);
            if (r < 0) return recv_error(c);
            c.last_progress = now_ns();
            consume(c, copy ? buf_.data() : nullptr, static_cast<std::size_t>(r));
            if (c.body_left == 0) complete(c);
            return;
        }
        // Idle: nothing was asked; the peer must not send, but may close (after
        // "Connection: close" that is handled in complete()).
        ssize_t r = ::recv(c.fd, buf_.data(), buf_.size(), 0);
        if (r == 0) return eof(c);
        if (r < 0) return recv_error(c);
        fail(name(c) + ": " + std::to_string(r) + " unexpected bytes while no request was outstanding");
    }

    void recv_error(conn& c) {
        if (errno == EAGAIN || errno == EINTR) return;
        fail("recv from " + name(c) + ": " + std::strerror(errno));
    }

    void eof(conn& c) {
        if (c.st == conn::state::head && c.head.empty() && c.responses > 0)
            fail(name(c) + ": the server closed the keep-alive connection after " + std::to_string(c.responses) +
                 " responses without \"Connection: close\"");
        if (c.st == conn::state::head)
            fail(name(c) + ": short response: EOF after " + std::to_string(c.head.size()) + " bytes of headers" +
                 (c.head.empty() ? " (no response at all)" : ""));
        if (c.st == conn::state::body)
            fail(name(c) + ": short response: EOF with " + std::to_string(c.body_left) + " of " +
                 std::to_string(c.body_left + c.body_offset) + " body bytes missing");
        fail(name(c) + ": EOF while idle");
    }

    void parse_head(conn& c, std::string_view head) {
        auto eol = head.find("\r\n");
        std::string_view status = head.substr(0, eol);
        if (!status.starts_with("HTTP/1.")) fail(name(c) + ": not an HTTP/1.x response: '" + std::string(status) + "'");
        auto sp = status.find(' ');
        int code = sp == std::string_view::npos ? 0 : std::atoi(std::string(status.substr(sp + 1, 3)).c_str());
        if (code != 200 && code != 206) fail(name(c) + ": status '" + std::string(status) + "'");
        c.close_after = status.starts_with("HTTP/1.0");
        long long length = -1;
        std::size_t pos = eol + 2;
        while (pos < head.size()) {
            auto e = head.find("\r\n", pos);
            std::string_view line = head.substr(pos, e - pos);
            pos = e + 2;
            auto colon = line.find(':');
            if (colon == std::string_view::npos) continue;
            std::string_view value = trim(line.substr(colon + 1));
            if (iequals_prefix(line, "content-length:")) {
                long long v = 0;
                auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
                if (ec != std::errc{} || p != value.data() + value.size() || v < 0)
                    fail(name(c) + ": bad Content-Length '" + std::string(value) + "'");
                if (length >= 0 && length != v) fail(name(c) + ": two different Content-Length headers");
                length = v;
            } else if (iequals_prefix(line, "transfer-encoding:")) {
                fail(name(c) + ": Transfer-Encoding '" + std::string(value) + "' (only Content-Length is supported)");
            } else if (iequals_prefix(line, "connection:")) {
                std::string v(value);
                for (auto& ch : v) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
                if (v.find("close") != std::string::npos) c.close_after = true;
                if (v.find("keep-alive") != std::string::npos) c.close_after = false;
            }
        }
        if (length < 0) fail(name(c) + ": response without Content-Length");
        long long expect = c.small ? o_.small_bytes : o_.stream_bytes;
        if (expect >= 0 && length != expect)
            fail(name(c) + ": Content-Length " + std::to_string(length) + ", expected " + std::to_string(expect));
        c.body_left = static_cast<std::uint64_t>(length);
        c.body_offset = 0;
    }

    void consume(conn& c, const char* data, std::size_t n) {
        if (o_.verify && data) {
            for (std::size_t i = 0; i < n; ++i) {
                if (static_cast<unsigned char>(data[i]) != pattern_byte(c.body_offset + i))
                    fail(name(c) + ": wrong body byte at offset " + std::to_string(c.body_offset + i) + ": got " +
                         std::to_string(static_cast<unsigned char>(data[i])) + ", expected " +
                         std::to_string(pattern_byte(c.body_offset + i)) + " (response " +
                         std::to_string(c.responses + 1) + " on this connection)");
            }
        }
        c.body_left -= n;
        c.body_offset += n;
        if (!c.small) stream_bytes_ += n;
    }

    void complete(conn& c) {
        std::uint64_t t = now_ns();
        ++c.responses;
        if (c.small) {
            if (window_start_) latencies_.push_back(t - c.started);
        } else {
            ++stream_responses_;
        }
        c.st = conn::state::idle;
        if (c.close_after) {
            epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
            ::close(c.fd);
            open(c);
            ++reconnects_window_;
        }
        send_request(c);
    }

    void check_stalls(std::uint64_t t) {
        if (t - last_stall_check_ < 100000000ULL) return;
        last_stall_check_ = t;
        auto limit = static_cast<std::uint64_t>(o_.stall_timeout * 1e9);
        for (auto& c : conns_)
            if (c.st != conn::state::idle && t - c.last_progress > limit)
                fail(name(c) + ": no progress for " + std::to_string(o_.stall_timeout) + " s (" +
                     (c.st == conn::state::head ? std::to_string(c.head.size()) + " bytes of headers received"
                                                : std::to_string(c.body_left) + " body bytes still missing") +
                     ", " + std::to_string(c.responses) + " responses before)");
    }

    options o_;
    sockaddr_storage addr_{};
    socklen_t addr_len_ = 0;
    int ep_ = -1;
    std::vector<conn> conns_;
    std::vector<char> buf_;
    std::vector<std::uint64_t> latencies_;
    std::uint64_t window_start_ = 0, stream_bytes_ = 0, stream_responses_ = 0, reconnects_window_ = 0;
    std::uint64_t last_stall_check_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    options o = parse(argc, argv);
    return client(std::move(o)).run();
}

// A small, strict HTTP/1.1 static-file server: weft's files, `send_file`, timeouts and
// a graceful drain in one program.
//
//   file_server --root DIR --listen HOST:PORT [--backend NAME] [--header-timeout SECONDS] [--naive]
//
// Prints "listening on HOST:PORT" once ready (the real port; port 0 picks a free one).
//
// HTTP: GET and HEAD (anything else: 405 with "Allow: GET, HEAD"). Keep-alive is the
// default for HTTP/1.1 ("Connection: close" honoured); HTTP/1.0 closes unless it asks
// for keep-alive. Pipelined requests are answered in order. Every response has a
// Content-Length; Content-Type comes from the file's extension. "Range: bytes=" with one
// range ("a-b", "a-", "-n") gives 206 and Content-Range; an unsatisfiable one 416 with
// "Content-Range: bytes */size"; a malformed or multi-range one is ignored (200, the
// whole file, as RFC 9110 allows). "/" and directories serve their index.html. The
// path is percent-decoded; the query is ignored.
//
// Strictness: a request line and headers over 8 KiB -> 431; a request with a body
// (Content-Length > 0 or Transfer-Encoding) -> 413; bad syntax -> 400; each then closes.
// A path that leaves the root (a ".." segment, encoded or not, a NUL byte, a symlink
// pointing outside) -> 404: files are opened with `file::open_beneath` (openat2 with
// RESOLVE_BENEATH). A client that has not sent a whole request header within
// --header-timeout seconds (default 10) of connecting, or of its previous response,
// is closed.
//
// Bodies go out with `weft::send_file` (sendfile or splice; no copy through user
// space). --naive is the deliberately naive "before" of that: the file is opened and
// read with blocking calls on the loop's thread (openat2, then pread 64 KiB at a time),
// each chunk written with write_all. Everything else is the same, RESOLVE_BENEATH too.
//
// On SIGTERM or SIGINT it stops accepting, closes the idle connections, lets the others
// finish the response they are sending, and exits 0 within 5 s (sessions still busy
// after 4 s are cancelled).
// Exit status 2: bad arguments; 3: backend unavailable; 1: other.
#include <weft/weft.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <list>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "args.hpp"
#include "backend_main.hpp"

namespace {

using namespace std::chrono_literals;

constexpr std::size_t max_header = 8192;                // request line + headers + the empty line
constexpr std::size_t read_buffer = max_header + 4096;  // room for pipelined requests behind one
constexpr std::size_t naive_chunk = 64 * 1024;
// How files are opened: O_NONBLOCK so a FIFO or device planted in the root cannot
// block the open (it is cleared again once the file is known to be regular).
constexpr int open_flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;

/// A live session, as the drain sees it.
template <class B>
struct session_entry {
    weft::tcp_stream<B>* stream;
    std::stop_source stop;  // the session's stop token: cancels whatever it awaits
    bool idle = true;       // waiting for a request (nothing half answered)
};

/// The live sessions and the settings. The mutex matters only on `backend::blocking`,
/// where every session is a thread; elsewhere it is never contended.
template <class B>
struct server_state {
    std::mutex mutex;
    std::list<session_entry<B>> sessions;
    bool draining = false;
    weft::file<B> root;  // the directory served; read-only once opened
    std::chrono::seconds header_timeout{10};
    bool naive = false;
};

// ---- Parsing (plain functions over the connection's buffer) ----------------------

bool is_tchar(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}
bool is_token(std::string_view s) { return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar); }
bool is_digits(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}
char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }
bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() &&
           std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return lower(x) == lower(y); });
}
bool istarts_with(std::string_view s, std::string_view prefix) {
    return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}
std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}
/// A decimal number (digits only), saturating at UINT64_MAX.
std::uint64_t saturating_number(std::string_view digits) {
    std::uint64_t v = 0;
    for (char c : digits) {
        auto d = static_cast<std::uint64_t>(c - '0');
        if (v > (UINT64_MAX - d) / 10) return UINT64_MAX;
        v = v * 10 + d;
    }
    return v;
}

/// One parsed request; the views point into the connection's read buffer.
struct request {
    std::string_view method, target, range;
    int minor = 1;  // HTTP/1.minor
    bool close = false, keep_alive = false, has_body = false, has_host = false;
    bool bad_range = false, if_range = false;
};

enum class parse_result { incomplete, ok, bad, too_large, bad_version };

/// Parses the request at the start of `in`. On `ok`, `used` is the length of its
/// header (the request has no body: one with a body is refused).
parse_result parse_request(std::string_view in, request& r, std::size_t& used) {
    r = request{};
    std::size_t pos = 0;
    while (pos < in.size() && (in[pos] == '\r' || in[pos] == '\n')) ++pos;  // empty lines before a request
    bool first = true;
    for (;;) {
        auto nl = in.find('\n', pos);
        if (nl == std::string_view::npos)
            return in.size() >= max_header ? parse_result::too_large : parse_result::incomplete;
        if (nl + 1 > max_header) return parse_result::too_large;
        std::string_view line = in.substr(pos, nl - pos);
        pos = nl + 1;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        // No control characters but HT anywhere (a bare CR, a NUL); DEL counts too.
        for (char c : line)
            if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f) return parse_result::bad;
        if (first) {  // method SP request-target SP HTTP-version
            first = false;
            auto sp1 = line.find(' ');
            auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
            if (sp2 == std::string_view::npos) return parse_result::bad;
            r.method = line.substr(0, sp1);
            r.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
            std::string_view version = line.substr(sp2 + 1);
            if (!is_token(r.method) || r.target.empty() || r.target.find_first_of(" \t") != std::string_view::npos)
                return parse_result::bad;
            if (version.size() != 8 || !version.starts_with("HTTP/") || !is_digits(version.substr(5, 1)) ||
                version[6] != '.' || !is_digits(version.substr(7, 1)))
                return parse_result::bad;
            if (version[5] != '1') return parse_result::bad_version;
            r.minor = version[7] - '0';
            continue;
        }
        if (line.empty()) break;  // the end of the header
        // A field: "name: value". No obsolete line folding, no space before the colon.
        if (line.front() == ' ' || line.front() == '\t') return parse_result::bad;
        auto colon = line.find(':');
        if (colon == std::string_view::npos || !is_token(line.substr(0, colon))) return parse_result::bad;
        std::string_view name = line.substr(0, colon), value = trim(line.substr(colon + 1));
        if (iequals(name, "host")) {
            if (r.has_host) return parse_result::bad;
            r.has_host = true;
        } else if (iequals(name, "content-length")) {
            if (!is_digits(value)) return parse_result::bad;
            if (saturating_number(value) > 0) r.has_body = true;
        } else if (iequals(name, "transfer-encoding")) {
            r.has_body = true;
        } else if (iequals(name, "connection")) {
            while (!value.empty()) {
                auto comma = value.find(',');
                std::string_view option = trim(value.substr(0, comma));
                if (iequals(option, "close")) r.close = true;
                if (iequals(option, "keep-alive")) r.keep_alive = true;
                value = comma == std::string_view::npos ? std::string_view() : value.substr(comma + 1);
            }
        } else if (iequals(name, "range")) {
            r.bad_range = !r.range.empty();  // two Range fields: ignore both
            r.range = value;
        } else if (iequals(name, "if-range")) {
            r.if_range = true;
        }
    }
    if (r.minor >= 1 && !r.has_host) return parse_result::bad;  // RFC 9112 3.2: Host is required
    used = pos;
    return parse_result::ok;
}

int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    c = lower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/// Maps a request target to a path relative to the root, in `path`: 0, or the status to
/// answer (400 bad syntax, 404 a path that would leave the root). `dir` is set when the
/// target names a directory ("/", "/sub/").
int target_to_path(std::string_view target, std::string& path, bool& dir) {
    // The absolute form ("http://host/x"), which servers must accept: keep the path.
    for (std::string_view scheme : {"http://", "https://"}) {
        if (istarts_with(target, scheme)) {
            std::string_view rest = target.substr(scheme.size());
            auto end = std::min(rest.find_first_of("/?"), rest.size());
            if (end == 0) return 400;  // no authority
            target = rest.substr(end);
            if (target.empty() || target.front() == '?') target = "/";
        }
    }
    // Not origin-form ("*", the authority form) is refused; the query is ignored.
    if (target.front() != '/') return 400;
    target = target.substr(0, target.find('?'));
    if (target.find('#') != std::string_view::npos) return 400;
    path.clear();
    for (std::size_t i = 0; i < target.size(); ++i) {
        if (target[i] != '%') {
            path += target[i];
            continue;
        }
        int hi = i + 2 < target.size() ? hex_digit(target[i + 1]) : -1;
        int lo = hi >= 0 ? hex_digit(target[i + 2]) : -1;
        if (lo < 0) return 400;
        path += static_cast<char>(hi * 16 + lo);
        i += 2;
    }
    if (path.find('\0') != std::string::npos) return 404;
    dir = path.back() == '/';
    // Segments, in place: drop empty ones and ".", refuse "..": the result never starts
    // with '/' (openat2 refuses absolute paths under RESOLVE_BENEATH anyway). The output
    // never overtakes the input: the leading '/' is not copied.
    std::size_t w = 0;
    for (std::size_t i = 0; i <= path.size();) {
        auto j = std::min(path.find('/', i), path.size());
        std::string_view seg(path.data() + i, j - i);
        if (seg == "..") return 404;
        if (!seg.empty() && seg != ".") {
            if (w) path[w++] = '/';
            std::memmove(path.data() + w, seg.data(), seg.size());
            w += seg.size();
        }
        i = j + 1;
    }
    path.resize(w);
    if (path.empty()) dir = true;
    return 0;
}

/// The Content-Type for `path`'s extension.
std::string_view mime_type(std::string_view path) {
    static constexpr std::pair<std::string_view, std::string_view> types[] = {
        {"html", "text/html; charset=utf-8"},
        {"htm", "text/html; charset=utf-8"},
        {"css", "text/css; charset=utf-8"},
        {"js", "text/javascript; charset=utf-8"},
        {"json", "application/json"},
        {"txt", "text/plain; charset=utf-8"},
        {"png", "image/png"},
        {"jpg", "image/jpeg"},
        {"jpeg", "image/jpeg"},
        {"gif", "image/gif"},
        {"svg", "image/svg+xml"},
        {"ico", "image/x-icon"},
        {"mp4", "video/mp4"},
        {"webm", "video/webm"},
        {"wasm", "application/wasm"},
        {"pdf", "application/pdf"},
    };
    auto name = path.substr(path.rfind('/') + 1);  // npos + 1 == 0
    if (auto dot = name.rfind('.'); dot != std::string_view::npos)
        for (auto& [ext, type] : types)
            if (iequals(name.substr(dot + 1), ext)) return type;
    return "application/octet-stream";
}

enum class range_result { none, ok, unsatisfiable };

/// One "bytes=" range of a `size`-byte file: `ok` with [first, last], `unsatisfiable`,
/// or `none` (no range, several, or malformed: serve the whole file).
range_result parse_range(std::string_view v, std::uint64_t size, std::uint64_t& first, std::uint64_t& last) {
    if (!istarts_with(v, "bytes=")) return range_result::none;
    v = trim(v.substr(6));
    auto dash = v.find('-');
    if (dash == std::string_view::npos || v.find(',') != std::string_view::npos) return range_result::none;
    std::string_view a = v.substr(0, dash), b = v.substr(dash + 1);
    if (a.empty()) {  // "-n": the last n bytes
        if (!is_digits(b)) return range_result::none;
        std::uint64_t n = saturating_number(b);
        if (n == 0) return range_result::unsatisfiable;
        if (size == 0) return range_result::none;  // no byte to name: send the (empty) whole
        first = n >= size ? 0 : size - n;
        last = size - 1;
        return range_result::ok;
    }
    if (!is_digits(a) || (!b.empty() && !is_digits(b))) return range_result::none;
    std::uint64_t from = saturating_number(a), to = b.empty() ? UINT64_MAX : saturating_number(b);
    if (to < from) return range_result::none;  // "100-50" is invalid, not unsatisfiable
    if (from >= size) return range_result::unsatisfiable;
    first = from;
    last = std::min(to, size - 1);
    return range_result::ok;
}

// ---- Responses ---------------------------------------------------------------------

std::string_view reason(int status) {
    switch (status) {
        case 200:
            return "OK";
        case 206:
            return "Partial Content";
        case 400:
            return "Bad Request";
        case 404:
            return "Not Found";
        case 405:
            return "Method Not Allowed";
        case 413:
            return "Content Too Large";
        case 416:
            return "Range Not Satisfiable";
        case 431:
            return "Request Header Fields Too Large";
        case 505:
            return "HTTP Version Not Supported";
        default:
            return "Internal Server Error";
    }
}

void append_number(std::string& out, std::uint64_t v) {
    char digits[24];
    auto end = std::to_chars(digits, digits + sizeof digits, v).ptr;
    out.append(digits, end);
}

/// The status line and the fields every response has. No allocation once `out` has grown.
void begin_response(std::string& out, int status) {
    out.clear();
    out += "HTTP/1.1 ";
    append_number(out, static_cast<std::uint64_t>(status));
    out += ' ';
    out += reason(status);
    out += "\r\nServer: weft\r\n";
}

/// "Content-Length", "Connection" and the empty line.
void end_response(std::string& out, std::uint64_t length, const request& r, bool close) {
    out += "Content-Length: ";
    append_number(out, length);
    if (close)
        out += "\r\nConnection: close";
    else if (r.minor == 0)
        out += "\r\nConnection: keep-alive";
    out += "\r\n\r\n";
}

/// A whole error response (a one-line text body) in `out`.
void error_response(std::string& out, int status, const request& r, bool head, bool close, std::uint64_t size = 0) {
    begin_response(out, status);
    if (status == 405) out += "Allow: GET, HEAD\r\n";
    if (status == 416) {
        out += "Content-Range: bytes */";
        append_number(out, size);
        out += "\r\n";
    }
    out += "Content-Type: text/plain; charset=utf-8\r\n";
    auto text = reason(status);
    end_response(out, text.size() + 1, r, close);
    if (!head) {
        out += text;
        out += '\n';
    }
}

/// An fd closed on scope exit (the naive mode's file).
struct unique_fd {
    int fd = -1;
    unique_fd() = default;
    unique_fd(const unique_fd&) = delete;
    unique_fd& operator=(const unique_fd&) = delete;
    ~unique_fd() { reset(); }
    void reset(int v = -1) {
        if (fd >= 0) ::close(fd);
        fd = v;
    }
};

/// The naive mode's open: a blocking openat2 on the calling thread, still confined to
/// the root (RESOLVE_BENEATH), so --naive changes how files are read, not what is served.
int open_beneath_blocking(int dir, const std::string& path) {
    open_how how{};
    how.flags = open_flags;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;  // as file::open_beneath
    for (;;) {
        long fd = ::syscall(SYS_openat2, dir, path.c_str(), &how, sizeof how);
        if (fd >= 0 || errno != EINTR) return fd >= 0 ? static_cast<int>(fd) : -errno;
    }
}

/// Status for an open or stat that failed with `err`: 404 for every "not there / not
/// yours" error (ENOENT, ENOTDIR, EXDEV and ELOOP from RESOLVE_BENEATH, EACCES, ...).
int status_for(std::error_code err) {
    if (err == std::errc::too_many_files_open || err == std::errc::too_many_files_open_in_system ||
        err == std::errc::not_enough_memory || err == std::errc::io_error)
        return 500;
    return 404;
}

/// The file a request names, once opened: `file` (or, with --naive, `fd`) and its size.
template <class B>
struct opened {
    weft::file<B> file;
    unique_fd fd;  // --naive
    std::uint64_t size = 0;
};

// ---- The session -------------------------------------------------------------------

/// Marks the session busy (answering) or idle (waiting for a request), for the drain.
template <class B>
void set_idle(server_state<B>& st, typename std::list<session_entry<B>>::iterator me, bool idle) {
    std::lock_guard lock(st.mutex);
    me->idle = idle;
}

template <class B>
weft::task<void> session(weft::tcp_stream<B> stream, server_state<B>& st, std::stop_source stop) {
    typename std::list<session_entry<B>>::iterator me;
    {
        std::lock_guard lock(st.mutex);
        me = st.sessions.insert(st.sessions.end(), {&stream, std::move(stop)});
        if (st.draining) (void)stream.shutdown(SHUT_RD);  // arrived as the drain began: reads see EOF
    }
    (void)stream.set_nodelay();  // the header and a small body are two writes: no Nagle wait

    // Per connection, reused by every request: no allocation per request once warm
    // (but for the path handed to open_beneath, by value).
    std::array<char, read_buffer> in;
    std::size_t len = 0;
    std::string out, path;
    out.reserve(512);
    path.reserve(256);
    std::vector<char> chunk;  // --naive

    bool linger = false;  // we close while the client may still send: drain it first
    auto deadline = weft::clock::now() + st.header_timeout;
    for (;;) {
        request req;
        std::size_t used = 0;
        auto parsed = parse_request({in.data(), len}, req, used);
        if (parsed == parse_result::incomplete) {
            auto left = deadline - weft::clock::now();
            if (left <= left.zero()) break;  // header timeout
            auto n = co_await weft::with_timeout(stream.read_some(std::span(in.data() + len, in.size() - len)), left);
            if (!n || *n == 0) break;  // EOF (also the drain's half-close), header timeout, reset, cancel
            len += *n;
            continue;
        }
        set_idle(st, me, false);

        const bool head = parsed == parse_result::ok && req.method == "HEAD";
        bool close = parsed != parse_result::ok || req.has_body || req.close || (req.minor == 0 && !req.keep_alive);
        int status = 0;
        bool dir = false;
        switch (parsed) {
            case parse_result::too_large:
                status = 431;
                break;
            case parse_result::bad:
                status = 400;
                break;
            case parse_result::bad_version:
                status = 505;
                break;
            default:
                if (req.has_body)
                    status = 413;
                else if (req.method != "GET" && !head)
                    status = 405;
                else
                    status = target_to_path(req.target, path, dir);
                if (status == 400) close = true;
        }

        // Open the file (for a directory, its index.html) and learn its size.
        opened<B> f;
        for (int attempt = 0; status == 0 && attempt < 2; ++attempt) {
            if (dir) path += path.empty() ? "index.html" : "/index.html";
            mode_t mode = 0;
            if (st.naive) {
                int fd = open_beneath_blocking(st.root.native_handle(), path);
                struct stat sb;
                if (fd < 0) {
                    status = status_for(std::error_code(-fd, std::generic_category()));
                } else {
                    f.fd.reset(fd);
                    if (::fstat(fd, &sb) != 0) {
                        status = 500;
                    } else {
                        mode = sb.st_mode;
                        f.size = static_cast<std::uint64_t>(sb.st_size);
                    }
                }
            } else {
                auto file = co_await weft::file<B>::open_beneath(st.root, path, open_flags);
                if (!file) {
                    status = status_for(file.error());
                } else {
                    f.file = std::move(*file);
                    auto info = co_await f.file.stat();
                    if (!info) {
                        status = 500;
                    } else {
                        mode = info->mode;
                        f.size = info->size;
                    }
                }
            }
            if (status != 0) break;
            if (S_ISDIR(mode) && !dir) {
                dir = true;  // "/sub" names a directory: try its index.html
                continue;
            }
            if (!S_ISREG(mode)) {
                status = 404;
                break;
            }
            int fd = st.naive ? f.fd.fd : f.file.native_handle();
            // A regular file: block as usual (io_uring would answer EAGAIN instead of
            // waiting for the disk). O_NONBLOCK is the only status flag open_flags sets.
            (void)::fcntl(fd, F_SETFL, 0);
            status = 200;
        }

        std::uint64_t first = 0, last = 0;
        if (status == 200) {
            auto range = req.range.empty() || req.bad_range || req.if_range || head
                             ? range_result::none  // If-Range: we send no validators, so it never matches
                             : parse_range(req.range, f.size, first, last);
            if (range == range_result::unsatisfiable) status = 416;
            if (range == range_result::ok) status = 206;
            if (range == range_result::none && f.size > 0) {
                first = 0;
                last = f.size - 1;
            }
        }

        // The header (with the whole body, for an error), then the file.
        std::uint64_t length = status == 206 || (status == 200 && f.size > 0) ? last - first + 1 : 0;
        if (status == 200 || status == 206) {
            begin_response(out, status);
            out += "Content-Type: ";
            out += mime_type(path);
            out += "\r\nAccept-Ranges: bytes\r\n";
            if (status == 206) {
                out += "Content-Range: bytes ";
                append_number(out, first);
                out += '-';
                append_number(out, last);
                out += '/';
                append_number(out, f.size);
                out += "\r\n";
            }
            end_response(out, length, req, close);
        } else {
            error_response(out, status, req, head, close, f.size);
            length = 0;
        }
        if (head) length = 0;
        if (length > 0 && !st.naive) {
            // Header and body in one operation: the header waits (MSG_MORE) for the body's
            // first bytes, so a small response is one segment, as with nginx's tcp_nopush.
            auto sent = co_await weft::send_file(stream, f.file, first, static_cast<std::size_t>(length),
                                                 std::as_bytes(std::span(out)));
            if (!sent || *sent != out.size() + length) break;  // an error, a file that shrank, a cancel
        } else if (!co_await stream.write_all(out)) {
            break;
        } else if (length > 0) {
            if (chunk.empty()) chunk.resize(naive_chunk);
            std::uint64_t at = first, end = first + length;
            while (at < end) {
                auto want = static_cast<std::size_t>(std::min<std::uint64_t>(end - at, chunk.size()));
                ssize_t n = ::pread(f.fd.fd, chunk.data(), want, static_cast<off_t>(at));  // blocks the loop
                if (n < 0 && errno == EINTR) continue;
                if (n <= 0) break;  // an error, or the file shrank
                if (!co_await stream.write_all(std::span(chunk.data(), static_cast<std::size_t>(n)))) break;
                at += static_cast<std::uint64_t>(n);
            }
            if (at != end) break;
        }
        if (close) {
            linger = true;
            break;
        }
        // The next request: already buffered (pipelined) or still to come.
        std::memmove(in.data(), in.data() + used, len - used);
        len -= used;
        deadline = weft::clock::now() + st.header_timeout;
        set_idle(st, me, true);
    }

    // A close of ours with unread input makes the kernel send a reset, which can destroy
    // the response before the client reads it. So: FIN first, then read and discard what
    // the client still sends, until its EOF (for at most 1 s and 1 MiB).
    if (linger && stream.shutdown(SHUT_WR)) {
        set_idle(st, me, true);  // nothing left to answer: the drain may cancel this
        auto until = weft::clock::now() + 1s;
        for (std::size_t discarded = 0; discarded < 1024 * 1024;) {
            auto left = until - weft::clock::now();
            if (left <= left.zero()) break;
            auto n = co_await weft::with_timeout(stream.read_some(std::span(in)), left);
            if (!n || *n == 0) break;
            discarded += *n;
        }
    }
    std::lock_guard lock(st.mutex);
    st.sessions.erase(me);
}

// ---- Accepting, signals and the drain ----------------------------------------------

template <class B>
weft::task<void> accept_loop(weft::loop<B>& loop, weft::tcp_listener<B>& listener, server_state<B>& st) {
    for (;;) {
        auto client = co_await listener.accept();
        if (client) {
            std::stop_source stop;  // one per session: the drain cancels the idle ones
            auto token = stop.get_token();
            loop.spawn(session(std::move(*client), st, std::move(stop)), std::move(token));
        } else if (!co_await example::keep_accepting(client.error())) {
            co_return;
        }
    }
}

/// The drain's first step (`first`: half-close every session, cancel the idle ones) or
/// its last (cancel them all). The stops are requested outside the lock: a stop runs
/// the cancelled operations' callbacks.
template <class B>
void cancel_sessions(server_state<B>& st, bool first) {
    std::vector<std::stop_source> stops;
    {
        std::lock_guard lock(st.mutex);
        st.draining = true;
        for (auto& s : st.sessions) {
            if (first) (void)s.stream->shutdown(SHUT_RD);
            if (!first || s.idle) stops.push_back(s.stop);
        }
    }
    for (auto& s : stops) s.request_stop();
}

template <class B>
weft::task<int> serve(weft::loop<B>& loop, weft::tcp_listener<B>& listener, weft::signal_set<B>& signals,
                      server_state<B>& st, std::string root) {
    auto dir = co_await weft::file<B>::open(loop, root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (!dir) {
        std::fprintf(stderr, "error: --root %s: %s\n", root.c_str(), dir.error().message().c_str());
        co_return 1;
    }
    st.root = std::move(*dir);
    std::printf("listening on %s\n", listener.local_endpoint().value().to_string().c_str());
    std::fflush(stdout);

    // Serve until SIGTERM or SIGINT: the signal wins the race, and when_any cancels the
    // accept loop (it ends on operation_canceled).
    auto ended = co_await weft::when_any(accept_loop(loop, listener, st), signals.next());
    if (ended.index() == 1) {
        auto sig = std::get<1>(ended);
        std::fprintf(stderr, "file_server: %s, draining\n", sig && *sig == SIGINT ? "SIGINT" : "SIGTERM");
    }
    // The drain: stop accepting; half-close every session's read side, so each finishes
    // the response it is sending, reads EOF and ends. The idle ones are cancelled too:
    // on sigio a read already waiting is not woken by a local shutdown (no signal comes).
    // Whatever is still busy after 4 s is cancelled.
    (void)listener.close();
    cancel_sessions(st, true);
    auto deadline = weft::clock::now() + 4s;
    for (;;) {
        {
            std::lock_guard lock(st.mutex);
            if (st.sessions.empty()) break;
        }
        if (weft::clock::now() >= deadline) {
            cancel_sessions(st, false);
            break;
        }
        (void)co_await weft::sleep_for(5ms);
    }
    co_return 0;
}

template <class B>
int run(const std::string& root, const std::string& listen, std::chrono::seconds header_timeout, bool naive) {
    // The state outlives the loop: sessions the drain gave up on are still running when
    // run() returns, and on `blocking` their threads unregister themselves from `st` as
    // they end, which is when destroying the loop has stopped and joined them.
    server_state<B> st;
    st.header_timeout = header_timeout;
    st.naive = naive;
    weft::loop<B> loop;
    auto listener = weft::tcp_listener<B>::bind(loop, listen);
    if (!listener) {
        std::fprintf(stderr, "error: cannot listen on %s: %s\n", listen.c_str(), listener.error().message().c_str());
        return 1;
    }
    auto signals = weft::signal_set<B>::open(loop, {SIGTERM, SIGINT});
    if (!signals) {
        std::fprintf(stderr, "error: signals: %s\n", signals.error().message().c_str());
        return 1;
    }
    return loop.run(serve(loop, *listener, *signals, st, root));
}

}  // namespace

int main(int argc, char** argv) {
    // As nginx does: a client that vanishes mid-response is an EPIPE, never a signal,
    // and send_file need not block SIGPIPE around each sendfile (two syscalls saved).
    weft::ignore_sigpipe();
    auto args = example::parse(argc, argv, {"--help", "--naive"});
    const char* usage =
        "usage: file_server --root DIR --listen HOST:PORT [--backend NAME] [--header-timeout SECONDS] [--naive]\n"
        "  backends: %s\n";
    if (args.get("--help")) {
        std::printf(usage, weft::all_backends::names().c_str());
        return 0;
    }
    for (auto& [key, value] : args.options) {
        if (key != "--root" && key != "--listen" && key != "--backend" && key != "--header-timeout" &&
            key != "--naive") {
            std::fprintf(stderr, "error: unknown option %s\n", key.c_str());
            return 2;
        }
    }
    if (!args.positional.empty()) {
        std::fprintf(stderr, "error: unexpected argument '%s'\n", args.positional.front().c_str());
        return 2;
    }
    auto root = args.get("--root");
    auto listen = args.get("--listen");
    if (!root || !listen) {
        std::fprintf(stderr, "error: --root DIR and --listen HOST:PORT are required\n");
        std::fprintf(stderr, usage, weft::all_backends::names().c_str());
        return 2;
    }
    struct stat sb;
    if (::stat(root->c_str(), &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        std::fprintf(stderr, "error: --root '%s' is not a directory\n", root->c_str());
        return 2;
    }
    if (auto hp = weft::split_host_port(*listen); !hp) {
        std::fprintf(stderr, "error: --listen '%s': %s\n", listen->c_str(), hp.error().message().c_str());
        return 2;
    }
    auto header_timeout = std::chrono::seconds(
        example::number_or_exit("--header-timeout", args.get("--header-timeout").value_or("10"), 1, 86400));
    bool naive = args.get("--naive").has_value();
    return example::run_on_backend(args.get("--backend").value_or(""),
                                   [&]<class B>() { return run<B>(*root, *listen, header_timeout, naive); });
}

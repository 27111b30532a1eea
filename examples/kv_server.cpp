// A line-based key-value server: the shortest real server weft supports end to end
// (names, TCP, UDP, buffered lines, idle timeouts, signals and a graceful drain).
//
//   kv_server --listen HOST:PORT [--backend NAME] [--idle-timeout SECONDS]
//
// --listen takes names and "[v6]:port" ("localhost:7000", "[::1]:0", ":7000"); port 0
// picks a free port. Prints "listening on HOST:PORT" once ready (the real port).
//
// Protocol: one command per "\n"-terminated line (a trailing "\r" is ignored), one reply
// line each, pipelining allowed:
//   SET key value  -> OK            GET key -> VALUE value | NOT_FOUND
//   DEL key        -> OK | NOT_FOUND  QUIT   -> BYE, then the server closes
//   a line over 4096 bytes -> ERR line too long (the connection stays usable)
//   anything else  -> ERR unknown command
// Keys are one word; the value is the rest of the line. A UDP datagram "STATS" to the same
// host and port gets "KEYS n" back. A session idle for --idle-timeout seconds (default 10)
// is closed.
//
// On SIGTERM or SIGINT it stops accepting, answers the commands it already received,
// closes the sessions as they run dry, and exits 0 within 5 s (sessions still busy after
// 4 s are cancelled). Exit status 2: bad arguments; 3: backend unavailable; 1: other.
#include <weft/weft.hpp>

#include <cstdio>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>

#include "args.hpp"
#include "backend_main.hpp"

namespace {

using namespace std::chrono_literals;

constexpr std::size_t max_line = 4096;

/// The store and the live sessions. The mutex matters only on `backend::blocking`,
/// where every session is a thread; elsewhere it is never contended.
template <class B>
struct server_state {
    std::mutex mutex;
    std::unordered_map<std::string, std::string> store;
    std::list<weft::tcp_stream<B>*> sessions;  // for the drain: half-close each one's read side
    bool draining = false;
    std::chrono::seconds idle_timeout{10};
};

/// Splits off the first word of `s` (space-separated); `s` keeps the rest.
std::string_view first_word(std::string_view& s) {
    auto sp = s.find(' ');
    std::string_view w = s.substr(0, sp);
    s = sp == std::string_view::npos ? std::string_view() : s.substr(sp + 1);
    return w;
}

/// One command line to its reply (without the newline); `quit` is set by QUIT.
template <class B>
std::string execute(server_state<B>& st, std::string_view line, bool& quit) {
    std::string_view rest = line;
    std::string_view cmd = first_word(rest);
    std::lock_guard lock(st.mutex);
    if (cmd == "SET") {
        std::string_view key = first_word(rest);
        if (key.empty()) return "ERR unknown command";
        st.store[std::string(key)] = std::string(rest);
        return "OK";
    }
    if (cmd == "GET" || cmd == "DEL") {
        std::string key(first_word(rest));
        if (key.empty() || !rest.empty()) return "ERR unknown command";
        auto it = st.store.find(key);
        if (it == st.store.end()) return "NOT_FOUND";
        if (cmd == "DEL") {
            st.store.erase(it);
            return "OK";
        }
        return "VALUE " + it->second;
    }
    if (cmd == "QUIT" && rest.empty()) {
        quit = true;
        return "BYE";
    }
    return "ERR unknown command";
}

template <class B>
weft::task<void> session(weft::tcp_stream<B> stream, server_state<B>& st) {
    weft::buffered_reader<weft::tcp_stream<B>> reader(std::move(stream));
    typename std::list<weft::tcp_stream<B>*>::iterator me;
    {
        std::lock_guard lock(st.mutex);
        me = st.sessions.insert(st.sessions.end(), &reader.stream());
        if (st.draining) (void)reader.stream().shutdown(SHUT_RD);  // arrived as the drain began
    }
    std::string out;
    bool quit = false;
    while (!quit) {
        // "\r\n" counts in the raw line: a 4096-byte command with "\r\n" still fits.
        auto line = co_await weft::with_timeout(reader.read_line(max_line + 2), st.idle_timeout);
        if (line) {
            if (line->size() > max_line)
                out += "ERR line too long";
            else
                out += execute(st, *line, quit);
            out += '\n';
        } else if (line.error() == weft::errc::line_too_long) {
            out += "ERR line too long\n";  // the rest of that line is skipped; go on
        } else {
            break;  // EOF (also after the drain's half-close), idle timeout, reset, cancel
        }
        // Pipelining: answer in one write once no complete line is buffered.
        auto buffered = reader.buffered();
        bool more = std::find(buffered.begin(), buffered.end(), std::byte{'\n'}) != buffered.end();
        if (!more || quit || out.size() > 64 * 1024) {
            if (!co_await reader.stream().write_all(out)) break;
            out.clear();
        }
    }
    if (!out.empty()) (void)co_await reader.stream().write_all(out);
    std::lock_guard lock(st.mutex);
    st.sessions.erase(me);
}

template <class B>
weft::task<void> accept_loop(weft::loop<B>& loop, weft::tcp_listener<B>& listener, server_state<B>& st,
                             std::stop_token sessions_token) {
    for (;;) {
        auto client = co_await listener.accept();
        if (client) {
            loop.spawn(session(std::move(*client), st), sessions_token);
        } else if (!co_await example::keep_accepting(client.error())) {
            co_return;
        }
    }
}

/// Answers "STATS" datagrams with the number of keys.
template <class B>
weft::task<void> stats_loop(weft::udp_socket<B>& udp, server_state<B>& st) {
    std::array<char, 512> buf;
    for (;;) {
        auto d = co_await udp.receive_from(buf);
        if (!d) {
            if (d.error() == std::errc::operation_canceled) co_return;
            continue;  // a truncated or refused datagram: not ours to answer
        }
        std::string_view req(buf.data(), d->size);
        while (!req.empty() && (req.back() == '\n' || req.back() == '\r')) req.remove_suffix(1);
        std::string reply;
        if (req == "STATS") {
            std::lock_guard lock(st.mutex);
            reply = "KEYS " + std::to_string(st.store.size()) + "\n";
        } else {
            reply = "ERR unknown command\n";
        }
        (void)co_await udp.send_to(reply, d->from);
    }
}

template <class B>
weft::task<void> serve(weft::loop<B>& loop, weft::tcp_listener<B>& listener, weft::udp_socket<B>& udp,
                       weft::signal_set<B>& signals, server_state<B>& st) {
    std::stop_source cancel_sessions;
    // Serve until SIGTERM or SIGINT: the signal wins the race, and when_any cancels the
    // loops (they end on operation_canceled).
    auto ended = co_await weft::when_any(accept_loop(loop, listener, st, cancel_sessions.get_token()),
                                         stats_loop(udp, st), signals.next());
    if (ended.index() == 2) {
        auto sig = std::get<2>(ended);
        std::fprintf(stderr, "kv_server: %s, draining\n", sig && *sig == SIGINT ? "SIGINT" : "SIGTERM");
    }
    // The drain: stop accepting; half-close every session's read side, so each answers
    // what it already received, reads EOF and ends; cancel whatever is still busy after 4 s.
    (void)listener.close();
    (void)udp.close();
    {
        std::lock_guard lock(st.mutex);
        st.draining = true;
        for (auto* s : st.sessions) (void)s->shutdown(SHUT_RD);
    }
    // Then wait for the cancelled ones to end too: on `blocking` a session is a thread
    // that runs on until its next operation sees the cancel, and it uses `st`.
    auto deadline = weft::clock::now() + 4s;
    bool cancelled = false;
    for (;;) {
        {
            std::lock_guard lock(st.mutex);
            if (st.sessions.empty()) break;
        }
        if (!cancelled && weft::clock::now() >= deadline) {
            cancel_sessions.request_stop();
            cancelled = true;
        }
        if (weft::clock::now() >= deadline + 1s) break;  // the loop's teardown ends the rest
        (void)co_await weft::sleep_for(5ms);
    }
}

template <class B>
int run(const std::string& listen, std::chrono::seconds idle) {
    // The state outlives the loop: destroying the loop stops and joins `blocking`'s
    // session threads, which use it until they end.
    server_state<B> st;
    st.idle_timeout = idle;
    weft::loop<B> loop;
    auto listener = weft::tcp_listener<B>::bind(loop, listen);
    if (!listener) {
        std::fprintf(stderr, "error: cannot listen on %s: %s\n", listen.c_str(), listener.error().message().c_str());
        return 1;
    }
    auto where = listener->local_endpoint().value();
    auto udp = weft::udp_socket<B>::bind(loop, where);  // the same address and port, for STATS
    if (!udp) {
        std::fprintf(stderr, "error: cannot bind UDP %s: %s\n", where.to_string().c_str(),
                     udp.error().message().c_str());
        return 1;
    }
    auto signals = weft::signal_set<B>::open(loop, {SIGTERM, SIGINT});
    if (!signals) {
        std::fprintf(stderr, "error: signals: %s\n", signals.error().message().c_str());
        return 1;
    }
    std::printf("listening on %s\n", where.to_string().c_str());
    std::fflush(stdout);
    loop.run(serve(loop, *listener, *udp, *signals, st));
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    auto args = example::parse(argc, argv);
    if (args.get("--help")) {
        std::printf("usage: kv_server --listen HOST:PORT [--backend NAME] [--idle-timeout SECONDS]\n  backends: %s\n",
                    weft::all_backends::names().c_str());
        return 0;
    }
    auto listen = args.get("--listen");
    if (!listen) {
        std::fprintf(stderr, "error: --listen HOST:PORT is required\n");
        return 2;
    }
    if (auto hp = weft::split_host_port(*listen); !hp) {
        std::fprintf(stderr, "error: --listen '%s': %s\n", listen->c_str(), hp.error().message().c_str());
        return 2;
    }
    auto idle = std::chrono::seconds(
        example::number_or_exit("--idle-timeout", args.get("--idle-timeout").value_or("10"), 1, 86400));
    return example::run_on_backend(args.get("--backend").value_or(""),
                                   [&]<class B>() { return run<B>(*listen, idle); });
}

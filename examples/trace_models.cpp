// The IO models' diagrams, shown live: one request and its answer served by the same
// coroutine on every backend, with trace mode on (built with WEFT_TRACE=1), and what
// each backend did printed per backend, or side by side.
//
//   trace_models [--backend NAME] [--side-by-side NAME,NAME[,...]] [--width 60]
//
// The server task accepts one connection, reads "ping", answers "PING", and reads
// again to the end of the stream. The client is a plain blocking socket on a thread of
// its own (not weft's, so none of its calls are traced): it connects 20 ms after the
// server starts and sends 20 ms after connecting, so the readiness models show the
// accept and the read finding nothing first (EAGAIN), parking, and being woken.
// Each line is tagged with the thread that made it: [t1] is the loop's, [t2] the task
// thread of `blocking`. A backend that cannot run here is listed with the reason.
#include <weft/choose.hpp>
#include <weft/weft.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "args.hpp"

#if !WEFT_TRACE
#error "trace_models needs trace mode: build it with -DWEFT_TRACE=1 (CMake does)"
#endif

namespace {

/// Collects the trace lines of one run (the blocking backend traces from its threads).
struct collector {
    std::mutex mutex;
    std::vector<std::string> lines;
    static void sink(void* self, std::string_view line) noexcept {
        auto* c = static_cast<collector*>(self);
        std::lock_guard lock(c->mutex);
        try {
            c->lines.emplace_back(line);
        } catch (...) {  // out of memory: the line is lost, the run goes on
        }
    }
};

void discard(void*, std::string_view) noexcept {}

/// The traced side: one connection, one request, one answer, then EOF.
template <class B>
weft::task<std::string> serve_one(weft::tcp_listener<B>& listener) {
    auto s = co_await listener.accept();
    if (!s) co_return "accept: " + s.error().message();
    std::array<char, 64> buf;
    auto n = co_await s->read_some(buf);
    if (!n) co_return "read: " + n.error().message();
    for (std::size_t i = 0; i < *n; ++i)
        buf[i] = static_cast<char>(buf[i] >= 'a' && buf[i] <= 'z' ? buf[i] - 32 : buf[i]);
    auto w = co_await s->write_all(std::span(buf.data(), *n));
    if (!w) co_return "write: " + w.error().message();
    auto end = co_await s->read_some(buf);
    if (!end || *end != 0) co_return "expected the end of the stream";
    co_return "";
}

/// The untraced side: a plain blocking client on its own thread.
void client(std::uint16_t port, std::string& answer) {
    using namespace std::chrono_literals;
    std::this_thread::sleep_for(20ms);
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        answer = "client: connect failed";
        if (fd >= 0) ::close(fd);
        return;
    }
    std::this_thread::sleep_for(20ms);
    if (::send(fd, "ping", 4, MSG_NOSIGNAL) != 4) answer = "client: send failed";
    char buf[4];
    std::size_t got = 0;
    while (got < 4) {
        ssize_t r = ::recv(fd, buf + got, 4 - got, 0);
        if (r <= 0) break;
        got += static_cast<std::size_t>(r);
    }
    if (answer.empty()) answer.assign(buf, got);
    ::close(fd);
}

/// One traced run on `B`: its trace lines, or why it could not run.
template <class B>
std::vector<std::string> trace_one() {
    auto status = weft::probe_backend<B>();
    if (!status.available) return {"(not available here: " + status.reason + ")"};
    collector c;
    std::string answer, error;
    {
        weft::loop<B> loop;
        auto listener = weft::tcp_listener<B>::bind(loop, weft::endpoint::loopback_v4(0));
        if (!listener) return {"(cannot listen: " + listener.error().message() + ")"};
        std::thread peer(client, listener->local_endpoint().value().port(), std::ref(answer));
        weft::trace::set_sink(&collector::sink, &c);
        try {
            error = loop.run(serve_one(*listener));
        } catch (const std::exception& e) {
            error = e.what();
        }
        weft::trace::set_sink(&discard);
        peer.join();
    }
    std::lock_guard lock(c.mutex);
    if (!error.empty()) c.lines.push_back("(server: " + error + ")");
    if (answer != "PING") c.lines.push_back("(client got '" + answer + "', expected 'PING')");
    return std::move(c.lines);
}

/// Collapses a block of up to 4 lines that repeats: spin's retries fill thousands of
/// lines while the client sleeps, and their count is the point, not the lines.
std::vector<std::string> collapse_repeats(const std::vector<std::string>& lines) {
    std::vector<std::string> out;
    std::size_t i = 0;
    while (i < lines.size()) {
        std::size_t best_k = 0, best_reps = 1;
        for (std::size_t k = 1; k <= 4 && i + k <= lines.size(); ++k) {
            std::size_t reps = 1;
            while (i + (reps + 1) * k <= lines.size() &&
                   std::equal(lines.begin() + static_cast<long>(i), lines.begin() + static_cast<long>(i + k),
                              lines.begin() + static_cast<long>(i + reps * k)))
                ++reps;
            if (reps >= 3 && reps * k > best_reps * std::max<std::size_t>(best_k, 1)) {
                best_k = k;
                best_reps = reps;
            }
        }
        if (best_k == 0) {
            out.push_back(lines[i++]);
            continue;
        }
        out.insert(out.end(), lines.begin() + static_cast<long>(i), lines.begin() + static_cast<long>(i + best_k));
        out.push_back("     ... the " + (best_k == 1 ? std::string("line") : std::to_string(best_k) + " lines") +
                      " above, " + std::to_string(best_reps - 1) + " times more");
        i += best_k * best_reps;
    }
    return out;
}

void print_one(std::string_view name, const std::vector<std::string>& lines) {
    std::printf("== %.*s: accept, read \"ping\", write \"PING\", read to EOF ==\n", static_cast<int>(name.size()),
                name.data());
    for (auto& l : lines) std::printf("%s\n", l.c_str());
    std::printf("\n");
}

void print_side_by_side(const std::vector<std::pair<std::string, std::vector<std::string>>>& runs, std::size_t width) {
    std::size_t rows = 0;
    for (auto& [name, lines] : runs) rows = std::max(rows, lines.size());
    auto cell = [&](const std::string& text) {
        std::string t = text.size() > width ? text.substr(0, width - 1) + "~" : text;
        t.resize(width, ' ');
        return t;
    };
    std::string head, rule;
    for (auto& [name, lines] : runs) {
        head += cell(name) + " | ";
        rule += std::string(width, '-') + "-+-";
    }
    std::printf("%s\n%s\n", head.c_str(), rule.c_str());
    for (std::size_t r = 0; r < rows; ++r) {
        std::string row;
        for (auto& [name, lines] : runs) row += cell(r < lines.size() ? lines[r] : "") + " | ";
        std::printf("%s\n", row.c_str());
    }
}

}  // namespace

int main(int argc, char** argv) {
    auto args = example::parse(argc, argv);
    if (args.get("--help")) {
        std::printf(
            "usage: trace_models [--backend NAME] [--side-by-side NAME,NAME[,...]] [--width N]\n"
            "  backends: %s\n",
            weft::all_backends::names().c_str());
        return 0;
    }
    weft::trace::set_sink(&discard);  // what loops do before a traced run (the wake-up fd's setup) is not shown
    std::vector<std::string> wanted;
    bool columns = false;
    if (auto list = args.get("--side-by-side")) {
        columns = true;
        std::string_view rest = *list;
        while (!rest.empty()) {
            auto comma = rest.find(',');
            wanted.emplace_back(rest.substr(0, comma));
            rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
        }
    } else if (auto one = args.get("--backend")) {
        wanted.push_back(*one);
    }
    std::size_t width = example::number_or_exit("--width", args.get("--width").value_or("60"), 20, 400);
    for (auto& w : wanted) {
        if (!weft::with_backend(w, []<class B>() {})) {
            std::fprintf(stderr, "error: unknown backend '%s' (backends: %s)\n", w.c_str(),
                         weft::all_backends::names().c_str());
            return 2;
        }
    }
    std::vector<std::pair<std::string, std::vector<std::string>>> runs;
    weft::all_backends::each([&]<class B>() {
        if (!wanted.empty() && std::find(wanted.begin(), wanted.end(), B::name) == wanted.end()) return;
        runs.emplace_back(std::string(B::name), collapse_repeats(trace_one<B>()));
    });
    if (columns) {
        print_side_by_side(runs, width);
    } else {
        for (auto& [name, lines] : runs) print_one(name, lines);
    }
    return 0;
}

// weft-doctor: what this machine and process offer weft, and which backends run here.
//
//   weft-doctor [--json]
//
// Prints the kernel, io_uring's availability (and if not, exactly why: WEFT_DISABLE_URING,
// kernel.io_uring_disabled, a seccomp profile, ENOSYS, memlock), the ring features and
// opcodes weft uses with the kernel release that brought each, the limits that matter to
// a server (RLIMIT_NOFILE, RLIMIT_SIGPENDING, RLIMIT_MEMLOCK, net.core.somaxconn,
// net.ipv4.ip_local_port_range), and for every backend built in whether it can run here
// and the limits that apply to it. --json prints the same as one JSON object, for
// scripts. Exit status 0, or 2 for a bad argument.
#include <weft/choose.hpp>

#include <sys/utsname.h>

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace {

/// One limit: its name, its value as text, and what it bounds.
struct limit {
    std::string name, value, about;
};

std::vector<limit> limits() {
    auto rlim = [](int resource) {
        rlimit l{};
        if (::getrlimit(resource, &l) != 0) return std::string("unknown");
        auto text = [](rlim_t v) { return v == RLIM_INFINITY ? std::string("unlimited") : std::to_string(v); };
        return text(l.rlim_cur) + " (hard " + text(l.rlim_max) + ")";
    };
    auto proc = [](const char* path) {
        std::string v = weft::detail::read_line(path);
        for (char& c : v)
            if (c == '\t') c = ' ';
        return v.empty() ? std::string("unknown") : v;
    };
    return {
        {"RLIMIT_NOFILE", rlim(RLIMIT_NOFILE), "open fds: one per connection, listener, file"},
        {"RLIMIT_SIGPENDING", rlim(RLIMIT_SIGPENDING), "queued real-time signals (sigio: one per event)"},
        {"RLIMIT_MEMLOCK", rlim(RLIMIT_MEMLOCK), "locked memory (io_uring rings before kernel 5.12)"},
        {"RLIMIT_NPROC", rlim(RLIMIT_NPROC), "threads (blocking: one per task)"},
        {"net.core.somaxconn", proc("/proc/sys/net/core/somaxconn"), "cap on a listener's backlog"},
        {"net.ipv4.ip_local_port_range", proc("/proc/sys/net/ipv4/ip_local_port_range"),
         "ephemeral ports for outgoing connections"},
        {"kernel.io_uring_disabled", proc("/proc/sys/kernel/io_uring_disabled"),
         "0 allowed, 1 only kernel.io_uring_group, 2 nobody"},
    };
}

/// `s` as a JSON string literal.
std::string quoted(std::string_view s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
            out += buf;
        } else {
            out += c;
        }
    }
    return out + "\"";
}

std::string kernel() {
    utsname u{};
    if (::uname(&u) != 0) return "unknown";
    return std::string(u.sysname) + " " + u.release + " " + u.machine;
}

int text_report() {
    std::printf("kernel: %s\n", kernel().c_str());
#if WEFT_HAS_URING
    const weft::uring_probe u = weft::probe_uring();
    if (u.available) {
        std::printf("io_uring: available\n");
        for (const auto& f : u.features)
            std::printf("  %-52s %-4s (kernel %s)\n", std::string(f.name).c_str(), f.present ? "yes" : "no",
                        std::string(f.since).c_str());
        std::string missing;
        std::size_t present = 0;
        for (const auto& o : u.opcodes) {
            if (o.present)
                ++present;
            else
                missing += " " + std::string(o.name);
        }
        std::printf("  opcodes weft uses: %zu of %zu supported%s%s\n", present, u.opcodes.size(),
                    missing.empty() ? "" : "; missing:", missing.c_str());
    } else {
        std::printf("io_uring: unavailable: %s\n", u.reason.c_str());
    }
#else
    std::printf("io_uring: not built in (weft was built without liburing)\n");
#endif
    std::printf("limits:\n");
    for (const limit& l : limits()) std::printf("  %-30s %-28s %s\n", l.name.c_str(), l.value.c_str(), l.about.c_str());
    std::printf("backends:\n");
    for (const weft::backend_status& b : weft::backend_report()) {
        std::printf("  %-9s %s\n", std::string(b.name).c_str(),
                    b.available ? "runs here" : ("unavailable: " + b.reason).c_str());
        for (const std::string& n : b.notes) std::printf("            note: %s\n", n.c_str());
    }
    return 0;
}

int json_report() {
    std::string j = "{\n  \"kernel\": " + quoted(kernel()) + ",\n  \"io_uring\": ";
#if WEFT_HAS_URING
    const weft::uring_probe u = weft::probe_uring();
    j += "{\"built\": true, \"available\": " + std::string(u.available ? "true" : "false");
    j += ", \"reason\": " + quoted(u.reason) + ", \"features\": [";
    for (std::size_t i = 0; i < u.features.size(); ++i)
        j += std::string(i ? ", " : "") + "{\"name\": " + quoted(u.features[i].name) +
             ", \"since\": " + quoted(u.features[i].since) +
             ", \"present\": " + (u.features[i].present ? "true" : "false") + "}";
    j += "], \"opcodes\": [";
    for (std::size_t i = 0; i < u.opcodes.size(); ++i)
        j += std::string(i ? ", " : "") + "{\"name\": " + quoted(u.opcodes[i].name) +
             ", \"since\": " + quoted(u.opcodes[i].since) +
             ", \"present\": " + (u.opcodes[i].present ? "true" : "false") + "}";
    j += "]}";
#else
    j += "{\"built\": false, \"available\": false, \"reason\": \"weft was built without liburing\", "
         "\"features\": [], \"opcodes\": []}";
#endif
    j += ",\n  \"limits\": {";
    const auto ls = limits();
    for (std::size_t i = 0; i < ls.size(); ++i)
        j += std::string(i ? ", " : "") + quoted(ls[i].name) + ": " + quoted(ls[i].value);
    j += "},\n  \"backends\": [";
    const auto bs = weft::backend_report();
    for (std::size_t i = 0; i < bs.size(); ++i) {
        j += std::string(i ? "," : "") + "\n    {\"name\": " + quoted(bs[i].name) +
             ", \"available\": " + (bs[i].available ? "true" : "false") + ", \"reason\": " + quoted(bs[i].reason) +
             ", \"notes\": [";
        for (std::size_t k = 0; k < bs[i].notes.size(); ++k) j += std::string(k ? ", " : "") + quoted(bs[i].notes[k]);
        j += "]}";
    }
    j += "\n  ]\n}\n";
    std::fputs(j.c_str(), stdout);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    bool json = false;
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        if (a == "--json") {
            json = true;
        } else if (a == "--help" || a == "-h") {
            std::printf("usage: weft-doctor [--json]\n");
            return 0;
        } else {
            std::fprintf(stderr, "error: unknown argument '%s' (usage: weft-doctor [--json])\n", argv[i]);
            return 2;
        }
    }
    return json ? json_report() : text_report();
}

// Shared by the examples and benchmark programs: `--name value` / `--name=value`
// parsing, and stopping a loop on SIGINT/SIGTERM.
#pragma once

#include <algorithm>
#include <atomic>
#include <charconv>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace example {

/// Parsed `--key value` / `--key=value` options plus positional arguments.
struct args {
    std::vector<std::pair<std::string, std::string>> options;
    std::vector<std::string> positional;

    /// The value of `--key`, if given.
    std::optional<std::string> get(std::string_view key) const {
        for (auto& [k, v] : options)
            if (k == key) return v;
        return std::nullopt;
    }
};

/// Parses argv; `flags` lists options that take no value (e.g. "--help").
inline args parse(int argc, char** argv, std::vector<std::string_view> flags = {"--help"}) {
    args a;
    for (int i = 1; i < argc; ++i) {
        std::string_view s = argv[i];
        if (s.starts_with("--")) {
            if (auto eq = s.find('='); eq != std::string_view::npos) {
                a.options.emplace_back(std::string(s.substr(0, eq)), std::string(s.substr(eq + 1)));
            } else if (std::find(flags.begin(), flags.end(), s) != flags.end()) {
                a.options.emplace_back(std::string(s), "");
            } else if (i + 1 < argc) {
                a.options.emplace_back(std::string(s), argv[++i]);
            } else {
                std::fprintf(stderr, "error: option %s needs a value\n", argv[i]);
                std::exit(2);
            }
        } else {
            a.positional.emplace_back(s);
        }
    }
    return a;
}

/// Parses a decimal number in [lo, hi] or exits with a message naming the option.
inline unsigned long number_or_exit(const char* option, const std::string& text, unsigned long lo, unsigned long hi) {
    unsigned long v = 0;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc{} || p != text.data() + text.size() || v < lo || v > hi) {
        std::fprintf(stderr, "error: %s must be a number %lu..%lu, got '%s'\n", option, lo, hi, text.c_str());
        std::exit(2);
    }
    return v;
}

/// Parses `on` or `off` (true for on) or exits with a message naming the option.
inline bool on_off_or_exit(const char* option, const std::string& text) {
    if (text != "on" && text != "off") {
        std::fprintf(stderr, "error: %s must be on or off, not '%s'\n", option, text.c_str());
        std::exit(2);
    }
    return text == "on";
}

/// Parses a port number 0..65535 or exits with a message naming the bad value.
inline std::uint16_t port_or_exit(const std::string& text) {
    return static_cast<std::uint16_t>(number_or_exit("--port", text, 0, 65535));
}

namespace detail {
// Lock-free atomics: the only shared state a signal handler may touch.
inline std::atomic<void (*)(void*)> g_stop{nullptr};
inline std::atomic<void*> g_loop{nullptr};
inline void on_signal(int) {
    if (auto stop = g_stop.load()) stop(g_loop.load());
}
}  // namespace detail

/// Makes SIGINT and SIGTERM stop `loop` (`loop::stop()` is async-signal-safe). Call
/// `stop_on_signals<Loop>(nullptr)` before the loop is destroyed.
template <class Loop>
void stop_on_signals(Loop* loop) {
    detail::g_stop = nullptr;  // never call through a half-updated pair
    detail::g_loop = loop;
    if (loop) detail::g_stop = +[](void* l) { static_cast<Loop*>(l)->stop(); };
    std::signal(SIGINT, detail::on_signal);
    std::signal(SIGTERM, detail::on_signal);
}

}  // namespace example

// What the example programs' main() functions share beyond argument parsing (args.hpp)
// and --host/--port (endpoint_arg.hpp): running the program on the backend named by
// --backend with the same exit statuses everywhere.
#pragma once

#include <weft/choose.hpp>
#include <weft/weft.hpp>

#include "accept.hpp"
#include "endpoint_arg.hpp"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <system_error>

namespace example {

/// The backend a program runs on when no `--backend` is given: the first that can run
/// here of io_uring, edge-triggered epoll and poll. Prints the choice, and why it passed
/// over the ones before it, to stderr ("backend: epoll_et (uring: ...)").
inline std::string first_available_backend() {
#if WEFT_HAS_URING
    auto choice = weft::first_available<weft::backend::uring, weft::backend::epoll_et, weft::backend::poll>();
#else
    auto choice = weft::first_available<weft::backend::epoll_et, weft::backend::poll>();
#endif
    std::fprintf(stderr, "backend: %s\n", choice.describe().c_str());
    return std::string(choice.chosen);
}

/// Runs `f.template operator()<B>()` (which returns the exit status) for the backend named
/// `name`, or for `first_available_backend()` when `name` is empty (no `--backend`).
/// Exit status 2: no such backend; 3: the backend is not available in this process
/// (io_uring disabled, for instance); 1: it failed to start for another reason.
template <class F>
int run_on_backend(std::string name, F&& f) {
    if (name.empty()) {
        name = first_available_backend();
        if (name.empty()) return 3;
    }
    int rc = 2;
    try {
        if (!weft::with_backend(name, [&]<class B>() { rc = f.template operator()<B>(); })) {
            std::fprintf(stderr, "error: unknown backend '%s' (choose from: %s)\n", name.c_str(),
                         weft::all_backends::names().c_str());
            return 2;
        }
    } catch (const std::system_error& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return e.code() == weft::errc::backend_unavailable ? 3 : 1;
    }
    return rc;
}

}  // namespace example

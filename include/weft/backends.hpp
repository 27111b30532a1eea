// SPDX-License-Identifier: MIT
/// @file
/// @brief The list of backends compiled into this build, and choosing one by name.
///
/// Programs that take `--backend NAME` (the examples, the benchmark) instantiate their
/// code for every backend here and pick one at run time with `with_backend`. A new
/// backend is appended to `all_backends` and nothing else changes.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include "backend/blocking.hpp"
#include "backend/epoll.hpp"
#include "backend/poll.hpp"
#include "backend/select.hpp"
#include "backend/sigio.hpp"
#include "backend/spin.hpp"
#if WEFT_HAS_URING
#include "backend/uring.hpp"
#endif

namespace weft {

/// A compile-time list of backend types.
template <class... Bs>
struct backend_list {
    /// Calls `f.template operator()<B>()` for the backend whose `name` is `name`;
    /// returns false (and calls nothing) if no backend has that name.
    template <class F>
    static bool with(std::string_view name, F&& f) {
        return ((Bs::name == name ? (f.template operator()<Bs>(), true) : false) || ...);
    }
    /// Calls `f.template operator()<B>()` for every backend, in order.
    template <class F>
    static void each(F&& f) {
        (f.template operator()<Bs>(), ...);
    }
    /// The names, comma-separated, for usage messages: "epoll_lt, epoll_et".
    static std::string names() {
        std::string s;
        ((s += (s.empty() ? "" : ", "), s += Bs::name), ...);
        return s;
    }
};

/// Every backend in this build, in the order reports list them (`uring` only when weft
/// was built with liburing: `WEFT_HAS_URING`, which the CMake target defines).
#if WEFT_HAS_URING
using all_backends = backend_list<backend::select, backend::poll, backend::epoll_lt, backend::epoll_et,
                                  backend::sigio, backend::spin, backend::blocking, backend::uring>;
#else
using all_backends = backend_list<backend::select, backend::poll, backend::epoll_lt, backend::epoll_et,
                                  backend::sigio, backend::spin, backend::blocking>;
#endif

/// `all_backends::with(name, f)`: runs `f.template operator()<B>()` for the backend named `name`.
template <class F>
bool with_backend(std::string_view name, F&& f) {
    return all_backends::with(name, std::forward<F>(f));
}

}  // namespace weft

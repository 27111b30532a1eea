// What the example servers' accept loops do with a failed accept, shared by the
// all-backends examples (through backend_main.hpp) and the one-backend programs in
// models/, which must not pull in every backend.
#pragma once

#include <weft/task.hpp>
#include <weft/timer.hpp>

#include <chrono>
#include <cstdio>
#include <system_error>

namespace example {

/// What an accept loop does with a failed accept: false when it should end (the
/// listener was closed or the loop is stopping: `operation_canceled`). Out of fds
/// (`EMFILE`/`ENFILE`), weft has already shed the pending connection: back off 10 ms.
/// Anything else is printed and the loop goes on.
inline weft::task<bool> keep_accepting(std::error_code error) {
    using namespace std::chrono_literals;
    if (error == std::errc::too_many_files_open || error == std::errc::too_many_files_open_in_system) {
        (void)co_await weft::sleep_for(10ms);
    } else if (error == std::errc::operation_canceled) {
        co_return false;
    } else {
        std::fprintf(stderr, "accept: %s\n", error.message().c_str());
    }
    co_return true;
}

}  // namespace example

// SPDX-License-Identifier: MIT
/// @file
/// @brief Umbrella header: everything public in weft.
#pragma once

#include "backend/blocking.hpp"
#include "backend/concepts.hpp"
#include "backend/epoll.hpp"
#include "backend/poll.hpp"
#include "backend/reactor.hpp"
#include "backend/select.hpp"
#include "backend/sigio.hpp"
#include "backend/spin.hpp"
#if WEFT_HAS_URING
#include "backend/uring.hpp"
#endif
#include "backends.hpp"
#include "buffers.hpp"
#include "cancel.hpp"
#include "channel.hpp"
#include "core.hpp"
#include "file.hpp"
#include "io.hpp"
#include "loop.hpp"
#include "net/buffered.hpp"
#include "net/endpoint.hpp"
#include "net/resolve.hpp"
#include "net/tcp.hpp"
#include "net/udp.hpp"
#include "net/unix.hpp"
#include "result.hpp"
#include "runtime.hpp"
#include "signal.hpp"
#include "sys.hpp"
#include "task.hpp"
#include "timer.hpp"
#include "trace.hpp"
#include "version.hpp"

/// weft: one coroutine networking API over every classic Linux IO model.
namespace weft {
/// The IO models, one backend type each.
namespace backend {}
}  // namespace weft

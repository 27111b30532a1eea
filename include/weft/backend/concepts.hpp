// SPDX-License-Identifier: MIT
/// @file
/// @brief The Backend contract, written twice: in prose here and as C++20 concepts below.
///
/// A backend is the part of a `loop<Backend>` that waits for the kernel. Every backend:
/// - has `static constexpr std::string_view name` ("epoll_et", ...), the name used on
///   command lines and in reports, and `static constexpr backend_kind kind`;
/// - has `static bool available() noexcept`: can this process use it right now;
/// - is constructed from the loop's `detail::loop_core&` (it completes operations by
///   calling `core.complete(op, res)`; it never resumes a coroutine itself: the loop
///   resumes them after the event scan, so a resumed coroutine may start or close
///   operations freely);
/// - has `socket_flags`, the flags its sockets are created with (reactors need
///   `SOCK_NONBLOCK`; a completion or blocking backend does not);
/// - `attach(fd)` when a socket is opened and `detach(fd)` before it is closed;
///   `detach` completes every operation still pending on that fd with `-ECANCELED`;
/// - `wait(timeout)` sleeps at most `timeout` (`clock::duration::max()` = until woken),
///   completes whatever became ready and returns;
/// - `wake()` interrupts `wait` from any thread and from a signal handler.
///
/// Every backend also has `options` (a struct of settings; empty for reactors) and is
/// constructed from `(loop_core&, options)`.
///
/// A *proactor* backend (completion model) also:
/// - `submit(op)`: queue `op` (its `prepare` fills the submission); the loop submits once
///   per iteration. 0 or -errno. The backend calls `op.finish(res)` per completion; false
///   means "submit again" (a partial write, for instance);
/// - `cancel(op)`: ask the kernel to cancel `op`; it still completes exactly once, with
///   its real result if it had already finished;
/// - `forget(op)`: `op`'s frame is being destroyed: cancel it and wait for its
///   completion before returning, so the kernel never writes into freed memory.
///
/// A *reactor* backend (readiness model) also parks operations:
/// - `should_try(fd, dir)`: whether trying the syscall now may succeed (edge-triggered
///   backends remember when a socket was drained); `note_drained(fd, dir, eagain)`
///   records an `EAGAIN` (`eagain` true) or a short read or write (false);
/// - `park(op)`: keep `op` until its fd is ready, then call `op.perform` (the syscall
///   again); `perform` returning false (still `EAGAIN`) keeps it parked, so spurious
///   readiness never reaches user code. 0 or -errno (`-EBUSY` when another operation
///   of the same direction is parked on the fd);
/// - `defer(op)`: run `op.perform` on the next iteration (the cooperative budget ran out);
/// - `cancel(op)`: complete a parked `op` with `-ECANCELED`; `forget(op)`: drop it silently
///   (its frame is being destroyed).
#pragma once

#include <concepts>
#include <cstdint>
#include <string_view>

#include "../core.hpp"

namespace weft {

/// How a backend performs IO; the one place where code paths differ is `io_awaiter`.
enum class backend_kind {
    reactor,   ///< readiness: "tell me when I can try" (select, poll, epoll, sigio, spin)
    proactor,  ///< completion: "do it, tell me when done" (io_uring)
    blocking,  ///< the syscall itself blocks the task's own thread
};

/// Which half of a socket an operation waits for; also an index.
enum class interest : std::uint8_t {
    read = 0,   ///< readable: data, a connection to accept, EOF or an error
    write = 1,  ///< writable: send-buffer space, a finished connect, or an error
};

namespace detail {
/// A reactor operation: the backend calls `perform` when its fd looks ready.
/// `perform` returns true when the operation finished (`res` holds the result) and
/// false when it would still block.
struct reactor_op : op_base {
    bool (*perform)(reactor_op&) noexcept = nullptr;
    int fd = -1;
    interest dir = interest::read;
    bool deferred = false;     ///< waiting in the backend's retry list rather than on readiness
    bool buffer_wait = false;  ///< waiting for a provided buffer to come back (receive)
    bool buffer_woken = false; ///< woken by a returned buffer, retry not yet run: owns that wake-up
};
/// A proactor operation: the backend calls `prepare` to fill a submission (through a
/// backend-specific preparer) and `finish` with each completion's result.
struct proactor_op : op_base {
    void (*prepare)(proactor_op&, void* preparer) noexcept = nullptr;
    /// Hands one completion to the operation: `flags` holds the CQE's flags in its low 32
    /// bits and, in its high 32, where a provided buffer's bytes start (uring's
    /// incremental buffer consumption puts several receives in one buffer).
    bool (*finish)(proactor_op&, int res, std::uint64_t flags) noexcept = nullptr;
    int fd = -1;
    interest dir = interest::read;
    bool cancel_requested = false;  ///< an async cancel for it is already queued
    bool abandoned = false;         ///< its frame is dying: complete silently
    bool held = false;              ///< waiting in backend state, not in the kernel (accept, buffers)
    bool uses_buffers = false;      ///< receives into the backend's provided buffers
    bool buffer_woken = false;      ///< resubmitted because a provided buffer came back
    bool fixed = false;             ///< its fd is in the ring's registered file table (slot = fd number)
    std::uint32_t generation = 0;   ///< the fd's generation when submitted: a later one means "closed since"
    std::uint8_t cancels_out = 0;   ///< async cancels of it whose completion has not arrived (they name it)
};
}  // namespace detail

/// Every backend: a name, availability, a wait step, a wake-up, socket registration.
template <class B>
concept io_backend = requires(B& b, const B& cb, detail::loop_core& core, clock::duration timeout, int fd) {
    { B::name } -> std::convertible_to<std::string_view>;
    { B::kind } -> std::convertible_to<backend_kind>;
    { B::socket_flags } -> std::convertible_to<int>;
    { B::available() }
    noexcept->std::same_as<bool>;
    typename B::options;
    requires std::constructible_from<B, detail::loop_core&, typename B::options>;
    {b.wait(timeout)};
    { b.wake() }
    noexcept;
    { b.attach(fd) }
    noexcept->std::same_as<int>;
    { b.detach(fd) }
    noexcept;
    { cb.core() }
    noexcept->std::same_as<detail::loop_core&>;
};

/// A readiness backend: parks operations until their fd is ready, then re-runs them.
template <class B>
concept reactor_backend = io_backend<B> &&(B::kind == backend_kind::reactor) &&
                          requires(B& b, const B& cb, detail::reactor_op& op, int fd, interest dir) {
    { cb.should_try(fd, dir) }
    noexcept->std::same_as<bool>;
    { b.note_drained(fd, dir, true) }
    noexcept;
    { b.park(op) }
    noexcept->std::same_as<int>;
    {b.defer(op)};
    { b.cancel(op) }
    noexcept;
    { b.forget(op) }
    noexcept;
};

/// A completion backend: the kernel performs each operation and reports its result.
template <class B>
concept proactor_backend = io_backend<B> &&(B::kind == backend_kind::proactor) &&
                           requires(B& b, detail::proactor_op& op) {
    { b.submit(op) }
    noexcept->std::same_as<int>;
    { b.cancel(op) }
    noexcept;
    { b.forget(op) }
    noexcept;
};

}  // namespace weft

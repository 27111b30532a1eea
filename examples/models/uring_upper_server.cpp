// The asynchronous upper-case server (backend::uring, io_uring): the same server code as
// blocking_upper_server.cpp and select_upper_server.cpp (models/upper_server.hpp). On
// the readiness models a task asks "can I read?" and then reads; here it asks the
// kernel to read and is told when the bytes are in its buffer.
//
// What the model does with that code:
//   - `read_some(buf)` fills a submission queue entry (IORING_OP_RECV into `buf`) and
//     parks the task; no syscall yet;
//   - once every ready task has run, one io_uring_enter(2) submits all the loop's
//     entries and waits for completions (with DEFER_TASKRUN, only when asked);
//   - a completion carries the byte count: the task resumes with its data already in
//     `buf`, no second call; `write_all` is an IORING_OP_SEND the same way;
//   - the buffer belongs to the kernel while the read is in flight, so closing or
//     cancelling first cancels the read and waits for its completion (docs/lifetime.md).
//   `receive()` goes one step further: one multishot recv per connection into buffers
//   the loop provides, so an idle connection holds none (docs/io-models.md).
//
// What it costs, measured by benchmarks/run.py on the 2-core test machine (2026-12-01,
// server CPU per echoed 64-byte message, depth 1; benchmarks/results/REPORT.md; the
// benchmark's server reads with receive()):
//   64 connections:    8.1 µs/msg, 117,700 msgs/s, 1.0 syscalls/msg (epoll_et: 8.4 µs, 2.0)
//   1000 connections:  9.1 µs/msg, 104,000 msgs/s, 0.5 syscalls/msg (epoll_et: 9.4 µs, 2.0)
// Fewer syscalls than any readiness model, but on loopback the kernel's TCP work is
// most of each message, so CPU per message differs by a few percent.
//
//   uring_upper_server [--port 0] [--host 127.0.0.1]
// Exits 3 if io_uring cannot start in this process (weft-doctor says why).
#include <weft/backend/uring.hpp>

#include <cstdio>

#include "upper_server.hpp"

int main(int argc, char** argv) {
    if (!weft::backend::uring::available()) {
        std::fprintf(stderr, "uring_upper_server: io_uring is not available here (run weft-doctor for the reason)\n");
        return 3;
    }
    return models::main_on<weft::backend::uring>("uring_upper_server", argc, argv);
}

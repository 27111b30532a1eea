// The upper-case server on the oldest model: blocking IO, a thread per connection
// (backend::blocking). The server code is models/upper_server.hpp, shared word for word
// with select_upper_server.cpp: only the backend below differs.
//
// What the model does with that code:
//   - every task is a thread of its own: `accept()` is accept(2) blocking the acceptor's
//     thread, each `spawn(session(...))` starts a thread, and in it `read_some` is one
//     recv(2) that sleeps in the kernel until bytes arrive;
//   - nothing multiplexes: the kernel's scheduler is the event loop, and a connection
//     costs a thread (its stack, and a context switch per message);
//   - a stop interrupts the threads' blocking calls (see backend/blocking.hpp).
//
// What it costs, measured by benchmarks/run.py on the 2-core test machine (2026-12-01,
// server CPU per echoed 64-byte message, depth 1; benchmarks/results/REPORT.md):
//   64 connections:    19.2 µs/msg, 52,000 msgs/s, 3.0 syscalls/msg (epoll_et: 8.4 µs)
//   1000 connections:  23.4 µs/msg, 43,600 msgs/s, 3.0 syscalls/msg (epoll_et: 9.4 µs)
// With one connection it ties the event loops (17.8 µs against epoll_et's 17.9): it is
// the switching between many threads that costs, not the blocking call.
//
//   blocking_upper_server [--port 0] [--host 127.0.0.1]
#include <weft/backend/blocking.hpp>

#include "upper_server.hpp"

int main(int argc, char** argv) {
    return models::main_on<weft::backend::blocking>("blocking_upper_server", argc, argv);
}

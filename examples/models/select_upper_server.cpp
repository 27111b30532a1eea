// The upper-case server on select(2) (backend::select): the same server code as
// blocking_upper_server.cpp (models/upper_server.hpp), one thread for every client.
//
// What the model does with that code: the loop keeps a read list and a write list, the
// two fd_sets the textbooks draw.
//   - `read_some` first tries recv(2) on the non-blocking socket; when it says EAGAIN
//     the task parks and its fd joins the read list;
//   - `write_all` sends what it can; when the socket buffer is full (a client that does
//     not read its answers) the rest waits with its fd on the write list;
//   - one select() per loop iteration waits on copies of both lists (select overwrites
//     its arguments), then the loop scans every fd up to the highest one to find which
//     are ready and resumes their tasks;
//   - fds from FD_SETSIZE (1024) up cannot be in an fd_set at all: weft refuses them
//     with `weft::errc::fd_too_large` (and close it) rather than write past the set;
//     weft-doctor prints the limit against this process's RLIMIT_NOFILE.
//
// What it costs, measured by benchmarks/run.py on the 2-core test machine (2026-12-01,
// server CPU per echoed 64-byte message, depth 1; benchmarks/results/REPORT.md):
//   64 connections:    11.2 µs/msg, 87,500 msgs/s, 3.0 syscalls/msg (epoll_et: 8.4 µs)
//   1000 connections:   9.5 µs/msg, 106,000 msgs/s, 2.0 syscalls/msg (epoll_et: 9.4 µs)
//   10,000 connections: cannot run (FD_SETSIZE)
// At 1000 busy connections one select() finds many fds ready, which pays for its scan.
//
//   select_upper_server [--port 0] [--host 127.0.0.1]
#include <weft/backend/select.hpp>

#include "upper_server.hpp"

int main(int argc, char** argv) { return models::main_on<weft::backend::select>("select_upper_server", argc, argv); }

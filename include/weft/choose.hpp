// SPDX-License-Identifier: MIT
/// @file
/// @brief Which backends can run in this process, why the others cannot, and running a
/// program with the first one that can.
///
/// io_uring is not available everywhere: Docker's default seccomp profile refuses it,
/// `kernel.io_uring_disabled` turns it off, and old kernels lack the parts weft uses.
/// A program that prefers `uring` names its fallbacks in order:
///
/// @code
/// auto choice = weft::with_first_available<weft::backend::uring, weft::backend::epoll_et>(
///     []<class B>() { weft::loop<B> loop; /* ... */ });
/// std::printf("backend: %s\n", choice.describe().c_str());   // "epoll_et (uring: ...)"
/// @endcode
///
/// `backend_report()` says for every backend in this build whether it can run and, if
/// not, exactly why; `weft-doctor` prints it with the machine's limits.
#pragma once

#include <sys/mman.h>
#include <sys/resource.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "backends.hpp"

namespace weft {

/// What probing one backend found.
struct backend_status {
    std::string_view name;           ///< the backend's `B::name`
    bool available = false;          ///< a loop of it can start in this process now
    std::string reason;              ///< why it cannot (empty when available)
    std::vector<std::string> notes;  ///< limits that apply although it runs (e.g. select's `FD_SETSIZE`)
};

namespace detail {

/// The first line of a file under /proc or /sys, without its newline; empty if it
/// cannot be read (no such file in this kernel or container).
inline std::string read_line(const char* path) {
    std::string line;
    if (std::FILE* f = std::fopen(path, "re")) {
        char buf[256];
        if (std::fgets(buf, sizeof buf, f)) line = buf;
        std::fclose(f);
    }
    while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.pop_back();
    return line;
}

/// `RLIMIT_*` soft limit as text ("unlimited" or the number).
inline std::string soft_limit(int resource) {
    rlimit lim{};
    if (::getrlimit(resource, &lim) != 0) return "unknown";
    if (lim.rlim_cur == RLIM_INFINITY) return "unlimited";
    return std::to_string(lim.rlim_cur);
}

/// Why io_uring cannot be used here: `err` is `io_uring_setup`'s negative errno.
inline std::string uring_refusal(int err) {
    const std::string disabled = read_line("/proc/sys/kernel/io_uring_disabled");
    switch (-err) {
        case EPERM:
            if (disabled == "2") return "kernel.io_uring_disabled = 2: io_uring is off for every process (EPERM)";
            if (disabled == "1")
                return "kernel.io_uring_disabled = 1: only members of kernel.io_uring_group (gid " +
                       read_line("/proc/sys/kernel/io_uring_group") + ") or CAP_SYS_ADMIN may create rings (EPERM)";
            return "io_uring_setup refused with EPERM: a seccomp profile blocks it (Docker's default does), "
                   "or a security module";
        case ENOSYS:
            return "io_uring_setup is not implemented (ENOSYS): a kernel without io_uring (before 5.1, or "
                   "CONFIG_IO_URING off), or a seccomp profile that answers ENOSYS";
        case ENOMEM:
            return "io_uring_setup failed with ENOMEM: kernels before 5.12 charge rings to RLIMIT_MEMLOCK (" +
                   soft_limit(RLIMIT_MEMLOCK) + " bytes here)";
        case EMFILE:
        case ENFILE:
            return "no file descriptor left for the ring (" + std::string(std::strerror(-err)) + ")";
        default:
            return std::string("io_uring_setup failed: ") + std::strerror(-err);
    }
}

}  // namespace detail

#if WEFT_HAS_URING
/// What this kernel's io_uring offers of what weft's `uring` backend uses: each part has
/// a fallback (see `backend::uring::options`), so a missing one costs speed, not
/// function, except buffer rings, without which `receive()` fails.
struct uring_probe {
    /// A ring could be created. When false, `reason` says why and nothing else is known.
    bool available = false;
    std::string reason;  ///< why not (`WEFT_DISABLE_URING`, `io_uring_disabled`, seccomp...)
    /// Optional parts, each with the kernel that brought it, and whether this one has it.
    struct part {
        std::string_view name;   ///< what it is
        std::string_view since;  ///< the kernel release that added it
        bool present = false;    ///< this kernel has it
    };
    std::vector<part> features;  ///< setup flags, ring features, buffer-ring modes
    std::vector<part> opcodes;   ///< the operations weft submits
};

/// Probes io_uring with throwaway rings: the setup flags weft asks for, the
/// `IORING_FEAT_*` bits, buffer-ring registration (plain and incremental), and the
/// opcodes (`io_uring_get_probe_ring`).
inline uring_probe probe_uring() {
    uring_probe out;
    if (const char* off = backend::uring::disabled_by_environment()) {
        out.reason = std::string("WEFT_DISABLE_URING=") + off + " in the environment";
        return out;
    }
    io_uring ring;
    io_uring_params p{};
    if (int err = io_uring_queue_init_params(4, &ring, &p); err < 0) {
        out.reason = detail::uring_refusal(err);
        return out;
    }
    out.available = true;
    auto setup_takes = [](unsigned flags) {
        io_uring r;
        io_uring_params q{};
        q.flags = flags;
        if (io_uring_queue_init_params(2, &r, &q) < 0) return false;
        io_uring_queue_exit(&r);
        return true;
    };
    auto buffer_ring_takes = [&](std::uint16_t flags, std::uint16_t group) {
        void* mem = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
        if (mem == MAP_FAILED) return false;
        io_uring_buf_reg reg{};
        reg.ring_addr = reinterpret_cast<std::uintptr_t>(mem);
        reg.ring_entries = 1;
        reg.bgid = group;
        backend::uring_abi::set_ring_flags(reg, flags);
        const bool ok = io_uring_register_buf_ring(&ring, &reg, 0) == 0;
        if (ok) (void)io_uring_unregister_buf_ring(&ring, group);
        ::munmap(mem, 4096);
        return ok;
    };
    out.features = {
        {"IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN", "6.1",
         setup_takes(IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN)},
        {"IORING_SETUP_COOP_TASKRUN", "5.19", setup_takes(IORING_SETUP_COOP_TASKRUN)},
        {"IORING_FEAT_NODROP", "5.5", (p.features & IORING_FEAT_NODROP) != 0},
        {"IORING_FEAT_FAST_POLL", "5.7", (p.features & IORING_FEAT_FAST_POLL) != 0},
        {"buffer rings (io_uring_register_buf_ring)", "5.19", buffer_ring_takes(0, 0)},
        {"incremental buffer consumption (IOU_PBUF_RING_INC)", "6.12",
         buffer_ring_takes(backend::uring_abi::pbuf_ring_inc, 1)},
        {"receive bundles (IORING_FEAT_RECVSEND_BUNDLE)", "6.10",
         (p.features & backend::uring_abi::feat_recvsend_bundle) != 0},
        {"registered ring fd (io_uring_register_ring_fd)", "5.18", io_uring_register_ring_fd(&ring) == 1},
    };
    struct named {
        int op;
        std::string_view name, since;
    };
    static constexpr named ops[] = {
        {IORING_OP_RECV, "RECV", "5.6"},         {IORING_OP_SEND, "SEND", "5.6"},
        {IORING_OP_RECVMSG, "RECVMSG", "5.3"},   {IORING_OP_SENDMSG, "SENDMSG", "5.3"},
        {IORING_OP_ACCEPT, "ACCEPT", "5.5"},     {IORING_OP_CONNECT, "CONNECT", "5.5"},
        {IORING_OP_POLL_ADD, "POLL_ADD", "5.1"}, {IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL", "5.5"},
        {IORING_OP_TIMEOUT, "TIMEOUT", "5.4"},   {IORING_OP_READ, "READ", "5.6"},
        {IORING_OP_WRITE, "WRITE", "5.6"},       {IORING_OP_READV, "READV", "5.1"},
        {IORING_OP_WRITEV, "WRITEV", "5.1"},     {IORING_OP_FSYNC, "FSYNC", "5.1"},
        {IORING_OP_STATX, "STATX", "5.6"},       {IORING_OP_OPENAT, "OPENAT", "5.6"},
        {IORING_OP_OPENAT2, "OPENAT2", "5.6"},   {IORING_OP_CLOSE, "CLOSE", "5.6"},
        {IORING_OP_SPLICE, "SPLICE", "5.7"},     {IORING_OP_NOP, "NOP", "5.1"},
    };
    io_uring_probe* probe = io_uring_get_probe_ring(&ring);
    for (const named& o : ops)
        out.opcodes.push_back({o.name, o.since, probe && io_uring_opcode_supported(probe, o.op)});
    if (probe) io_uring_free_probe(probe);
    io_uring_queue_exit(&ring);
    return out;
}
#endif

/// Probes backend `B`: can a loop of it start in this process, and what limits apply.
/// Cheap enough to call at start-up (uring creates and destroys one small ring).
template <class B>
backend_status probe_backend() {
    backend_status s;
    s.name = B::name;
    s.available = true;
    if constexpr (requires { B::fd_limit; }) {  // a backend that refuses fds from some number up
        rlimit lim{};
        if (B::fd_limit < (1 << 30) && ::getrlimit(RLIMIT_NOFILE, &lim) == 0 &&
            lim.rlim_cur > static_cast<rlim_t>(B::fd_limit))
            s.notes.push_back("fds from " + std::to_string(B::fd_limit) +
                              " up are refused (FD_SETSIZE), and this process may open " +
                              detail::soft_limit(RLIMIT_NOFILE) +
                              " (RLIMIT_NOFILE): sockets past it fail with "
                              "fd_too_large");
    }
    if constexpr (B::name == "sigio")
        s.notes.push_back("one queued real-time signal per readiness event; RLIMIT_SIGPENDING = " +
                          detail::soft_limit(RLIMIT_SIGPENDING) + " (past it, a SIGIO sweep retries every fd)");
    if constexpr (B::name == "spin") s.notes.push_back("never sleeps: one CPU busy while the loop runs");
    if constexpr (B::name == "blocking")
        s.notes.push_back("a thread per task; RLIMIT_NPROC = " + detail::soft_limit(RLIMIT_NPROC) +
                          ", kernel.threads-max = " + detail::read_line("/proc/sys/kernel/threads-max"));
#if WEFT_HAS_URING
    if constexpr (std::is_same_v<B, backend::uring>) {
        uring_probe u = probe_uring();
        s.available = u.available;
        s.reason = std::move(u.reason);
        for (const auto& f : u.features)
            if (!f.present) s.notes.push_back(std::string(f.name) + ": missing (kernel " + std::string(f.since) + ")");
        for (const auto& o : u.opcodes)
            if (!o.present)
                s.notes.push_back("IORING_OP_" + std::string(o.name) + ": missing (kernel " + std::string(o.since) +
                                  ")");
    }
#endif
    return s;
}

/// Every backend in this build (`all_backends`), probed in order.
inline std::vector<backend_status> backend_report() {
    std::vector<backend_status> out;
    all_backends::each([&]<class B>() { out.push_back(probe_backend<B>()); });
    return out;
}

/// What `with_first_available` chose, and why it passed over the backends before it.
struct backend_choice {
    std::string_view chosen;              ///< the backend that ran (empty: none could)
    std::vector<backend_status> skipped;  ///< the ones before it that cannot run here, with reasons
    /// True if a backend ran.
    explicit operator bool() const noexcept { return !chosen.empty(); }
    /// "uring", or "epoll_et (uring: kernel.io_uring_disabled = 2 ...)", or "none (...)".
    std::string describe() const {
        std::string s = chosen.empty() ? "none" : std::string(chosen);
        for (std::size_t i = 0; i < skipped.size(); ++i) {
            s += i == 0 ? " (" : "; ";
            s += std::string(skipped[i].name) + ": " + skipped[i].reason;
        }
        if (!skipped.empty()) s += ")";
        return s;
    }
};

/// The first of `Bs` that can start in this process (see `probe_backend`), and why the
/// ones before it cannot: for a program that prints its choice before it runs, then
/// runs with `with_backend(choice.chosen, f)`.
template <class... Bs>
backend_choice first_available() {
    backend_choice choice;
    auto attempt = [&]<class B>() {
        if (!choice.chosen.empty()) return;
        backend_status s = probe_backend<B>();
        if (s.available)
            choice.chosen = B::name;
        else
            choice.skipped.push_back(std::move(s));
    };
    (attempt.template operator()<Bs>(), ...);
    return choice;
}

/// Runs `f.template operator()<B>()` with the first of `Bs` that can start in this
/// process, and returns which one it was and why the ones before it could not. Calls
/// nothing when none can (the result is then false).
template <class... Bs, class F>
backend_choice with_first_available(F&& f) {
    backend_choice choice = first_available<Bs...>();
    if (choice) backend_list<Bs...>::with(choice.chosen, std::forward<F>(f));
    return choice;
}

}  // namespace weft

// Choosing a backend at run time (choose.hpp): every backend's probe, the reasons a
// backend cannot run, and with_first_available's fallback. io_uring is refused here the
// way a container refuses it: a seccomp filter on io_uring_setup, installed on one
// thread only (seccomp filters and no_new_privs are per thread), so the rest of the
// process keeps its rings.
#include <weft/choose.hpp>

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <thread>

#include "helpers.hpp"

using namespace weft_test;

TEMPLATE_TEST_CASE("a backend's probe says whether it runs here, and a loop of one that does starts", "[choose]",
                   WEFT_TEST_BACKENDS) {
    using B = TestType;
    const weft::backend_status s = weft::probe_backend<B>();
    REQUIRE(s.name == B::name);
    if (!B::available()) {  // uring with WEFT_DISABLE_URING=1 (a CI step), or io_uring refused
        REQUIRE_FALSE(s.available);
        REQUIRE_FALSE(s.reason.empty());
        WARN(B::name << " unavailable: " << s.reason);
        return;
    }
    REQUIRE(s.available);
    REQUIRE(s.reason.empty());
    weft::loop<B> loop;
    auto slept = loop.run([]() -> weft::task<bool> { co_return static_cast<bool>(co_await weft::sleep_for(1ms)); }());
    REQUIRE(slept);
}

TEST_CASE("backend_report lists every backend built in, in order", "[choose]") {
    const auto report = weft::backend_report();
    std::string names;
    for (const auto& s : report) names += (names.empty() ? "" : ", ") + std::string(s.name);
    REQUIRE(names == weft::all_backends::names());
}

TEST_CASE("with_first_available runs the program once, on the first backend that can run", "[choose]") {
    int calls = 0;
    std::string_view ran;
    auto choice = weft::with_first_available<weft::backend::poll, weft::backend::select>([&]<class B>() {
        ++calls;
        ran = B::name;
        weft::loop<B> loop;
        (void)loop.run([]() -> weft::task<void> { co_return; }());
    });
    REQUIRE(choice);
    REQUIRE(calls == 1);
    REQUIRE(ran == "poll");
    REQUIRE(choice.chosen == "poll");
    REQUIRE(choice.skipped.empty());
    REQUIRE(choice.describe() == "poll");
}

TEST_CASE("select notes FD_SETSIZE when the process may open more fds than it can watch", "[choose]") {
    rlimit saved{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved) == 0);
    if (saved.rlim_max <= FD_SETSIZE) {
        WARN("the hard fd limit is " << saved.rlim_max << ": cannot raise the soft one past FD_SETSIZE");
        return;
    }
    auto has_note = [] {
        for (const auto& n : weft::probe_backend<weft::backend::select>().notes)
            if (n.find("FD_SETSIZE") != std::string::npos) return true;
        return false;
    };
    rlimit low = saved, high = saved;
    low.rlim_cur = FD_SETSIZE;
    high.rlim_cur = std::min<rlim_t>(saved.rlim_max, 4 * FD_SETSIZE);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
    const bool at_limit = has_note();
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &high) == 0);
    const bool above = has_note();
    const bool poll_notes = !weft::probe_backend<weft::backend::poll>().notes.empty();
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &saved) == 0);
    REQUIRE_FALSE(at_limit);
    REQUIRE(above);
    REQUIRE_FALSE(poll_notes);  // poll watches any fd
}

#if WEFT_HAS_URING
namespace {

/// Runs `f` on a thread of its own whose `io_uring_setup` fails with `err`, as under a
/// container's seccomp profile (Docker's default refuses io_uring with EPERM). Returns
/// false if the filter could not be installed (then `f` did not run).
template <class F>
bool with_io_uring_refused(int err, F f) {
    bool installed = false;
    std::thread t([&] {
        sock_filter code[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (static_cast<unsigned>(err) & SECCOMP_RET_DATA)),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        sock_fprog prog{static_cast<unsigned short>(std::size(code)), code};
        // Both apply to this thread only (no SECCOMP_FILTER_FLAG_TSYNC).
        if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return;
        if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) return;
        installed = true;
        f();
    });
    t.join();
    return installed;
}

}  // namespace

TEST_CASE("io_uring refused by a seccomp filter: uring is unavailable with the reason, and the next backend runs",
          "[choose][uring]") {
    WEFT_REQUIRE_BACKEND(weft::backend::uring);  // (with WEFT_DISABLE_URING set, the variable is the reason)
    for (int err : {EPERM, ENOSYS}) {
        INFO("io_uring_setup fails with " << std::strerror(err));
        weft::backend_status status;
        weft::backend_choice choice, none;
        std::string_view ran;
        const bool installed = with_io_uring_refused(err, [&] {
            status = weft::probe_backend<weft::backend::uring>();
            choice = weft::with_first_available<weft::backend::uring, weft::backend::epoll_et>(
                [&]<class B>() { ran = B::name; });
            none = weft::with_first_available<weft::backend::uring>([&]<class B>() { ran = "called"; });
        });
        if (!installed) {
            WARN("cannot install a seccomp filter here");
            return;
        }
        REQUIRE_FALSE(status.available);
        if (err == EPERM) {
            // (Unless the sysctl itself is set: then the report names it instead.)
            const std::string sysctl = weft::detail::read_line("/proc/sys/kernel/io_uring_disabled");
            if (sysctl.empty() || sysctl == "0") REQUIRE(status.reason.find("seccomp") != std::string::npos);
            REQUIRE(status.reason.find("EPERM") != std::string::npos);
        } else {
            REQUIRE(status.reason.find("ENOSYS") != std::string::npos);
        }
        REQUIRE(choice);
        REQUIRE(ran == "epoll_et");
        REQUIRE(choice.chosen == "epoll_et");
        REQUIRE(choice.skipped.size() == 1);
        REQUIRE(choice.skipped[0].name == "uring");
        REQUIRE(choice.describe() == "epoll_et (uring: " + status.reason + ")");
        REQUIRE_FALSE(none);
        REQUIRE(none.describe().starts_with("none (uring: "));
    }
    // The rest of the process still has io_uring.
    if (weft::backend::uring::available()) REQUIRE(weft::probe_backend<weft::backend::uring>().available);
}

TEST_CASE("WEFT_DISABLE_URING makes uring unavailable, naming the variable", "[choose][uring]") {
    const char* before = std::getenv("WEFT_DISABLE_URING");
    const std::string saved = before ? before : "";
    ::setenv("WEFT_DISABLE_URING", "1", 1);
    const auto status = weft::probe_backend<weft::backend::uring>();
    ::setenv("WEFT_DISABLE_URING", "0", 1);  // "0" means enabled
    const auto enabled = weft::probe_backend<weft::backend::uring>();
    if (before)
        ::setenv("WEFT_DISABLE_URING", saved.c_str(), 1);
    else
        ::unsetenv("WEFT_DISABLE_URING");
    REQUIRE_FALSE(status.available);
    REQUIRE(status.reason == "WEFT_DISABLE_URING=1 in the environment");
    if (weft::backend::uring::available()) REQUIRE(enabled.available);
}

TEST_CASE("the io_uring probe reports the ring features and opcodes weft uses", "[choose][uring]") {
    const auto u = weft::probe_uring();
    if (!u.available) {
        WARN("io_uring unavailable: " << u.reason);
        return;
    }
    REQUIRE_FALSE(u.features.empty());
    REQUIRE_FALSE(u.opcodes.empty());
    for (const auto& o : u.opcodes) {
        INFO(o.name);
        REQUIRE(o.present);  // every opcode weft submits exists on the kernels it runs on (5.7+ for SPLICE)
    }
    // What the backend itself found agrees with the probe.
    weft::loop<weft::backend::uring> loop(weft::backend::uring::options{.bundles = true});
    const auto f = loop.backend().features();
    for (const auto& p : u.features) {
        if (p.name.starts_with("IORING_SETUP_SINGLE_ISSUER")) REQUIRE(p.present == f.defer_taskrun);
        if (p.name == "IORING_FEAT_NODROP") REQUIRE(p.present == f.nodrop);
        if (p.name.starts_with("receive bundles")) REQUIRE(p.present == f.bundles);
    }
}
#endif

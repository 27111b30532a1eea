// What a batched UDP receive saves: the receiving loop's CPU time per datagram, one
// datagram per receive (`receive_from`) against up to 16 per receive (`receive_batch`:
// `recvmmsg` on reactors; on uring, one ring completion plus one non-blocking
// `recvmmsg`), on each backend.
//
//   udp_batch [--backends epoll_et,uring] [--datagrams N] [--size BYTES] [--repetitions R]
//             [--receiver-cpu C] [--sender-cpu C]
//
// A sender thread (plain `sendmmsg`, 32 per call) sends bursts of 256 datagrams, each
// once the receiver has taken the last one of the previous burst, and then one datagram
// to a second socket that tells the receiver the burst is complete: the receiver drains a
// full queue (the case batching is for; were it reading while the burst arrives, it would
// keep up and find one datagram per receive), the kernel never drops a datagram, and both
// modes receive the same N datagrams. Reported:
// the receiving thread's CPU (user + system) per datagram and datagrams per second,
// medians of R runs. Pin the two threads to different CPUs on a quiet machine.
//
// For uring, a third row is a hand-written liburing receiver with a multishot `recvmsg`
// on a provided-buffer ring (one submission, one completion per datagram, no syscall
// per datagram): the reference for whether weft's uring batch should use it.
#include <weft/weft.hpp>

#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#if WEFT_HAS_URING
#include <liburing.h>
#endif

#include "args.hpp"

namespace {

double thread_cpu_seconds() {
    rusage u{};
    ::getrusage(RUSAGE_THREAD, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

void pin(int cpu) {
    if (cpu < 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    ::pthread_setaffinity_np(::pthread_self(), sizeof set, &set);
}

struct sample {
    double cpu_ns_per_datagram;
    double datagrams_per_second;
    double per_receive = 1;  ///< datagrams per completed receive
};

/// Sends `n` datagrams of `size` bytes to `to` in bursts of `burst`, each after the
/// receiver has caught up, each followed by one datagram to `go`.
void send_all(const weft::endpoint& to, const weft::endpoint& go, long n, std::size_t size,
              const std::atomic<long>& received, int cpu) {
    pin(cpu);
    int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    std::vector<char> payload(size, 'u');
    constexpr int batch = 32;
    constexpr long burst = 256;
    mmsghdr msgs[batch]{};
    iovec iov[batch];
    for (int i = 0; i < batch; ++i) {
        iov[i] = {payload.data(), size};
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = const_cast<sockaddr*>(to.data());
        msgs[i].msg_hdr.msg_namelen = to.size();
    }
    long sent = 0;
    while (sent < n) {
        while (received.load(std::memory_order_acquire) < sent) std::this_thread::yield();
        long end = std::min(n, sent + burst);
        while (sent < end) {
            int k = static_cast<int>(std::min<long>(batch, end - sent));
            int r = ::sendmmsg(fd, msgs, static_cast<unsigned>(k), 0);
            if (r > 0) sent += r;
        }
        ::sendto(fd, "g", 1, 0, go.data(), go.size());
    }
    ::close(fd);
}

template <class B>
sample run_once(bool batched, long n, std::size_t size, int rx_cpu, int tx_cpu) {
    pin(rx_cpu);
    weft::loop<B> loop;
    auto rx = weft::udp_socket<B>::bind(loop, weft::endpoint::loopback_v4(0)).value();
    (void)rx.set_receive_buffer_size(1 << 20);
    auto to = rx.local_endpoint().value();
    auto ctl = weft::udp_socket<B>::bind(loop, weft::endpoint::loopback_v4(0)).value();
    auto go = ctl.local_endpoint().value();
    std::atomic<long> received{0};
    long receives = 0;
    double cpu0 = 0, cpu1 = 0;
    auto t0 = weft::clock::now();
    auto body = [&]() -> weft::task<void> {
        std::thread sender(send_all, to, go, n, size, std::cref(received), tx_cpu);
        cpu0 = thread_cpu_seconds();
        t0 = weft::clock::now();
        std::array<char, 8> g;
        long burst_end = 0;
        auto next_burst = [&]() -> weft::task<bool> {  // waits until the next whole burst is queued
            if (received.load(std::memory_order_relaxed) < burst_end) co_return true;
            if (!co_await ctl.receive_from(g)) co_return false;
            burst_end = std::min(n, burst_end + 256);
            co_return true;
        };
        if (batched) {
            std::vector<std::vector<std::byte>> bufs(16, std::vector<std::byte>(size + 1));
            std::array<weft::datagram_slot, 16> slots{};
            for (std::size_t i = 0; i < slots.size(); ++i) slots[i].buffer = bufs[i];
            while (received.load(std::memory_order_relaxed) < n) {
                if (received.load(std::memory_order_relaxed) >= burst_end && !co_await next_burst()) break;
                auto k = co_await rx.receive_batch(slots);
                if (!k) break;
                ++receives;
                received.fetch_add(static_cast<long>(*k), std::memory_order_release);
            }
        } else {
            std::vector<std::byte> buf(size + 1);
            while (received.load(std::memory_order_relaxed) < n) {
                if (received.load(std::memory_order_relaxed) >= burst_end && !co_await next_burst()) break;
                auto d = co_await rx.receive_from(buf);
                if (!d) break;
                ++receives;
                received.fetch_add(1, std::memory_order_release);
            }
        }
        cpu1 = thread_cpu_seconds();
        sender.join();
    };
    loop.run(body());
    double secs = std::chrono::duration<double>(weft::clock::now() - t0).count();
    return {(cpu1 - cpu0) * 1e9 / static_cast<double>(n), static_cast<double>(n) / secs,
            static_cast<double>(n) / static_cast<double>(std::max(receives, 1L))};
}

#if WEFT_HAS_URING
/// The reference: multishot `recvmsg` into a buffer ring, in plain liburing.
sample raw_multishot(long n, std::size_t size, int rx_cpu, int tx_cpu) {
    pin(rx_cpu);
    io_uring ring;
    if (io_uring_queue_init(256, &ring, 0) < 0) return {0, 0};
    int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    auto any = weft::endpoint::loopback_v4(0);
    ::bind(fd, any.data(), any.size());
    int rcv = 1 << 20;
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    auto to = weft::endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
    constexpr unsigned entries = 512;
    const std::size_t buf_len = sizeof(io_uring_recvmsg_out) + sizeof(sockaddr_in6) + size + 64;
    std::vector<char> slab(entries * buf_len);
    void* mem =
        ::mmap(nullptr, entries * sizeof(io_uring_buf), PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    auto* br = static_cast<io_uring_buf_ring*>(mem);
    io_uring_buf_ring_init(br);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<std::uintptr_t>(mem);
    reg.ring_entries = entries;
    reg.bgid = 7;
    io_uring_register_buf_ring(&ring, &reg, 0);
    for (unsigned i = 0; i < entries; ++i)
        io_uring_buf_ring_add(br, slab.data() + i * buf_len, static_cast<unsigned>(buf_len),
                              static_cast<unsigned short>(i), io_uring_buf_ring_mask(entries), static_cast<int>(i));
    io_uring_buf_ring_advance(br, entries);
    msghdr msg{};
    msg.msg_namelen = sizeof(sockaddr_in6);
    auto arm = [&] {
        io_uring_sqe* sqe = io_uring_get_sqe(&ring);
        io_uring_prep_recvmsg_multishot(sqe, fd, &msg, MSG_TRUNC);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = 7;
    };
    arm();
    std::atomic<long> received{0};
    int ctl = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ::bind(ctl, any.data(), any.size());
    sockaddr_storage cs{};
    socklen_t clen = sizeof cs;
    ::getsockname(ctl, reinterpret_cast<sockaddr*>(&cs), &clen);
    auto go = weft::endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&cs), clen);
    // Multishot keeps up as datagrams arrive: this reference does not wait for whole
    // bursts (its "go" datagrams go unread), the best case for it.
    std::thread sender(send_all, to, go, n, size, std::cref(received), tx_cpu);
    double cpu0 = thread_cpu_seconds();
    auto t0 = weft::clock::now();
    long got = 0;
    while (got < n) {
        io_uring_submit_and_wait(&ring, 1);
        io_uring_cqe* cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            ++seen;
            if (cqe->res < 0) {  // ENOBUFS or the like: arm again
                if (!(cqe->flags & IORING_CQE_F_MORE)) arm();
                continue;
            }
            unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
            char* buf = slab.data() + bid * buf_len;
            if (io_uring_recvmsg_validate(buf, cqe->res, &msg)) ++got;
            io_uring_buf_ring_add(br, buf, static_cast<unsigned>(buf_len), static_cast<unsigned short>(bid),
                                  io_uring_buf_ring_mask(entries), 0);
            io_uring_buf_ring_advance(br, 1);
            if (!(cqe->flags & IORING_CQE_F_MORE)) arm();
        }
        io_uring_cq_advance(&ring, seen);
        received.store(got, std::memory_order_release);
    }
    double cpu1 = thread_cpu_seconds();
    double secs = std::chrono::duration<double>(weft::clock::now() - t0).count();
    sender.join();
    ::close(fd);
    ::close(ctl);
    io_uring_queue_exit(&ring);
    ::munmap(mem, entries * sizeof(io_uring_buf));
    return {(cpu1 - cpu0) * 1e9 / static_cast<double>(n), static_cast<double>(n) / secs};
}
#endif

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    auto args = example::parse(argc, argv);
    if (args.get("--help")) {
        std::printf(
            "usage: udp_batch [--backends LIST] [--datagrams N] [--size BYTES] [--repetitions R]\n"
            "                 [--receiver-cpu C] [--sender-cpu C]\n");
        return 0;
    }
    long n = static_cast<long>(
        example::number_or_exit("--datagrams", args.get("--datagrams").value_or("200000"), 1000, 100'000'000));
    auto size = example::number_or_exit("--size", args.get("--size").value_or("64"), 1, 65507);
    int reps =
        static_cast<int>(example::number_or_exit("--repetitions", args.get("--repetitions").value_or("3"), 1, 100));
    int rx_cpu =
        static_cast<int>(example::number_or_exit("--receiver-cpu", args.get("--receiver-cpu").value_or("0"), 0, 1023));
    int tx_cpu =
        static_cast<int>(example::number_or_exit("--sender-cpu", args.get("--sender-cpu").value_or("1"), 0, 1023));
    std::string list = args.get("--backends").value_or("epoll_et,uring");
    std::printf(
        "| backend | receive | CPU ns/datagram | datagrams/s | datagrams per receive |\n"
        "|---|---|---:|---:|---:|\n");
    std::size_t pos = 0;
    int rc = 0;
    while (pos <= list.size()) {
        std::size_t comma = list.find(',', pos);
        std::string name = list.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        pos = comma == std::string::npos ? list.size() + 1 : comma + 1;
        bool known = weft::with_backend(name, [&]<class B>() {
            if (!B::available() || B::kind == weft::backend_kind::blocking) {
                std::printf("| %s | (not measured: %s) | | | |\n", name.c_str(),
                            B::available() ? "thread per task" : "not available here");
                return;
            }
            for (bool batched : {false, true}) {
                std::vector<double> cpu, rate, per;
                for (int r = 0; r < reps; ++r) {
                    auto s = run_once<B>(batched, n, size, rx_cpu, tx_cpu);
                    cpu.push_back(s.cpu_ns_per_datagram);
                    rate.push_back(s.datagrams_per_second);
                    per.push_back(s.per_receive);
                }
                std::printf("| %s | %s | %.0f | %.0f | %.1f |\n", name.c_str(),
                            batched ? "receive_batch (16)" : "receive_from", median(cpu), median(rate), median(per));
                std::fflush(stdout);
            }
#if WEFT_HAS_URING
            if constexpr (std::is_same_v<B, weft::backend::uring>) {
                std::vector<double> cpu, rate;
                for (int r = 0; r < reps; ++r) {
                    auto s = raw_multishot(n, size, rx_cpu, tx_cpu);
                    cpu.push_back(s.cpu_ns_per_datagram);
                    rate.push_back(s.datagrams_per_second);
                }
                std::printf("| liburing, by hand | multishot recvmsg + buffer ring | %.0f | %.0f | 1.0 |\n",
                            median(cpu), median(rate));
            }
#endif
        });
        if (!known) {
            std::fprintf(stderr, "error: unknown backend '%s'\n", name.c_str());
            rc = 2;
        }
    }
    return rc;
}

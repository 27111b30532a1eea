// Ping-pong load: C connections, each with one S-byte message in flight, for D seconds.
// Plain blocking sockets, one thread per connection: simple enough to trust, fast enough
// for a few connections (the full load generator is issue 5's echo_load).
//
//   pingpong_load --port N [--connections C] [--size S] [--seconds D]
//
// Verifies every echoed byte; prints one line: "msgs=M seconds=T msgs_per_s=R errors=E".
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "args.hpp"

int main(int argc, char** argv) {
    auto args = example::parse(argc, argv);
    auto port = example::port_or_exit(args.get("--port").value_or("0"));
    auto conns = example::number_or_exit("--connections", args.get("--connections").value_or("4"), 1, 512);
    auto size = example::number_or_exit("--size", args.get("--size").value_or("64"), 1, 65536);
    auto seconds = example::number_or_exit("--seconds", args.get("--seconds").value_or("3"), 1, 3600);
    std::atomic<unsigned long> msgs{0}, errors{0};
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    auto start = std::chrono::steady_clock::now();
    for (unsigned long c = 0; c < conns; ++c) {
        threads.emplace_back([&, c] {
            int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            sockaddr_in a{};
            a.sin_family = AF_INET;
            a.sin_port = htons(port);
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
                std::perror("connect");
                errors++;
                return;
            }
            int one = 1;
            ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            std::vector<char> out(size), in(size);
            unsigned long n = 0;
            while (!stop.load(std::memory_order_relaxed)) {
                for (std::size_t i = 0; i < size; ++i) out[i] = static_cast<char>(c * 31 + n + i);
                if (::send(fd, out.data(), size, MSG_NOSIGNAL) != static_cast<ssize_t>(size)) {
                    errors++;
                    break;
                }
                std::size_t got = 0;
                while (got < size) {
                    ssize_t r = ::recv(fd, in.data() + got, size - got, 0);
                    if (r <= 0) break;
                    got += static_cast<std::size_t>(r);
                }
                if (got != size || std::memcmp(in.data(), out.data(), size) != 0) {
                    errors++;
                    break;
                }
                ++n;
            }
            msgs += n;
            ::close(fd);
        });
    }
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    stop = true;
    for (auto& t : threads) t.join();
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("msgs=%lu seconds=%.3f msgs_per_s=%.0f errors=%lu\n", msgs.load(), secs, msgs.load() / secs,
                errors.load());
    return errors.load() == 0 ? 0 : 1;
}

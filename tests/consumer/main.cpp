// Built against an installed weft by the package_consumer test and by
// scripts/package_check.sh: one loopback round trip on epoll_et, and on uring too when
// the consumer's configure found liburing. Prints whether it did, which the checks
// compare with what they expect of the machine.
#include <weft/weft.hpp>

#include <cstdio>
#include <string_view>

template <class B>
weft::task<int> round_trip(weft::loop<B>& loop) {
    auto listener = weft::tcp_listener<B>::bind(loop, weft::endpoint::loopback_v4(0)).value();
    auto client = co_await weft::tcp_stream<B>::connect(loop, listener.local_endpoint().value());
    auto server = co_await listener.accept();
    if (!client || !server) co_return 1;
    (void)co_await client->write_all(std::string_view("ping"));
    char buf[4];
    auto n = co_await server->read_exact(buf);
    co_return n&& std::string_view(buf, 4) == "ping" ? 0 : 1;
}

template <class B>
int run_on() {
    weft::loop<B> loop;
    return loop.run(round_trip(loop));
}

int main() {
    int rc = run_on<weft::backend::epoll_et>();
#if WEFT_HAS_URING
    const char* uring = "on";
    if (rc == 0 && weft::backend::uring::available()) rc = run_on<weft::backend::uring>();
#else
    const char* uring = "off";
#endif
    std::printf("consumer: %s (io_uring backend: %s)\n", rc == 0 ? "ok" : "FAILED", uring);
    return rc;
}

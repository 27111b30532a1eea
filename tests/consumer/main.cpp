// Built against an installed weft by the package_consumer test: one loopback round trip.
#include <weft/weft.hpp>

#include <cstdio>
#include <string_view>

using backend = weft::backend::epoll_et;

weft::task<int> round_trip(weft::loop<backend>& loop) {
    auto listener = weft::tcp_listener<backend>::bind(loop, weft::endpoint::loopback_v4(0)).value();
    auto client = (co_await weft::tcp_stream<backend>::connect(loop, listener.local_endpoint().value())).value();
    auto server = (co_await listener.accept()).value();
    (void)co_await client.write_all(std::string_view("ping"));
    char buf[4];
    auto n = co_await server.read_exact(buf);
    co_return n&& std::string_view(buf, 4) == "ping" ? 0 : 1;
}

int main() {
    weft::loop<backend> loop;
    int rc = loop.run(round_trip(loop));
    std::puts(rc == 0 ? "consumer: ok" : "consumer: FAILED");
    return rc;
}

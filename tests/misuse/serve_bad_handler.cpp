// Misuse: a serve() handler that does not take the connection's stream (here a plain
// function of the endpoint). Refused with a message naming what the handler must be.
#include <weft/backend/epoll.hpp>
#include <weft/runtime.hpp>

using B = weft::backend::epoll_et;

weft::task<void> good(weft::tcp_stream<B>) { co_return; }
weft::task<void> bad(weft::endpoint) { co_return; }

void start(weft::runtime<B>& rt) {
#ifdef WEFT_MISUSE
    (void)rt.serve(weft::endpoint::loopback_v4(0), &bad);
#else
    (void)rt.serve(weft::endpoint::loopback_v4(0), &good);
#endif
}

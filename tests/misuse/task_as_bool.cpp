// Misuse: a forgotten co_await on connect, then testing the task as if it were the result.
// Must not compile: a task is not a truth value.
#include <weft/backend/epoll.hpp>
#include <weft/net/tcp.hpp>

using B = weft::backend::epoll_et;

weft::task<void> connect_and_check(weft::loop<B>& loop, weft::endpoint ep) {
#ifdef WEFT_MISUSE
    auto c = weft::tcp_stream<B>::connect(loop, ep);
#else
    auto c = co_await weft::tcp_stream<B>::connect(loop, ep);
#endif
    if (!c) co_return;
}

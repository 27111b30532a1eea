// Misuse: with_timeout needs an operation whose value is a result<T> (it must be able to
// report timed_out); a plain value is refused at the call site, by name.
#include <weft/backend/epoll.hpp>
#include <weft/net/tcp.hpp>

using B = weft::backend::epoll_et;
using namespace std::chrono_literals;

weft::task<int> plain() { co_return 1; }
weft::task<weft::result<int>> fallible() { co_return 1; }

weft::task<void> caller() {
#ifdef WEFT_MISUSE
    auto r = co_await weft::with_timeout(plain(), 1s);
#else
    auto r = co_await weft::with_timeout(fallible(), 1s);
#endif
    (void)r;
}

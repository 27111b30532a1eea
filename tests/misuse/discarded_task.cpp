// Misuse: a task called without co_await never runs.
#include <weft/backend/epoll.hpp>
#include <weft/net/tcp.hpp>

using B = weft::backend::epoll_et;

weft::task<int> answer() { co_return 42; }

weft::task<void> caller() {
#ifdef WEFT_MISUSE
    answer();
#else
    (void)co_await answer();
#endif
}

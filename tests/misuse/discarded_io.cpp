// Misuse: an IO operation called without co_await does nothing. With -Werror the
// [[nodiscard]] message, which names the missing co_await, stops the build.
#include <weft/backend/epoll.hpp>
#include <weft/net/tcp.hpp>

using B = weft::backend::epoll_et;

weft::task<void> greet(weft::tcp_stream<B>& s) {
#ifdef WEFT_MISUSE
    s.write_all(std::string_view("hello"));
#else
    (void)co_await s.write_all(std::string_view("hello"));
#endif
    co_return;
}

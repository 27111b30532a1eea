// Misuse: reading into memory that cannot be written (a string_view, a const buffer).
#include <weft/backend/epoll.hpp>
#include <weft/net/tcp.hpp>

#include <string>

using B = weft::backend::epoll_et;

weft::task<void> reader(weft::tcp_stream<B>& s) {
#ifdef WEFT_MISUSE
    const std::string buf(16, '\0');
#else
    std::string buf(16, '\0');
#endif
    (void)co_await s.read_some(buf);
}

// Misuse: a send without co_await. The awaiter would be destroyed unawaited and nothing
// sent; the compiler says so.
#include <weft/channel.hpp>
#include <weft/task.hpp>

weft::task<void> producer(weft::channel<int>& ch) {
#ifdef WEFT_MISUSE
    ch.send(42);
#else
    (void)co_await ch.send(42);
#endif
    co_return;
}

// Misuse: a channel of a type whose move may throw. A value half moved into a slot would
// leave the slot claimed and never published, wedging the channel, so the type is refused.
#include <weft/channel.hpp>

#include <string>

struct may_throw {
    std::string s;
    may_throw() = default;
    may_throw(may_throw&& o) noexcept(false) : s(std::move(o.s)) {}
};

#ifdef WEFT_MISUSE
using refused = weft::channel<may_throw>;
#else
using refused = weft::channel<std::string>;
#endif

int main() {
    refused ch(4);
    return static_cast<int>(ch.capacity()) - 4;
}

// libFuzzer entry for weft::endpoint::parse: arbitrary bytes as text must never crash
// (or trip ASan/UBSan); what parses must format with to_string() and parse back to the
// same endpoint, and formatting that again must give the same text.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <weft/net/endpoint.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    auto e = weft::endpoint::parse(text);
    if (!e) {
        if (!e.error()) std::abort();  // a failure must say why
        return 0;
    }
    if (!e->is_v4() && !e->is_v6()) std::abort();
    const std::string once = e->to_string();
    auto again = weft::endpoint::parse(once);
    if (!again || !(*again == *e) || again->to_string() != once) {
        std::fprintf(stderr, "endpoint round trip failed: input '%.*s' formats as '%s', which %s\n",
                     static_cast<int>(size), reinterpret_cast<const char*>(data), once.c_str(),
                     again ? "parses to a different endpoint" : "does not parse");
        std::abort();
    }
    return 0;
}

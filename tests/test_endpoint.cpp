// endpoint: parse and format IPv4/IPv6 addresses, reject garbage with clear errors.
#include "helpers.hpp"

TEST_CASE("endpoint parses and formats IPv4 and IPv6", "[endpoint]") {
    auto a = weft::endpoint::parse("127.0.0.1:8800");
    REQUIRE(a);
    REQUIRE(a->is_v4());
    REQUIRE(a->port() == 8800);
    REQUIRE(a->to_string() == "127.0.0.1:8800");

    auto b = weft::endpoint::parse("[::1]:80");
    REQUIRE(b);
    REQUIRE(b->is_v6());
    REQUIRE(b->port() == 80);
    REQUIRE(b->to_string() == "[::1]:80");
    REQUIRE(weft::endpoint::parse(b->to_string()).value() == *b);

    REQUIRE(weft::endpoint::parse("0.0.0.0:0")->port() == 0);
    REQUIRE(weft::endpoint::parse("[::]:65535")->port() == 65535);
    REQUIRE(weft::endpoint::parse("[fe80::1%1]:80")->to_string() == "[fe80::1%1]:80");
    REQUIRE(weft::endpoint::loopback_v4(5).with_port(6).port() == 6);
}

TEST_CASE("endpoint rejects malformed text with a specific error", "[endpoint]") {
    using weft::errc;
    struct bad_case {
        const char* text;
        errc expected;
    };
    const bad_case cases[] = {
        {"1.2.3.4", errc::endpoint_missing_port}, {"1.2.3.4:99999", errc::endpoint_bad_port},
        {"1.2.3.4:", errc::endpoint_bad_port},    {"1.2.3.4:8x", errc::endpoint_bad_port},
        {"1.2.3.4:-1", errc::endpoint_bad_port},  {"[::1", errc::invalid_endpoint},
        {"[::1]", errc::endpoint_missing_port},   {"[::1]x80", errc::invalid_endpoint},
        {"host:port", errc::endpoint_bad_port},   {"host:80", errc::endpoint_bad_address},
        {"1.2.3:80", errc::endpoint_bad_address}, {"256.1.1.1:80", errc::endpoint_bad_address},
        {"::1:80", errc::invalid_endpoint},       {"[zz::1]:80", errc::endpoint_bad_address},
        {":80", errc::endpoint_bad_address},      {"", errc::endpoint_missing_port},
    };
    for (const auto& c : cases) {
        INFO("input: \"" << c.text << "\"");
        auto r = weft::endpoint::parse(c.text);
        REQUIRE_FALSE(r);
        REQUIRE(r.error() == c.expected);
        REQUIRE_FALSE(r.error().message().empty());
    }
}

TEST_CASE("endpoint rejects an embedded NUL byte and an empty IPv6 scope", "[endpoint]") {
    using namespace std::string_view_literals;
    // inet_pton stops at a NUL: without a check, "127.0.0.1\0junk" parsed as 127.0.0.1.
    const std::string_view bad[] = {"127.0.0.1\0junk:80"sv, "127.0.0.1:8\0"sv, "[::1\0x]:80"sv, "[fe80::1%lo\0]:80"sv,
                                    "\0:80"sv};
    for (auto text : bad) {
        INFO("input of " << text.size() << " bytes with a NUL");
        auto r = weft::endpoint::parse(text);
        REQUIRE_FALSE(r);
        REQUIRE(r.error() == weft::errc::invalid_endpoint);
    }
    auto scope = weft::endpoint::parse("[fe80::1%]:80");  // '%' promises a scope
    REQUIRE_FALSE(scope);
    REQUIRE(scope.error() == weft::errc::endpoint_bad_address);
    REQUIRE_FALSE(weft::endpoint::v6("fe80::1%", 80));
}

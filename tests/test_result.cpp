// result<T>: the value-or-error type every IO operation returns.
#include "helpers.hpp"

TEST_CASE("result holds a value or an error_code", "[result]") {
    weft::result<int> ok = 7;
    REQUIRE(ok);
    REQUIRE(*ok == 7);
    REQUIRE(ok.value() == 7);
    REQUIRE(!ok.error());

    weft::result<int> bad = std::make_error_code(std::errc::connection_reset);
    REQUIRE_FALSE(bad);
    REQUIRE(bad.error() == std::errc::connection_reset);
    REQUIRE(bad.value_or(3) == 3);
    REQUIRE_THROWS_AS(bad.value(), std::system_error);

    weft::result<std::string> moved = std::string("abc");
    weft::result<std::string> copy = moved;
    REQUIRE(*copy == "abc");
    copy = weft::result<std::string>(weft::errc::eof);
    REQUIRE(copy.error() == weft::errc::eof);
}

TEST_CASE("result<void> and weft's error category", "[result]") {
    weft::result<void> ok;
    REQUIRE(ok);
    REQUIRE_NOTHROW(ok.value());
    weft::result<void> bad = weft::errc::fd_too_large;
    REQUIRE_FALSE(bad);
    REQUIRE(std::string(bad.error().category().name()) == "weft");
    REQUIRE(bad.error().message().find("FD_SETSIZE") != std::string::npos);
}

TEST_CASE("to_result converts negative errno exactly once", "[result]") {
    auto r = weft::detail::to_result<std::size_t>(-ECONNRESET);
    REQUIRE(r.error() == std::errc::connection_reset);
    auto v = weft::detail::to_result<std::size_t>(42);
    REQUIRE(*v == 42);
    REQUIRE(weft::detail::to_result(0));
}

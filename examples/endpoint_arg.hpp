// --host/--port as a weft::endpoint, for the example programs (args.hpp stays free of
// weft: the benchmark's load generator shares it).
#pragma once

#include <weft/net/endpoint.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace example {

/// `host` ("127.0.0.1", "::1") and `port` as an endpoint, or exit 2 naming the problem.
inline weft::endpoint endpoint_or_exit(const std::string& host, std::uint16_t port) {
    auto ep = host.find(':') != std::string::npos ? weft::endpoint::v6(host, port) : weft::endpoint::v4(host, port);
    if (!ep) {
        std::fprintf(stderr, "error: --host '%s': %s\n", host.c_str(), ep.error().message().c_str());
        std::exit(2);
    }
    return *ep;
}

}  // namespace example

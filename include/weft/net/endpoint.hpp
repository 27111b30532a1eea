// SPDX-License-Identifier: MIT
/// @file
/// @brief `endpoint`: an IPv4 or IPv6 address with a port; parse and format.
#pragma once

#include <charconv>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "../result.hpp"

namespace weft {

/// An IPv4 or IPv6 socket address (a `sockaddr_storage` inside); a value type.
///
/// Text forms are `"127.0.0.1:8800"` and `"[::1]:8800"` (an IPv6 scope may follow
/// `%`, as in `"[fe80::1%lo]:80"`). A host name is not an endpoint: `resolve` (net/resolve.hpp) turns names into endpoints.
class endpoint {
public:
    /// An empty endpoint (family `AF_UNSPEC`).
    endpoint() noexcept { std::memset(&storage_, 0, sizeof storage_); }

    /// Parses `"a.b.c.d:port"` or `"[v6]:port"`; errors name what is wrong
    /// (`weft::errc::endpoint_missing_port`, `endpoint_bad_port`, `endpoint_bad_address`,
    /// `invalid_endpoint`, also for text with an embedded NUL byte).
    static result<endpoint> parse(std::string_view text) noexcept {
        // The C functions below stop at a NUL: "127.0.0.1\0junk" must not pass as 127.0.0.1.
        if (text.find('\0') != std::string_view::npos) return errc::invalid_endpoint;
        std::string_view host, port;
        if (!text.empty() && text.front() == '[') {
            auto close = text.find(']');
            if (close == std::string_view::npos) return errc::invalid_endpoint;  // "[::1"
            host = text.substr(1, close - 1);
            auto rest = text.substr(close + 1);
            if (rest.empty()) return errc::endpoint_missing_port;
            if (rest.front() != ':') return errc::invalid_endpoint;
            port = rest.substr(1);
            auto p = parse_port(port);
            if (!p) return p.error();
            return v6(host, *p);
        }
        auto colon = text.rfind(':');
        if (colon == std::string_view::npos) return errc::endpoint_missing_port;  // "1.2.3.4"
        host = text.substr(0, colon);
        if (host.find(':') != std::string_view::npos) return errc::invalid_endpoint;  // bare v6 needs brackets
        auto p = parse_port(text.substr(colon + 1));
        if (!p) return p.error();
        return v4(host, *p);
    }

    /// An IPv4 endpoint from a dotted-quad literal; `endpoint_bad_address` if it is not one.
    static result<endpoint> v4(std::string_view address, std::uint16_t port) noexcept {
        char buf[INET_ADDRSTRLEN];
        if (address.empty() || address.size() >= sizeof buf || has_nul(address)) return errc::endpoint_bad_address;
        std::memcpy(buf, address.data(), address.size());
        buf[address.size()] = '\0';
        endpoint e;
        auto* sa = reinterpret_cast<sockaddr_in*>(&e.storage_);
        sa->sin_family = AF_INET;
        sa->sin_port = htons(port);
        if (::inet_pton(AF_INET, buf, &sa->sin_addr) != 1) return errc::endpoint_bad_address;
        return e;
    }

    /// An IPv6 endpoint from a literal without brackets (optionally `%scope`, a number or
    /// an interface name; a `%` with nothing after it is `endpoint_bad_address`).
    static result<endpoint> v6(std::string_view address, std::uint16_t port) noexcept {
        if (has_nul(address)) return errc::endpoint_bad_address;
        std::string_view scope;
        bool scoped = false;
        if (auto pct = address.find('%'); pct != std::string_view::npos) {
            scope = address.substr(pct + 1);
            address = address.substr(0, pct);
            scoped = true;
        }
        if (scoped && scope.empty()) return errc::endpoint_bad_address;  // "fe80::1%": which interface?
        char buf[INET6_ADDRSTRLEN];
        if (address.empty() || address.size() >= sizeof buf) return errc::endpoint_bad_address;
        std::memcpy(buf, address.data(), address.size());
        buf[address.size()] = '\0';
        endpoint e;
        auto* sa = reinterpret_cast<sockaddr_in6*>(&e.storage_);
        sa->sin6_family = AF_INET6;
        sa->sin6_port = htons(port);
        if (::inet_pton(AF_INET6, buf, &sa->sin6_addr) != 1) return errc::endpoint_bad_address;
        if (!scope.empty()) {
            std::uint32_t id = 0;
            auto [ptr, ec] = std::from_chars(scope.data(), scope.data() + scope.size(), id);
            if (ec != std::errc{} || ptr != scope.data() + scope.size()) {
                char name[IF_NAMESIZE];
                if (scope.size() >= sizeof name) return errc::endpoint_bad_address;
                std::memcpy(name, scope.data(), scope.size());
                name[scope.size()] = '\0';
                id = ::if_nametoindex(name);
                if (id == 0) return errc::endpoint_bad_address;
            }
            sa->sin6_scope_id = id;
        }
        return e;
    }

    /// The IPv4 loopback address 127.0.0.1 with `port`.
    static endpoint loopback_v4(std::uint16_t port = 0) noexcept { return *v4("127.0.0.1", port); }
    /// The IPv6 loopback address ::1 with `port`.
    static endpoint loopback_v6(std::uint16_t port = 0) noexcept { return *v6("::1", port); }
    /// The IPv4 wildcard address 0.0.0.0 (every interface) with `port`.
    static endpoint any_v4(std::uint16_t port = 0) noexcept { return *v4("0.0.0.0", port); }

    /// Copies a kernel-filled address; `AF_UNSPEC` if `len` is too large or the family unknown.
    static endpoint from_sockaddr(const sockaddr* sa, socklen_t len) noexcept {
        endpoint e;
        if (len <= sizeof e.storage_ && (sa->sa_family == AF_INET || sa->sa_family == AF_INET6))
            std::memcpy(&e.storage_, sa, len);
        return e;
    }

    /// `AF_INET`, `AF_INET6` or `AF_UNSPEC`.
    int family() const noexcept { return storage_.ss_family; }
    /// True for IPv4.
    bool is_v4() const noexcept { return family() == AF_INET; }
    /// True for IPv6.
    bool is_v6() const noexcept { return family() == AF_INET6; }

    /// The port in host byte order (0 for an empty endpoint).
    std::uint16_t port() const noexcept {
        if (is_v4()) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
        if (is_v6()) return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
        return 0;
    }
    /// The same address with another port.
    endpoint with_port(std::uint16_t p) const noexcept {
        endpoint e = *this;
        if (is_v4()) reinterpret_cast<sockaddr_in*>(&e.storage_)->sin_port = htons(p);
        if (is_v6()) reinterpret_cast<sockaddr_in6*>(&e.storage_)->sin6_port = htons(p);
        return e;
    }

    /// `"a.b.c.d:port"`, `"[v6]:port"`, or `""` for an empty endpoint; `parse` reads it back.
    std::string to_string() const {
        // Built with appends only: g++ 12 at -O2 reports a false -Wrestrict for
        // `"[" + std::string(...)` (GCC PR 105329).
        char buf[INET6_ADDRSTRLEN];
        std::string s;
        if (is_v4()) {
            ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, buf, sizeof buf);
            s.append(buf);
        } else if (is_v6()) {
            const auto* sa = reinterpret_cast<const sockaddr_in6*>(&storage_);
            ::inet_ntop(AF_INET6, &sa->sin6_addr, buf, sizeof buf);
            s.append(1, '[').append(buf);
            if (sa->sin6_scope_id) s.append(1, '%').append(std::to_string(sa->sin6_scope_id));
            s.append(1, ']');
        } else {
            return s;
        }
        return s.append(1, ':').append(std::to_string(port()));
    }

    /// The address for `bind`/`connect`.
    const sockaddr* data() const noexcept { return reinterpret_cast<const sockaddr*>(&storage_); }
    /// The length of `data()` for its family.
    socklen_t size() const noexcept { return is_v4() ? sizeof(sockaddr_in) : is_v6() ? sizeof(sockaddr_in6) : 0; }

    /// Same family, address, port (and IPv6 scope).
    friend bool operator==(const endpoint& a, const endpoint& b) noexcept {
        return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size()) == 0;
    }

private:
    static bool has_nul(std::string_view s) noexcept { return s.find('\0') != std::string_view::npos; }
    static result<std::uint16_t> parse_port(std::string_view s) noexcept {
        if (s.empty() || s.size() > 5) return errc::endpoint_bad_port;
        unsigned v = 0;
        auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
        if (ec != std::errc{} || ptr != s.data() + s.size() || v > 65535) return errc::endpoint_bad_port;
        return static_cast<std::uint16_t>(v);
    }

    sockaddr_storage storage_;
};

}  // namespace weft

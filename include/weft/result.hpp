// SPDX-License-Identifier: MIT
/// @file
/// @brief `result<T>`: a value or a `std::error_code`, and weft's own error codes.
///
/// Inside weft every syscall result is an `int` that is either >= 0 or a
/// negative errno (the io_uring convention). That `int` becomes a `result<T>`
/// in exactly one place, `detail::to_result`, so the two conventions never mix.
#pragma once

#include <cassert>
#include <memory>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

namespace weft {

/// Errors that are weft's own; everything else is a plain errno in `std::system_category()`.
enum class errc {
    eof = 1,                ///< The peer closed the stream before the requested bytes arrived (`read_exact`).
    invalid_endpoint,       ///< An endpoint string is not `a.b.c.d:port` or `[v6addr]:port`.
    endpoint_missing_port,  ///< An endpoint string has an address but no `:port`.
    endpoint_bad_port,      ///< The port is not a decimal number in 0..65535.
    endpoint_bad_address,   ///< The address part is not a valid IPv4 or IPv6 literal.
    fd_too_large,           ///< The backend cannot watch this fd (select: fd >= FD_SETSIZE).
    no_loop,                ///< A loop-bound awaitable (a timer) was awaited outside any weft loop.
    backend_unavailable,    ///< The backend cannot run in this process (kernel support or sandbox).
    empty_buffer,           ///< A read was given no room (0 bytes): it would look like EOF, so it fails instead.
    line_too_long,          ///< A delimited read found no delimiter within its length limit (the line was skipped).
    datagram_truncated,     ///< A datagram was larger than the buffer; the excess was discarded by the kernel.
    path_too_long,          ///< A Unix socket path does not fit `sockaddr_un::sun_path` (107 bytes + NUL).
    host_not_found,         ///< Name resolution succeeded but yielded no usable address.
    loop_stopped,           ///< The target loop has stopped for good (torn down): it takes no more work.
    channel_closed,         ///< The channel was closed, or its receiving loop is gone.
    channel_full,           ///< `try_send` found the channel full (the value was not taken).
    channel_empty,          ///< `try_receive` found nothing to take.
};

/// The `std::error_category` of `weft::errc`; its name is `"weft"`.
inline const std::error_category& error_category() noexcept {
    struct category final : std::error_category {
        const char* name() const noexcept override { return "weft"; }
        std::string message(int v) const override {
            switch (static_cast<errc>(v)) {
                case errc::eof:
                    return "end of stream: the peer closed before all requested bytes arrived";
                case errc::invalid_endpoint:
                    return "malformed endpoint: expected 'a.b.c.d:port' or '[ipv6]:port'";
                case errc::endpoint_missing_port:
                    return "malformed endpoint: missing ':port'";
                case errc::endpoint_bad_port:
                    return "malformed endpoint: port must be a decimal number 0..65535";
                case errc::endpoint_bad_address:
                    return "malformed endpoint: address is not a valid IPv4/IPv6 literal";
                case errc::fd_too_large:
                    return "file descriptor too large for this backend (select: FD_SETSIZE = 1024)";
                case errc::no_loop:
                    return "awaited outside a weft loop (no loop to run the timer)";
                case errc::backend_unavailable:
                    return "the IO backend is not available in this process";
                case errc::empty_buffer:
                    return "read into an empty buffer: give it room for at least one byte";
                case errc::line_too_long:
                    return "line too long: no delimiter within the length limit (the line was skipped)";
                case errc::datagram_truncated:
                    return "datagram truncated: it was larger than the receive buffer";
                case errc::path_too_long:
                    return "Unix socket path too long (at most 107 bytes)";
                case errc::host_not_found:
                    return "the name resolved to no usable address";
                case errc::loop_stopped:
                    return "the target loop has stopped and takes no more work";
                case errc::channel_closed:
                    return "the channel is closed (or its receiving loop is gone)";
                case errc::channel_full:
                    return "the channel is full";
                case errc::channel_empty:
                    return "the channel is empty";
            }
            return "unknown weft error";
        }
    };
    static const category instance;
    return instance;
}

/// Makes `std::error_code` from a `weft::errc` (found by ADL, so `ec == weft::errc::eof` works).
inline std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), error_category()}; }

}  // namespace weft

/// @cond INTERNAL
// Lets `weft::errc` convert implicitly to `std::error_code`.
template <>
struct std::is_error_code_enum<weft::errc> : std::true_type {};
/// @endcond

namespace weft {

/// Tag used to construct a failed `result`, like `std::unexpect`.
struct unexpect_t {
    explicit unexpect_t() = default;
};
/// The value of `unexpect_t`.
inline constexpr unexpect_t unexpect{};

/// A value of type `T`, or the `std::error_code` that explains why there is none.
///
/// The member names are `std::expected`'s (C++23), so moving to it later is a typedef.
/// IO never throws for expected conditions (EOF, reset, timeout, cancel); `value()`
/// throws `std::system_error` for callers who prefer exceptions.
template <class T>
class [[nodiscard]] result {
public:
    static_assert(!std::is_reference_v<T>, "result<T&> is not supported");
    /// The type of the value.
    using value_type = T;

    /// A result holding a value-initialised `T`.
    result() requires std::is_default_constructible_v<T> : ok_(true), value_() {}
    /// A result holding `v`.
    result(T v) noexcept(std::is_nothrow_move_constructible_v<T>) : ok_(true), value_(std::move(v)) {}
    /// A failed result holding `ec` (which must not be the zero error_code).
    result(std::error_code ec) noexcept : ok_(false), error_(ec) { assert(ec); }
    /// A failed result holding `e`.
    result(errc e) noexcept : result(make_error_code(e)) {}
    /// A failed result holding `e` (as `std::expected(std::unexpect, e)`).
    result(unexpect_t, std::error_code ec) noexcept : result(ec) {}
    /// Copies the value or the error.
    result(const result& o) requires std::is_copy_constructible_v<T> : ok_(o.ok_) {
        if (ok_)
            std::construct_at(&value_, o.value_);
        else
            error_ = o.error_;
    }
    /// Moves the value or copies the error.
    result(result&& o) noexcept(std::is_nothrow_move_constructible_v<T>) : ok_(o.ok_) {
        if (ok_)
            std::construct_at(&value_, std::move(o.value_));
        else
            error_ = o.error_;
    }
    /// Replaces the contents with a copy of `o`'s.
    result& operator=(const result& o) requires std::is_copy_constructible_v<T> {
        if (this != &o) {
            destroy();
            ok_ = o.ok_;
            if (ok_)
                std::construct_at(&value_, o.value_);
            else
                error_ = o.error_;
        }
        return *this;
    }
    /// Replaces the contents with `o`'s.
    result& operator=(result&& o) noexcept(std::is_nothrow_move_constructible_v<T>) {
        if (this != &o) {
            destroy();
            ok_ = o.ok_;
            if (ok_)
                std::construct_at(&value_, std::move(o.value_));
            else
                error_ = o.error_;
        }
        return *this;
    }
    ~result() { destroy(); }

    /// True when a value is held.
    bool has_value() const noexcept { return ok_; }
    /// True when a value is held.
    explicit operator bool() const noexcept { return ok_; }
    /// The value; throws `std::system_error` with the error when there is none.
    T& value() & {
        check();
        return value_;
    }
    /// The value; throws `std::system_error` with the error when there is none.
    const T& value() const& {
        check();
        return value_;
    }
    /// The value, moved out; throws `std::system_error` with the error when there is none.
    T&& value() && {
        check();
        return std::move(value_);
    }
    /// The value, or `fallback` when there is none.
    T value_or(T fallback) const& { return ok_ ? value_ : std::move(fallback); }
    /// The error; the zero `std::error_code` when a value is held.
    std::error_code error() const noexcept { return ok_ ? std::error_code{} : error_; }
    /// The value (precondition: `has_value()`).
    T& operator*() & noexcept {
        assert(ok_);
        return value_;
    }
    /// The value (precondition: `has_value()`).
    const T& operator*() const& noexcept {
        assert(ok_);
        return value_;
    }
    /// The value, moved out (precondition: `has_value()`).
    T&& operator*() && noexcept {
        assert(ok_);
        return std::move(value_);
    }
    /// Member access to the value (precondition: `has_value()`).
    T* operator->() noexcept {
        assert(ok_);
        return &value_;
    }
    /// Member access to the value (precondition: `has_value()`).
    const T* operator->() const noexcept {
        assert(ok_);
        return &value_;
    }

private:
    void check() const {
        if (!ok_) throw std::system_error(error_);
    }
    void destroy() noexcept {
        if (ok_) value_.~T();
    }
    bool ok_;
    union {
        T value_;
        std::error_code error_;
    };
};

/// Success, or the `std::error_code` that explains the failure.
template <>
class [[nodiscard]] result<void> {
public:
    /// The type of the value.
    using value_type = void;
    /// A successful result.
    result() noexcept = default;
    /// A failed result holding `ec` (the zero error_code means success).
    result(std::error_code ec) noexcept : error_(ec) {}
    /// A failed result holding `e`.
    result(errc e) noexcept : error_(make_error_code(e)) {}
    /// A failed result holding `ec`.
    result(unexpect_t, std::error_code ec) noexcept : error_(ec) {}
    /// True on success.
    bool has_value() const noexcept { return !error_; }
    /// True on success.
    explicit operator bool() const noexcept { return !error_; }
    /// Throws `std::system_error` on failure; does nothing on success.
    void value() const {
        if (error_) throw std::system_error(error_);
    }
    /// The error; the zero `std::error_code` on success.
    std::error_code error() const noexcept { return error_; }
    /// Does nothing (precondition: `has_value()`), for symmetry with `result<T>`.
    void operator*() const noexcept { assert(!error_); }

private:
    std::error_code error_;
};

namespace detail {

/// weft's own errors travel the internal `-errno` convention as `-(errc_base + errc)`:
/// far above every errno value, so they cannot be mistaken for one.
inline constexpr int errc_base = 1 << 20;

/// `e` in the internal `-errno` convention (what a backend returns for, say, an fd
/// that select() cannot watch).
constexpr int negative(errc e) noexcept { return -(errc_base + static_cast<int>(e)); }

/// An errno value as a `std::error_code` in the system category (or a `weft::errc`
/// carried as `errc_base + e`).
inline std::error_code errno_code(int err) noexcept {
    if (err > errc_base) return make_error_code(static_cast<errc>(err - errc_base));
    return {err, std::system_category()};
}

/// THE conversion from the internal convention (`res >= 0` or `-errno`) to `result`.
template <class T = void>
result<T> to_result(long res) noexcept {
    if (res < 0) return errno_code(static_cast<int>(-res));
    if constexpr (std::is_void_v<T>)
        return {};
    else
        return static_cast<T>(res);
}

}  // namespace detail
}  // namespace weft

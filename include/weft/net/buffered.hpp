// SPDX-License-Identifier: MIT
/// @file
/// @brief `buffered_reader<Stream>`: lines, delimited records and exact-size reads over
/// any weft byte stream, from one fixed buffer.
#pragma once

#include <algorithm>
#include <cassert>
#include <concepts>
#include <cstddef>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>

#include "../result.hpp"
#include "../task.hpp"
#include "tcp.hpp"  // byte_buffer, mutable_byte_buffer, as_writable_bytes

namespace weft {

/// A byte stream a `buffered_reader` can read from: movable, with
/// `read_some(std::span<std::byte>)` returning an awaitable that yields
/// `result<std::size_t>` (bytes read, 0 at end of stream). `tcp_stream<B>` is one, and
/// so is `buffered_reader` itself.
template <class S>
concept readable_stream = std::move_constructible<S> && requires(S& s, std::span<std::byte> b) {
    s.read_some(b);
    requires std::convertible_to<detail::awaited_t<decltype(s.read_some(b))>, result<std::size_t>>;
};

namespace detail {

/// The first position at or after `from` where `delim` (not empty) starts in `hay`, or
/// `npos`. memchr finds candidates: `string_view::find` compares byte by byte in
/// libstdc++ 12, and this search runs over every byte a reader buffers.
inline std::size_t find_delimiter(std::string_view hay, std::string_view delim, std::size_t from) noexcept {
    while (from + delim.size() <= hay.size()) {
        const void* hit = std::memchr(hay.data() + from, delim.front(), hay.size() - delim.size() + 1 - from);
        if (!hit) break;
        const auto pos = static_cast<std::size_t>(static_cast<const char*>(hit) - hay.data());
        if (std::memcmp(hay.data() + pos + 1, delim.data() + 1, delim.size() - 1) == 0) return pos;
        from = pos + 1;
    }
    return std::string_view::npos;
}

}  // namespace detail

// g++ 12 takes the frames of the reader's calls, which come from its frame arena through
// a templated `operator new`, for a new/delete mismatch (PR 109224, fixed in g++ 13).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

/// A buffered reader over a byte stream: lines (`read_line`), records that end in any
/// delimiter (`read_until`), and byte reads (`read_some`, `read_exact`) that serve
/// buffered bytes first, so a protocol can mix text lines and binary bodies.
///
/// It owns the stream (write through `stream()`) and one buffer of `capacity()` bytes,
/// allocated once at construction; a record is returned as a view into that buffer, so
/// no record can be longer than the capacity. Buffered bytes move to the front of the
/// buffer only when a read needs room at the end and there is none.
///
/// No allocation per call after warm-up: the frames of the reader's calls come from a
/// one-block `detail::frame_arena` the reader owns (the first call allocates it; a
/// bigger call grows it once). A call made while another one's task still exists takes
/// its frame from the heap instead; only one of them may be reading at a time, though
/// (one read at a time per stream).
///
/// Errors are values, as everywhere in weft: the stream's own errors (reset, cancel,
/// `timed_out` through `with_timeout`) come back as they are. Cancelling a call (the stop
/// token of the task awaiting it) cancels the pending stream read; the reader stays
/// consistent: bytes already buffered stay buffered, and a cancelled `read_until`,
/// `read_line` or `read_exact` (up to `capacity()` bytes) consumes nothing.
///
/// Lifetime: the reader must outlive its pending calls (their frames live in its arena
/// and refer to it) and must not be moved while one is pending. Like its stream, it is
/// used by one task at a time.
template <readable_stream Stream>
class buffered_reader {
public:
    /// The capacity a reader gets when none is given.
    static constexpr std::size_t default_capacity = 8192;
    /// The `max_length` that means "as long as the buffer holds": the capacity.
    static constexpr std::size_t whole_buffer = static_cast<std::size_t>(-1);

    /// A reader that takes over `stream`, with a buffer of `capacity` bytes (at least 1;
    /// 0 counts as 1). Throws `std::bad_alloc` if the buffer cannot be allocated.
    explicit buffered_reader(Stream&& stream, std::size_t capacity = default_capacity)
        : stream_(std::move(stream)), cap_(std::max<std::size_t>(capacity, 1)), buf_(new char[cap_]) {}
    /// Takes over `o`'s stream, buffer and buffered bytes (no call may be pending on `o`);
    /// `o` is left with no buffer and may only be destroyed or assigned to.
    buffered_reader(buffered_reader&& o) noexcept(std::is_nothrow_move_constructible_v<Stream>)
        : stream_(std::move(o.stream_)),
          cap_(std::exchange(o.cap_, 0)),
          buf_(std::move(o.buf_)),
          begin_(std::exchange(o.begin_, 0)),
          end_(std::exchange(o.end_, 0)),
          skipping_(std::exchange(o.skipping_, false)),
          skip_delim_(std::move(o.skip_delim_)),
          arena_(std::move(o.arena_)) {}
    /// Replaces this reader's stream, buffer and buffered bytes with `o`'s (no call may be
    /// pending on either).
    buffered_reader& operator=(buffered_reader&& o) noexcept(std::is_nothrow_move_assignable_v<Stream>) {
        if (this != &o) {
            stream_ = std::move(o.stream_);
            cap_ = std::exchange(o.cap_, 0);
            buf_ = std::move(o.buf_);
            begin_ = std::exchange(o.begin_, 0);
            end_ = std::exchange(o.end_, 0);
            skipping_ = std::exchange(o.skipping_, false);
            skip_delim_ = std::move(o.skip_delim_);
            arena_ = std::move(o.arena_);
        }
        return *this;
    }
    buffered_reader(const buffered_reader&) = delete;
    buffered_reader& operator=(const buffered_reader&) = delete;
    /// Destroys the stream (closing it) and frees the buffer.
    ~buffered_reader() = default;

    /// The stream: write through it, shut it down, set options. Reading from it directly
    /// skips the bytes already buffered here.
    Stream& stream() noexcept { return stream_; }
    /// The stream.
    const Stream& stream() const noexcept { return stream_; }
    /// The buffer's size: the longest record `read_until`/`read_line` can return.
    std::size_t capacity() const noexcept { return cap_; }

    /// The bytes received and not consumed yet, in order: what the next read returns
    /// first. After `errc::eof` in the middle of a record, the record's partial bytes.
    /// (While the rest of an over-long line is still to be skipped, at most
    /// `delimiter.size() - 1` of its bytes are kept here.) Valid until the next call.
    std::span<const std::byte> buffered() const noexcept {
        return std::as_bytes(std::span<const char>(buf_.get() + begin_, end_ - begin_));
    }
    /// Discards the first `n` buffered bytes (all of them if fewer are buffered), e.g.
    /// after taking a partial record out of `buffered()` at end of stream.
    void consume(std::size_t n) noexcept { begin_ += std::min(n, end_ - begin_); }

    /// Reads up to and including the next `delimiter` (which must stay valid until the
    /// call completes: the call is a lazy task).
    ///
    /// Yields the record, delimiter included, as a view into the buffer: valid until the
    /// next call on the reader. `max_length` limits the record, delimiter included; a
    /// larger one than `capacity()` (as the default) is clamped to the capacity, since
    /// the record has to fit the buffer. Errors:
    /// - `errc::line_too_long`: no delimiter within `max_length` bytes. The record is
    ///   skipped up to and including its delimiter: as far as it is buffered now, the
    ///   rest by the next call on the reader (whichever it is) before it reads anything
    ///   else, so the call after this one returns the next record;
    /// - `errc::eof`: the stream ended before a delimiter. The bytes of an unterminated
    ///   last record stay in `buffered()` (empty when the stream ended at a record
    ///   boundary);
    /// - `std::errc::invalid_argument`: `delimiter` is empty or longer than `max_length`;
    /// - the stream's errors (`connection_reset`, `operation_canceled`, ...), with
    ///   nothing consumed.
    task<result<std::string_view>> read_until(std::string_view delimiter, std::size_t max_length = whole_buffer) {
        return read_delimited(arena_, delimiter, max_length, false);
    }

    /// Reads a line: like `read_until("\n", max_length)`, but yields the line without its
    /// `"\n"` and without a `"\r"` before it (so `"\r\n"` endings work too). `max_length`
    /// counts the raw line, `"\r\n"` included.
    task<result<std::string_view>> read_line(std::size_t max_length = whole_buffer) {
        return read_delimited(arena_, "\n", max_length, true);
    }

    /// Reads some bytes into `buf`: buffered ones if there are any (without reading the
    /// stream), else what one stream read brings (a `buf` of `capacity()` bytes or more
    /// is read into directly, a smaller one through the buffer).
    ///
    /// Yields the count, at least 1; 0 at end of stream (as a stream's `read_some`, so a
    /// `buffered_reader` is a stream too). Errors: `errc::empty_buffer` for an empty
    /// `buf` (0 bytes would look like end of stream), the stream's errors.
    template <mutable_byte_buffer B>
    task<result<std::size_t>> read_some(B&& buf) {
        return read_some_bytes(arena_, as_writable_bytes(buf));
    }

    /// Reads exactly `buf.size()` bytes into `buf`: buffered ones first, then from the
    /// stream. Yields `buf.size()`.
    ///
    /// Errors: `errc::eof` if the stream ends first, the stream's errors. Up to
    /// `capacity()` bytes are gathered in the buffer and copied out only when all have
    /// arrived, so a failed call consumes nothing (the bytes that did arrive stay in
    /// `buffered()`); a larger `buf` is filled as bytes arrive, and on failure the bytes
    /// already in it are consumed.
    template <mutable_byte_buffer B>
    task<result<std::size_t>> read_exact(B&& buf) {
        return read_exact_bytes(arena_, as_writable_bytes(buf));
    }

private:
    // The calls are coroutines taking `arena_` first: that opts their frames into the
    // arena (see `detail::frame_arena`). Each is one coroutine that awaits only the
    // stream's reads, never another call of the reader: a nested call would find the
    // arena's block in use and allocate.

    task<result<std::string_view>> read_delimited(detail::frame_arena&, std::string_view delim, std::size_t max_length,
                                                  bool line) {
        max_length = std::min(max_length, cap_);
        if (delim.empty() || delim.size() > max_length) co_return std::make_error_code(std::errc::invalid_argument);
        while (skipping_ && !skip_buffered()) {
            const std::error_code ec = appended(co_await stream_.read_some(room()));
            if (ec == errc::eof) drop_skipped_tail();
            if (ec) co_return ec;
        }
        // Bytes already searched without a delimiter starting there: each read only
        // searches what is new (and the delimiter's length - 1 before it).
        std::size_t searched = 0;
        for (;;) {
            const std::string_view window(buf_.get() + begin_, std::min(end_ - begin_, max_length));
            if (const std::size_t pos = detail::find_delimiter(window, delim, searched);
                pos != std::string_view::npos) {
                std::string_view record = window.substr(0, pos + delim.size());
                begin_ += record.size();
                if (line) {
                    record.remove_suffix(delim.size());
                    if (record.ends_with('\r')) record.remove_suffix(1);
                }
                co_return record;
            }
            if (window.size() == max_length) {
                // Too long. Its last delimiter.size() - 1 bytes may begin a delimiter that
                // ends past the limit: that one ends the record, so the skip keeps them.
                begin_ += max_length - (delim.size() - 1);
                skip_delim_.assign(delim);
                skipping_ = true;
                skip_buffered();
                co_return errc::line_too_long;
            }
            searched = window.size() - std::min(window.size(), delim.size() - 1);
            const std::error_code ec = appended(co_await stream_.read_some(room()));
            if (ec) co_return ec;  // at eof the partial record stays buffered
        }
    }

    task<result<std::size_t>> read_some_bytes(detail::frame_arena&, std::span<std::byte> out) {
        if (out.empty()) co_return errc::empty_buffer;
        while (skipping_ && !skip_buffered()) {
            const std::error_code ec = appended(co_await stream_.read_some(room()));
            if (ec == errc::eof) {
                drop_skipped_tail();
                co_return std::size_t{0};
            }
            if (ec) co_return ec;
        }
        if (begin_ == end_) {
            if (out.size() >= cap_) {  // the buffer would only add a copy
                result<std::size_t> n = co_await stream_.read_some(out);
                co_return n;
            }
            const std::error_code ec = appended(co_await stream_.read_some(room()));
            if (ec == errc::eof) co_return std::size_t{0};
            if (ec) co_return ec;
        }
        co_return take(out);
    }

    task<result<std::size_t>> read_exact_bytes(detail::frame_arena&, std::span<std::byte> out) {
        if (out.empty()) co_return std::size_t{0};
        while (skipping_ && !skip_buffered()) {
            const std::error_code ec = appended(co_await stream_.read_some(room()));
            if (ec == errc::eof) drop_skipped_tail();
            if (ec) co_return ec;
        }
        if (out.size() <= cap_) {
            if (begin_ + out.size() > cap_) compact();  // the whole of it must fit behind begin_
            while (end_ - begin_ < out.size()) {
                const std::error_code ec = appended(co_await stream_.read_some(room()));
                if (ec) co_return ec;
            }
            co_return take(out);
        }
        std::size_t done = take(out);
        while (done < out.size()) {
            result<std::size_t> n = co_await stream_.read_some(out.subspan(done));
            if (!n) co_return n.error();
            if (*n == 0) co_return errc::eof;
            done += *n;
        }
        co_return done;
    }

    /// The free space after the buffered bytes, never empty when called (every caller
    /// has fewer than `cap_` bytes buffered). An empty buffer restarts at the front for
    /// free; buffered bytes are moved there only when no space is left behind them.
    std::span<std::byte> room() noexcept {
        if (begin_ == end_)
            begin_ = end_ = 0;
        else if (end_ == cap_)
            compact();
        assert(end_ < cap_);
        return {reinterpret_cast<std::byte*>(buf_.get()) + end_, cap_ - end_};
    }
    void compact() noexcept {
        std::memmove(buf_.get(), buf_.get() + begin_, end_ - begin_);
        end_ -= begin_;
        begin_ = 0;
    }
    /// Accounts for a stream read into `room()`: no error when bytes arrived,
    /// `errc::eof` at end of stream, else the stream's error.
    template <class R>
    std::error_code appended(const R& n) noexcept {
        if (!n) return n.error();
        if (*n == 0) return errc::eof;
        end_ += *n;
        return {};
    }
    /// Copies buffered bytes into `out` (as many as fit) and consumes them.
    std::size_t take(std::span<std::byte> out) noexcept {
        const std::size_t n = std::min(out.size(), end_ - begin_);
        if (n > 0) std::memcpy(out.data(), buf_.get() + begin_, n);
        begin_ += n;
        return n;
    }
    /// Discards buffered bytes of an over-long record up to and including its delimiter;
    /// true once that delimiter has gone. Until then only bytes that may begin the
    /// delimiter are kept.
    bool skip_buffered() noexcept {
        const std::string_view rest(buf_.get() + begin_, end_ - begin_);
        if (const std::size_t pos = detail::find_delimiter(rest, skip_delim_, 0); pos != std::string_view::npos) {
            begin_ += pos + skip_delim_.size();
            skipping_ = false;
            return true;
        }
        begin_ = end_ - std::min(rest.size(), skip_delim_.size() - 1);
        return false;
    }
    /// The stream ended inside an over-long record: what is left of it goes too.
    void drop_skipped_tail() noexcept {
        begin_ = end_;
        skipping_ = false;
    }

    Stream stream_;
    std::size_t cap_;
    std::unique_ptr<char[]> buf_;
    std::size_t begin_ = 0;   ///< first buffered byte
    std::size_t end_ = 0;     ///< one past the last buffered byte
    bool skipping_ = false;   ///< an over-long record is still being discarded
    std::string skip_delim_;  ///< its delimiter (a copy: the caller's view may be gone)
    detail::frame_arena arena_;
};

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace weft

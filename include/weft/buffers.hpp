// SPDX-License-Identifier: MIT
/// @file
/// @brief Provided buffers: `buffer_lease`, a received buffer on loan from the loop.
///
/// `tcp_stream::receive()` does not take a buffer from the caller: the backend picks
/// one from its pool only when data is there (io_uring: a registered buffer ring the
/// kernel picks from; reactors: a per-loop pool taken after readiness). An idle
/// connection therefore holds no read buffer. The lease gives the buffer back when it
/// is destroyed; while every buffer is on loan, receives wait (they are not failed).
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

namespace weft {
namespace detail {

/// Where a leased buffer goes back to.
class buffer_source {
public:
    /// Takes buffer `id` back (on the loop's thread; `backend::blocking`: on any thread).
    virtual void give_back(std::uint16_t id) noexcept = 0;

protected:
    ~buffer_source() = default;
};

/// `count` buffers of `size` bytes carved from one allocation, named by index.
class buffer_slab {
public:
    /// The memory is left uninitialised: zeroing it would touch every page of a pool
    /// (4 MiB by default) up front, where untouched pages cost no resident memory until
    /// a receive first writes into them.
    buffer_slab(std::uint16_t count, std::uint32_t size)
        : memory_(std::make_unique_for_overwrite<std::byte[]>(std::size_t{count} * size)), count_(count), size_(size) {}
    std::byte* at(std::uint16_t id) const noexcept { return memory_.get() + std::size_t{id} * size_; }
    std::uint16_t count() const noexcept { return count_; }
    std::uint32_t size() const noexcept { return size_; }

private:
    std::unique_ptr<std::byte[]> memory_;
    std::uint16_t count_;
    std::uint32_t size_;
};

/// A buffer taken from a pool for one receive (`error` < 0: none available).
struct taken_buffer {
    std::byte* data = nullptr;  ///< start of the buffer
    std::uint32_t size = 0;     ///< its capacity
    std::uint16_t id = 0;       ///< its index in the pool
    int error = 0;              ///< 0, or -ENOBUFS / -ENOMEM
};

/// The pool behind `receive()` on the backends that lend buffers themselves (the
/// reactors and `backend::blocking`; io_uring's kernel picks from a buffer ring
/// instead): one slab and a free list. It does no locking and wakes nobody: each
/// backend derives its `buffer_source` from it and adds its own give-back policy (the
/// reactor re-runs a waiting receive on its loop; blocking locks and notifies).
class buffer_pool {
public:
    /// `count` buffers of `size` bytes, all free; throws `std::bad_alloc`.
    buffer_pool(std::uint16_t count, std::uint32_t size) : slab_(count, size) {
        free_.reserve(count);
        for (std::uint16_t i = count; i > 0; --i) free_.push_back(static_cast<std::uint16_t>(i - 1));
    }
    /// A free buffer, or `-ENOBUFS` when every one is on loan.
    taken_buffer take() noexcept {
        if (free_.empty()) return {.error = -ENOBUFS};
        std::uint16_t id = free_.back();
        free_.pop_back();
        return {slab_.at(id), slab_.size(), id, 0};
    }
    /// Buffer `id` is free again; never allocates (room for every buffer is reserved).
    void put(std::uint16_t id) noexcept { free_.push_back(id); }
    /// Buffers not on loan.
    std::size_t free_count() const noexcept { return free_.size(); }

private:
    buffer_slab slab_;
    std::vector<std::uint16_t> free_;
};

/// Takes a buffer from `*pool`, creating the pool with `make()` on first use: a loop
/// that never calls `receive()` never allocates one. `-ENOMEM` if creating it fails.
template <class Pool, class Make>
taken_buffer take_from(std::unique_ptr<Pool>& pool, Make&& make) noexcept {
    if (!pool) {
        try {
            pool = make();
        } catch (...) {
            return {.error = -ENOMEM};
        }
    }
    return pool->take();
}

}  // namespace detail

/// A received buffer on loan from the loop's pool; move-only, returned when destroyed.
///
/// Empty (size 0) means end of stream. Keep a lease only as long as needed: while all
/// buffers are on loan, further receives wait for one to come back.
class buffer_lease {
public:
    /// An empty lease (holds no buffer).
    buffer_lease() noexcept = default;
    /// A lease of `size` bytes at `data`, buffer `id` of `source`.
    buffer_lease(detail::buffer_source* source, const std::byte* data, std::size_t size, std::uint16_t id) noexcept
        : source_(source), data_(data), size_(size), id_(id) {}
    /// Takes over `o`'s buffer; `o` becomes empty.
    buffer_lease(buffer_lease&& o) noexcept
        : source_(std::exchange(o.source_, nullptr)), data_(o.data_), size_(std::exchange(o.size_, 0)), id_(o.id_) {}
    /// Returns the current buffer and takes over `o`'s.
    buffer_lease& operator=(buffer_lease&& o) noexcept {
        if (this != &o) {
            release();
            source_ = std::exchange(o.source_, nullptr);
            data_ = o.data_;
            size_ = std::exchange(o.size_, 0);
            id_ = o.id_;
        }
        return *this;
    }
    /// Returns the buffer to its pool.
    ~buffer_lease() { release(); }

    /// The received bytes.
    std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }
    /// The received bytes as characters.
    std::string_view text() const noexcept { return {reinterpret_cast<const char*>(data_), size_}; }
    /// The first received byte.
    const std::byte* data() const noexcept { return data_; }
    /// How many bytes were received (0 at end of stream).
    std::size_t size() const noexcept { return size_; }
    /// True at end of stream (or for a moved-from lease).
    bool empty() const noexcept { return size_ == 0; }

    /// Returns the buffer to its pool now; the lease becomes empty.
    void release() noexcept {
        if (source_) std::exchange(source_, nullptr)->give_back(id_);
        size_ = 0;
    }

private:
    detail::buffer_source* source_ = nullptr;
    const std::byte* data_ = nullptr;
    std::size_t size_ = 0;
    std::uint16_t id_ = 0;
};

}  // namespace weft

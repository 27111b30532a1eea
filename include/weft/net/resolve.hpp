// SPDX-License-Identifier: MIT
/// @file
/// @brief Names: `split_host_port`, the `resolve_error` category, and `resolve(loop, host,
/// service)`, which runs `getaddrinfo` off the loop thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include "../core.hpp"
#include "../loop.hpp"
#include "../result.hpp"
#include "endpoint.hpp"

namespace weft {

/// The two halves of `"host:port"` text, as views into the text.
struct host_port {
    std::string_view host;     ///< a name, an IPv4 literal, or an IPv6 literal without brackets; may be empty
    std::string_view service;  ///< a port number or a service name from `/etc/services` ("http")
};

/// Splits `"host:port"`, `"[v6]:port"` or `":port"` (empty host: every interface for a
/// listener, the loopback address for a connect) into host and service.
///
/// The port may be a number or a service name; it is checked for shape here (digits, or
/// letters, digits, `-` and `_`) and looked up by `resolve`. Errors:
/// `errc::endpoint_missing_port` (`"localhost"`, `"[::1]"`), `errc::endpoint_bad_port`
/// (`"host:"`, `"host:80x/"`), `errc::invalid_endpoint` (an IPv6 literal without brackets,
/// `"[::1"`, text after `]` that is not `:port`, an embedded NUL byte).
inline result<host_port> split_host_port(std::string_view text) noexcept {
    if (text.find('\0') != std::string_view::npos) return errc::invalid_endpoint;
    host_port hp;
    std::string_view rest;
    if (!text.empty() && text.front() == '[') {
        auto close = text.find(']');
        if (close == std::string_view::npos) return errc::invalid_endpoint;
        hp.host = text.substr(1, close - 1);
        rest = text.substr(close + 1);
        if (rest.empty()) return errc::endpoint_missing_port;
        if (rest.front() != ':') return errc::invalid_endpoint;
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string_view::npos) return errc::endpoint_missing_port;
        hp.host = text.substr(0, colon);
        // "::1:80" is ambiguous (port 80, or the address ::1:80?): IPv6 needs brackets.
        if (hp.host.find(':') != std::string_view::npos) return errc::invalid_endpoint;
        rest = text.substr(colon);
    }
    hp.service = rest.substr(1);
    if (hp.service.empty() || hp.service.size() > 32) return errc::endpoint_bad_port;
    bool digits = std::all_of(hp.service.begin(), hp.service.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (digits) {
        unsigned v = 0;
        for (char c : hp.service) v = v * 10 + static_cast<unsigned>(c - '0');
        if (hp.service.size() > 5 || v > 65535) return errc::endpoint_bad_port;
    } else {
        for (char c : hp.service) {
            bool ok =
                (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
            if (!ok) return errc::endpoint_bad_port;
        }
    }
    return hp;
}

/// The `std::error_category` of name-resolution failures: the values are `getaddrinfo`'s
/// `EAI_*` codes and the messages `gai_strerror`'s. (`EAI_SYSTEM` is reported as the
/// errno it carried, in `std::system_category()`.)
inline const std::error_category& resolve_category() noexcept {
    struct category final : std::error_category {
        const char* name() const noexcept override { return "resolve"; }
        std::string message(int v) const override { return ::gai_strerror(v); }
    };
    static const category instance;
    return instance;
}

/// How `resolve` asks: the `getaddrinfo` hints weft exposes.
struct resolve_options {
    int family = AF_UNSPEC;      ///< `AF_INET`, `AF_INET6`, or `AF_UNSPEC` for both
    int socktype = SOCK_STREAM;  ///< `SOCK_STREAM` (TCP) or `SOCK_DGRAM` (UDP): one entry per address
    bool passive = false;        ///< for a listener: an empty host means the wildcard address
    bool numeric_host = false;   ///< the host must be a literal: never ask DNS
};

/// The signature of `getaddrinfo(3)`.
using getaddrinfo_fn = int (*)(const char* host, const char* service, const addrinfo* hints, addrinfo** out);

namespace detail {
/// See `set_resolve_hook`.
inline std::atomic<getaddrinfo_fn> resolve_hook{nullptr};
}  // namespace detail

/// Replaces `getaddrinfo` in the resolver threads (nullptr restores it) and returns the
/// previous hook; for tests, like `sys::set_fault_hook`: a lookup that takes long, a
/// chosen list of addresses. The list it returns is released with `freeaddrinfo`.
inline getaddrinfo_fn set_resolve_hook(getaddrinfo_fn hook) noexcept {
    return detail::resolve_hook.exchange(hook, std::memory_order_relaxed);
}

namespace detail {

/// `getaddrinfo` into endpoints, with duplicates removed and the order kept (the
/// system's RFC 6724 preference); the blocking call the resolver threads make.
inline result<std::vector<endpoint>> resolve_now(const std::string& host, const std::string& service,
                                                 const resolve_options& opts) {
    addrinfo hints{};
    hints.ai_family = opts.family;
    hints.ai_socktype = opts.socktype;
    hints.ai_flags = (opts.passive ? AI_PASSIVE : 0) | (opts.numeric_host ? AI_NUMERICHOST : 0);
    addrinfo* list = nullptr;
    getaddrinfo_fn gai = resolve_hook.load(std::memory_order_relaxed);
    if (gai == nullptr) gai = &::getaddrinfo;
    int rc = gai(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &list);
    if (rc == EAI_SYSTEM) return std::error_code(errno, std::system_category());
    if (rc != 0) return std::error_code(rc, resolve_category());
    std::vector<endpoint> out;
    for (addrinfo* a = list; a; a = a->ai_next) {
        endpoint e = endpoint::from_sockaddr(a->ai_addr, a->ai_addrlen);
        if (e.family() == AF_UNSPEC) continue;
        if (std::find(out.begin(), out.end(), e) == out.end()) out.push_back(e);
    }
    ::freeaddrinfo(list);
    if (out.empty()) return errc::host_not_found;
    return out;
}

/// One name lookup shared by the awaiting task and a resolver thread. The thread fills
/// `value` and hands the request back through the loop's `post` (or, on a
/// thread-per-task loop, wakes the waiting thread); the task may leave first
/// (cancelled, or its frame destroyed), after which the thread's answer is dropped.
struct resolve_request {
    std::string host, service;
    resolve_options opts;
    std::mutex mutex;
    std::condition_variable done_cv;      // thread-per-task loops wait on this
    bool abandoned = false;               // the task left; under `mutex`
    bool done = false;                    // `value` is set; under `mutex`
    std::optional<result<std::vector<endpoint>>> value;
    loop_core* loop = nullptr;                                      // null on a thread-per-task loop
    std::function<void(std::shared_ptr<resolve_request>)> deliver;  // runs on the loop thread
};

/// The resolver threads: at most `max_threads`, started when a lookup finds every
/// thread busy, and ending after a few idle seconds. A slow DNS server blocks a thread,
/// never a loop. Process-wide and never destroyed, so a lookup still running at exit
/// does not race static destructors.
class resolver_pool {
public:
    static constexpr unsigned max_threads = 4;

    static resolver_pool& instance() {
        static resolver_pool* pool = new resolver_pool;  // leaked on purpose (see above)
        return *pool;
    }

    /// Queues `r`; a thread picks it up. Throws `std::system_error` if no thread could
    /// be started and none is running.
    void submit(std::shared_ptr<resolve_request> r) {
        std::unique_lock lock(mutex_);
        queue_.push_back(std::move(r));
        if (idle_ > 0) {
            cv_.notify_one();
            return;
        }
        if (threads_ < max_threads) {
            ++threads_;
            try {
                std::thread([this] { work(); }).detach();
            } catch (...) {
                --threads_;
                if (threads_ == 0) {
                    queue_.pop_back();
                    throw;
                }
            }
        }
    }

    /// Drops `r` from the queue if no thread has started it (a cancelled lookup).
    void withdraw(const resolve_request* r) {
        std::lock_guard lock(mutex_);
        std::erase_if(queue_, [r](const auto& q) { return q.get() == r; });
    }

private:
    void work() {
        std::unique_lock lock(mutex_);
        for (;;) {
            if (queue_.empty()) {
                ++idle_;
                bool got = cv_.wait_for(lock, std::chrono::seconds(5), [this] { return !queue_.empty(); });
                --idle_;
                if (!got) {
                    --threads_;
                    return;
                }
            }
            std::shared_ptr<resolve_request> r = std::move(queue_.front());
            queue_.pop_front();
            lock.unlock();
            run(*r, r);
            lock.lock();
        }
    }

    static void run(resolve_request& r, const std::shared_ptr<resolve_request>& self) {
        {
            std::lock_guard l(r.mutex);
            if (r.abandoned) return;
        }
        result<std::vector<endpoint>> v = errc::host_not_found;
        try {
            v = resolve_now(r.host, r.service, r.opts);
        } catch (...) {  // std::bad_alloc
            v = std::make_error_code(std::errc::not_enough_memory);
        }
        std::lock_guard l(r.mutex);
        if (r.abandoned) return;
        r.value.emplace(std::move(v));
        r.done = true;
        // Posted under the request's lock: the task marks the request abandoned under
        // the same lock before its frame (and the loop after it) can go away.
        if (r.loop)
            r.loop->post([self] {
                // On the loop thread, where a task abandons its request: a task that
                // was cancelled or destroyed since this was posted is not touched.
                {
                    std::lock_guard gone(self->mutex);
                    if (self->abandoned) return;
                }
                self->deliver(self);
            });
        else
            r.done_cv.notify_all();
    }

    std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<std::shared_ptr<resolve_request>> queue_;
    unsigned threads_ = 0;
    unsigned idle_ = 0;
};

}  // namespace detail

/// The awaiter of `resolve`: yields `result<std::vector<endpoint>>`.
///
/// The lookup runs on a resolver thread; the awaiting task suspends without blocking its
/// loop. The task's stop token cancels it: the task resumes at once with
/// `operation_canceled`, and the thread's answer, when it comes, is dropped (a
/// `getaddrinfo` call in progress cannot be interrupted; it finishes on its thread).
class [[nodiscard("a lookup does nothing until it is awaited: is a co_await missing?")]] resolve_awaiter
    : private detail::op_base {
public:
    /// A lookup of `host` and `service` with `opts`; nothing happens until it is awaited.
    resolve_awaiter(std::string_view host, std::string_view service, resolve_options opts)
        : req_(std::make_shared<detail::resolve_request>()) {
        req_->host.assign(host);
        req_->service.assign(service);
        req_->opts = opts;
    }
    /// Moves a not-yet-awaited lookup.
    resolve_awaiter(resolve_awaiter && o) noexcept : detail::op_base(), req_(std::move(o.req_)) {}
    resolve_awaiter& operator=(resolve_awaiter&&) = delete;
    /// A task destroyed while it waits leaves the lookup to finish unseen.
    ~resolve_awaiter() {
        stop_.reset();
        abandon();
        if (state == detail::op_state::ready && loop_) loop_->unqueue(*this);
    }

    /// A literal host with a numeric service needs no thread: answered at once.
    bool await_ready() {
        if (host_is_literal()) {
            value_.emplace(detail::resolve_now(req_->host, req_->service, req_->opts));
            return true;
        }
        return false;
    }

    /// Hands the lookup to a resolver thread and arms cancellation.
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) {
        detail::task_env env = detail::env_of(h);
        if (env.token.stop_requested()) {
            value_.emplace(std::make_error_code(std::errc::operation_canceled));
            return false;
        }
        if (!env.loop || env.loop->threaded()) return wait_on_this_thread(env.token);
        loop_ = env.loop;
        req_->loop = loop_;
        req_->deliver = [this](std::shared_ptr<detail::resolve_request> r) {
            // On the loop thread. The task may have been cancelled meanwhile.
            if (r.get() != req_.get() || state != detail::op_state::parked) return;
            finish(std::move(*r->value), 0);
        };
        continuation = h;
        state = detail::op_state::parked;
        try {
            detail::resolver_pool::instance().submit(req_);
        } catch (const std::system_error& e) {
            state = detail::op_state::idle;
            value_.emplace(e.code());
            return false;
        }
        if (env.token.stop_possible()) stop_.emplace(env.token, canceller{this});
        return true;
    }

    /// The endpoints, in the system's order of preference; or a `resolve_category()`
    /// error (`EAI_NONAME`: the name does not exist), `errc::host_not_found` (no address
    /// of the asked family), or `operation_canceled`.
    result<std::vector<endpoint>> await_resume() {
        stop_.reset();
        return std::move(*value_);
    }

private:
    bool host_is_literal() const noexcept {
        std::string_view s = req_->service;
        bool numeric_service =
            !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
        if (!numeric_service) return false;
        if (req_->host.empty()) return true;
        in6_addr a6;
        in_addr a4;
        return ::inet_pton(AF_INET, req_->host.c_str(), &a4) == 1 ||
               ::inet_pton(AF_INET6, req_->host.c_str(), &a6) == 1;
    }

    /// Thread per task: this thread waits for the resolver thread, and a stop request
    /// wakes it (the lookup goes on unseen).
    bool wait_on_this_thread(const detail::stop_token& token) {
        try {
            detail::resolver_pool::instance().submit(req_);
        } catch (const std::system_error& e) {
            value_.emplace(e.code());
            return false;
        }
        bool stopped = false;
        detail::stop_callback<waker> wake(token, waker{req_.get(), &stopped});  // before the lock: it takes it
        std::unique_lock lock(req_->mutex);
        req_->done_cv.wait(lock, [&] { return req_->done || stopped; });
        if (req_->done)
            value_.emplace(std::move(*req_->value));
        else
            value_.emplace(std::make_error_code(std::errc::operation_canceled));
        req_->abandoned = true;
        return false;
    }

    /// A stop request wakes the thread waiting in `wait_on_this_thread`.
    struct waker {
        detail::resolve_request* req;
        bool* stopped;
        void operator()() const noexcept {
            std::lock_guard lock(req->mutex);
            *stopped = true;
            req->done_cv.notify_all();
        }
    };

    void finish(result<std::vector<endpoint>> v, int res) noexcept {
        value_.emplace(std::move(v));
        loop_->complete(*this, res);
    }

    void abandon() noexcept {
        if (!req_) return;
        std::lock_guard lock(req_->mutex);
        req_->abandoned = true;
    }

    struct canceller {
        resolve_awaiter* self;
        void operator()() const noexcept {
            if (self->state != detail::op_state::parked) return;
            self->abandon();
            detail::resolver_pool::instance().withdraw(self->req_.get());
            self->finish(std::make_error_code(std::errc::operation_canceled), -ECANCELED);
        }
    };

    std::shared_ptr<detail::resolve_request> req_;
    detail::loop_core* loop_ = nullptr;
    std::optional<result<std::vector<endpoint>>> value_;
    std::optional<detail::stop_callback<canceller>> stop_;
};

/// Resolves `host` and `service` (`"localhost"`, `"7000"` or `"http"`) to endpoints,
/// without blocking the loop: `getaddrinfo` runs on a resolver thread (at most four,
/// shared by the process) and the answer comes back through the loop. A literal address
/// with a numeric port is answered at once, without a thread.
///
/// `co_await` yields `result<std::vector<endpoint>>` (see `resolve_awaiter` for the
/// errors); cancelled by the awaiting task's stop token (`with_timeout` works).
inline resolve_awaiter resolve(std::string_view host, std::string_view service, resolve_options opts = {}) {
    return resolve_awaiter(host, service, opts);
}

/// `resolve(host, service)` on `l` (the loop is the awaiting task's anyway; this form
/// reads like the rest of weft's API).
template <class Backend>
resolve_awaiter resolve(loop<Backend>& l, std::string_view host, std::string_view service, resolve_options opts = {}) {
    (void)l;
    return resolve_awaiter(host, service, opts);
}

/// Resolves `host` and `service` on the calling thread (blocking in `getaddrinfo`). For
/// start-up code, before a loop serves; `localhost` and literals answer from local
/// files without the network.
inline result<std::vector<endpoint>> resolve_blocking(std::string_view host, std::string_view service,
                                                      resolve_options opts = {}) {
    try {
        return detail::resolve_now(std::string(host), std::string(service), opts);
    } catch (const std::bad_alloc&) {
        return std::make_error_code(std::errc::not_enough_memory);
    }
}

namespace detail {
/// Resolves `"host:port"` on this thread (passive: an empty host is the wildcard) and
/// calls `bind_one(address)` for each address until one succeeds. Yields that result, or
/// the last error (a malformed-text or resolver error if there was no address to try).
template <class F>
auto bind_by_name(std::string_view host_and_port, int socktype, F bind_one)
    -> decltype(bind_one(std::declval<const endpoint&>())) {
    auto hp = split_host_port(host_and_port);
    if (!hp) return hp.error();
    auto addresses = resolve_blocking(hp->host, hp->service, {.socktype = socktype, .passive = true});
    if (!addresses) return addresses.error();
    std::error_code last = errc::host_not_found;
    for (const endpoint& ep : *addresses) {
        auto r = bind_one(ep);
        if (r) return r;
        last = r.error();
    }
    return last;
}
}  // namespace detail

}  // namespace weft

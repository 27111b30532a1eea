// Fairness (issue 10, scenario 12): no connection starves while others are served.
//
// More connections are readable than the loop has receive buffers, all of them at every
// wait: the test drives the loop one iteration at a time, and before each one every
// peer sends a little more. Each session receives in a loop; the test records, per
// connection, the iterations between two receives. Served in turn, a connection waits
// about connections / buffers iterations. Before the fix, on the reactors (whose scan
// hands out buffers in fd order) the fds scanned first took every buffer on every
// iteration, and a waiter woken by a returned buffer, retried only after the next scan,
// found it gone and went to the back of the queue.
#include <algorithm>
#include <vector>

#include <sys/socket.h>

#include "helpers.hpp"

using namespace weft_test;

namespace {

constexpr std::uint64_t rounds = 120;  ///< iterations during which the peers send

/// What one session saw.
struct served {
    std::size_t bytes = 0;
    std::uint64_t last = 0;     ///< the iteration of its latest receive
    std::uint64_t max_gap = 0;  ///< most iterations between two receives (or before the first)
    bool done = false;
};

/// Receives until EOF; gaps are counted while the peers are still sending.
template <class B>
weft::task<void> receiver(weft::tcp_stream<B>& s, const std::uint64_t& iteration, served& out) {
    for (;;) {
        auto lease = co_await s.receive();
        if (!lease || lease->empty()) break;
        out.bytes += lease->size();
        if (iteration <= rounds) out.max_gap = std::max(out.max_gap, iteration - out.last);
        out.last = iteration;
    }
    out.done = true;
}

}  // namespace

TEMPLATE_TEST_CASE("no connection starves: with more readable connections than buffers, each is served in turn",
                   "[fairness][receive]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    WEFT_NOT_ON_BLOCKING(TestType, "a thread per connection: the kernel's scheduler, not a loop, decides who runs");
    // Each iteration brings more than one buffer's worth: a session that holds a buffer
    // finds more data when it receives again (as a busy server does).
    constexpr std::size_t conns = 16, buffers = 4, chunk = 3584;

    typename TestType::options opts{};
    opts.buffer_count = buffers;
    opts.buffer_size = 1024;
    weft::loop<TestType> loop(opts);
    std::vector<tcp_pair<TestType>> pairs;
    run_bounded(loop, [&]() -> weft::task<void> {
        for (std::size_t i = 0; i < conns; ++i) pairs.push_back(co_await make_pair(loop));
    }());
    std::uint64_t iteration = 0;
    std::vector<served> seen(conns);
    for (std::size_t i = 0; i < conns; ++i) loop.spawn(receiver(pairs[i].server, iteration, seen[i]));
    // Every iteration, every peer sends a little more: every connection is readable at
    // every wait, so the sessions park and the loop's scan hands out the buffers.
    const auto data = pattern(chunk, 5);
    std::vector<std::size_t> sent(conns);
    for (iteration = 1; iteration <= rounds; ++iteration) {
        for (std::size_t i = 0; i < conns; ++i) {
            // (A starved connection's socket buffers may fill: send what fits.)
            long n = ::send(pairs[i].client.native_handle(), data.data(), chunk, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0) sent[i] += static_cast<std::size_t>(n);
        }
        loop.run_once(10ms);
    }
    for (auto& p : pairs) REQUIRE(p.client.close());
    run_until_idle(loop);
    // Fair service: every connection gets a buffer about every conns / buffers
    // iterations; twice that plus a few iterations of slack is the bound. (Starved, a
    // connection waited for most of the run.)
    const std::uint64_t bound = 2 * conns / buffers + 4;
    std::uint64_t worst = 0;
    for (std::size_t i = 0; i < conns; ++i) {
        REQUIRE(seen[i].done);
        REQUIRE(seen[i].bytes == sent[i]);
        worst = std::max(worst, seen[i].max_gap);
    }
    INFO(TestType::name << ": the longest wait of a connection between two receives: " << worst
                        << " iterations (bound " << bound << ")");
    REQUIRE(worst <= bound);
}

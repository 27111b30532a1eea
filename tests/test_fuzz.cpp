// The seeded operation fuzzer (issue 10, harness item 2): random programs over several
// streams and a listener, run against a reference model of the byte streams (see
// fuzz_model.hpp for what a program is and what each check asserts).
//
// Each backend runs seeds 1 to 24, and the seeds that found defects, with the same
// generator. Environment:
//   WEFT_FUZZ_SEED=S     runs only seed S (a failure prints the line to replay it)
//   WEFT_FUZZ_SEEDS=N    runs seeds [1, N] instead of [1, 24] (plus the regression seeds)
//   WEFT_FUZZ_STEPS=K    steps per program (default 80)
//   WEFT_FUZZ_VERBOSE=1  prints every step as it runs
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "fuzz_model.hpp"
#include "helpers.hpp"

namespace {

long env_or(const char* name, long fallback) {
    const char* v = std::getenv(name);
    if (!v || !*v) return fallback;
    char* end = nullptr;
    long n = std::strtol(v, &end, 10);
    return end && *end == '\0' ? n : fallback;
}

/// Seeds per backend by default: about 2-4 s per backend in a Release build, and well
/// under the 60 s ctest limit under ASan+UBSan (see the fuzzer's report in the issue).
constexpr long default_seeds = 24;

}  // namespace

TEMPLATE_TEST_CASE("fuzz: random programs of operations match the byte-stream model", "[fuzz]", WEFT_TEST_BACKENDS) {
    WEFT_REQUIRE_BACKEND(TestType);
    const long one = env_or("WEFT_FUZZ_SEED", -1);
    std::vector<long> seeds;
    if (one >= 0) {
        seeds.push_back(one);
    } else {
        for (long seed = 1; seed <= env_or("WEFT_FUZZ_SEEDS", default_seeds); ++seed) seeds.push_back(seed);
        // Seeds that found defects (replay is close to exact: kernel timing decides a few
        // steps): 25 and 45, a wait on a closed stream parked as ENOMEM on the reactors;
        // 36, a uring cancel that missed its send and a forget() that then waited forever.
        for (long seed : {25L, 36L, 45L})
            if (std::find(seeds.begin(), seeds.end(), seed) == seeds.end()) seeds.push_back(seed);
    }
    const auto count = seeds.size();
    weft_fuzz::settings cfg;
    cfg.steps = static_cast<int>(env_or("WEFT_FUZZ_STEPS", cfg.steps));
    cfg.verbose = env_or("WEFT_FUZZ_VERBOSE", 0) != 0;
    std::size_t ops = 0, destroyed_loops = 0;
    const auto start = std::chrono::steady_clock::now();
    for (long seed : seeds) {
        const auto useed = static_cast<std::uint64_t>(seed);
        weft_fuzz::choices ch(useed);
        weft_fuzz::program<TestType> prog(ch, useed ^ 0x5eedda7aULL, cfg);
        prog.run();
        ops += prog.ops_started;
        destroyed_loops += prog.ended_by_destroying_loop ? 1 : 0;
        if (prog.failures.empty()) continue;
        // Everything the failure needs, asserted from this (the loop's) thread only.
        std::string trace;
        for (auto& line : prog.trace) trace += "  " + line + "\n";
        INFO("backend " << TestType::name << ", seed " << seed << "\nreplay: WEFT_FUZZ_SEED=" << seed
                        << " weft_tests \"fuzz: random programs of operations match the byte-stream model - "
                        << "weft::backend::" << TestType::name << "\"\nlast steps:\n"
                        << trace);
        for (auto& f : prog.failures) CHECK(f == "");
        FAIL("fuzz program failed (seed " << seed << ")");
    }
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
    WARN(TestType::name << ": " << count << " programs, " << ops << " operations, " << destroyed_loops
                        << " ended by destroying the loop, " << ms.count() << " ms");
}

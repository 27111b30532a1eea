// libFuzzer entry for the operation fuzzer: the input bytes drive the same generator and
// reference model as tests/test_fuzz.cpp (fuzz_model.hpp), on one backend chosen at
// compile time (WEFT_FUZZ_BACKEND, default epoll_et). A model violation aborts with the
// failures and the last steps, so libFuzzer saves the input as a crash.
//
//   build: cmake -DWEFT_BUILD_FUZZERS=ON -DCMAKE_CXX_COMPILER=clang++-14 (tests/fuzz/CMakeLists.txt)
//   run:   ./weft_fuzz_ops_epoll_et -max_total_time=600 corpus/
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

#include "../fuzz_model.hpp"

#ifndef WEFT_FUZZ_BACKEND
#define WEFT_FUZZ_BACKEND weft::backend::epoll_et
#endif

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using B = WEFT_FUZZ_BACKEND;
    if (!B::available() || size < 2) return 0;
    weft_fuzz::choices ch(std::span<const std::uint8_t>(data, size));
    weft_fuzz::settings cfg;
    cfg.steps = 0;  // until the input runs out (capped at 400 steps)
    // The payload bytes come from a seed taken from the input, so they vary too.
    std::uint64_t data_seed = 0;
    for (std::size_t i = 0; i < size && i < 8; ++i) data_seed = (data_seed << 8) | data[i];
    weft_fuzz::program<B> prog(ch, data_seed, cfg);
    prog.run();
    if (!prog.failures.empty()) {
        std::fprintf(stderr, "weft fuzz_ops (%s): model violation\n", std::string(B::name).c_str());
        for (auto& f : prog.failures) std::fprintf(stderr, "  %s\n", f.c_str());
        std::fprintf(stderr, "last steps:\n");
        for (auto& line : prog.trace) std::fprintf(stderr, "  %s\n", line.c_str());
        std::abort();
    }
    return 0;
}

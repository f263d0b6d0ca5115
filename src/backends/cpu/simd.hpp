#pragma once
// What the hand-written CPU kernels (winograd.cpp, depthwise.cpp) share; only they include it
// (they are built with -fopenmp). 16 float lanes as a GCC vector (one AVX-512 register, or two
// AVX2 ones where that is all there is), the fused activation as they apply it, and an even
// split of work over the OpenMP threads oneDNN uses too. Each kernel body is compiled twice, for AVX-512 and the library's baseline,
// and picked at run time (has_avx512()).
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "backends/cpu/onednn_context.hpp"

// Vec values only pass between always-inlined functions, so the AVX-512 and baseline builds of
// a kernel never exchange one by value: the ABI note does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace pyflame_rt::onednn::simd {

constexpr int64_t kLanes = 16;
using Vec = float __attribute__((vector_size(kLanes * sizeof(float))));

[[gnu::always_inline]] inline Vec load(const float* p) {
    Vec v;
    std::memcpy(&v, p, sizeof v);
    return v;
}
[[gnu::always_inline]] inline void store(float* p, const Vec& v) { std::memcpy(p, &v, sizeof v); }

[[gnu::always_inline]] inline Vec activate(const FusedActivation& act, Vec value) {
    const Vec zero = {};
    if (act.kind == FusedActivation::Kind::Relu) {
        value = value > zero ? value : zero;
    } else if (act.kind == FusedActivation::Kind::Clip) {
        const Vec low = zero + act.min, high = zero + act.max;
        value = value < low ? low : value;
        value = value > high ? high : value;
    }
    return value;
}

inline bool has_avx512() {
    static const bool has = __builtin_cpu_supports("avx512f");
    return has;
}

// Runs fn(first, last) over [0, n) split evenly across the OpenMP threads oneDNN uses too
// (the session's budget, set by apply_thread_budget), so the kernels share its warm pool.
// Callers are compiled with -fopenmp.
template <typename Fn>
void parallel_range(int64_t n, Fn&& fn) {
    const int threads = static_cast<int>(std::min<int64_t>(omp_get_max_threads(), n));
    if (threads <= 1) return fn(int64_t{0}, n);
#pragma omp parallel num_threads(threads)
    {
        const int64_t i = omp_get_thread_num(), count = omp_get_num_threads();
        fn(n * i / count, n * (i + 1) / count);
    }
}

}  // namespace pyflame_rt::onednn::simd

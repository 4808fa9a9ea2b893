// Data shared by the tile kernels (one translation unit per instruction set) and the driver.
#pragma once

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) || defined(__clang__)
#define SL_PREFETCH(p) __builtin_prefetch(p)
#else
#define SL_PREFETCH(p) ((void)0)
#endif

namespace raster {

constexpr int kTile = 16;

// A Gaussian as the tile kernels need it, one cache line per record.
struct alignas(64) Splat {
    float mx, my;        // mean, pixels
    float ha, b, hc;     // conic a/2, b, c/2
    float op;            // opacity
    float boa, inva;     // b/a, 1/a: centre and scale of each row's chord
    float two_a_t, det;  // 2a*threshold, ac-b^2 (chord half-width = sqrt(two_a_t - det dy^2)/a);
                         // two_a_t < 0: conic not positive definite, rows are scanned whole
    int x0, x1, y0, y1;  // pixel bbox (inclusive) where alpha can reach 1/255; x0 > x1: culled
};

// One render as the tile kernels see it.
struct Frame {
    int W, H, tiles_x, tiles_y, C;
    const Splat* splats;     // [N]
    const float* colors;     // [N][C]
    const int64_t* offsets;  // [tiles+1] into ids
    const int32_t* ids;      // Gaussian indices, grouped by tile, front to back
    // forward outputs
    float* out;      // [H][W][C]
    float* alpha;    // [H][W]
    float* Tfinal;   // [H][W]
    int32_t* last;   // [H][W]
    // backward inputs
    const float* Tfinal_in;
    const int32_t* last_in;
    const float* grad_out;    // [H][W][C]
    const float* grad_alpha;  // [H][W], may be null
    // weight accumulation input (C may be 0: totals only)
    const float* values;  // [H][W][C]
};

using ForwardFn = void (*)(const Frame&, int, float*);
using BackwardFn = void (*)(const Frame&, int, float*, float*);
using AccumulateFn = void (*)(const Frame&, int, float*, float*);

// Per-thread scratch floats of the tile kernels, and the row a Gaussian owns in a thread's
// gradient buffer: [mean(2), conic(3), opacity, colour(C)].
constexpr int kGradRow = 6;
inline size_t forward_scratch(int C) { return 512 + size_t(C) * 256; }
inline size_t backward_scratch(int C) { return 1280 + size_t(C) * 256 + (kGradRow + size_t(C)) * 9 + 8; }
// Weight accumulation: T [256] and the tile's values [C][256]; a Gaussian's row in a thread's
// buffer is [total weight, weighted value sums (C)].
inline size_t accumulate_scratch(int C) { return 256 + size_t(C) * 256; }

// Kernels specialised for the channel count C (small C unrolled, others generic), per ISA.
// The AVX2+FMA ones are null where the build has no x86 AVX2 path.
ForwardFn forward_kernel_generic(int C);
BackwardFn backward_kernel_generic(int C);
ForwardFn forward_kernel_avx2(int C);
BackwardFn backward_kernel_avx2(int C);
AccumulateFn accumulate_kernel_generic();
AccumulateFn accumulate_kernel_avx2();

}  // namespace raster

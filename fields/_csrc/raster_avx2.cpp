// The tile kernels compiled for AVX2+FMA through function target attributes (no -mavx2 flag,
// so the module still loads on any x86-64); raster_core.h only calls them after a CPU check.
// This file includes C headers only: inline std:: templates instantiated here would carry the
// AVX2 target and could be merged by the linker into code that runs on any CPU.
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "raster_types.h"

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>

namespace raster::sl_avx2 {
#define SL_AVX2 1
#include "raster_tile.h"
}  // namespace raster::sl_avx2

namespace raster {
ForwardFn forward_kernel_avx2(int C) { return SL_PICK(sl_avx2::forward_tile, C); }
BackwardFn backward_kernel_avx2(int C) { return SL_PICK(sl_avx2::backward_tile, C); }
AccumulateFn accumulate_kernel_avx2() { return &sl_avx2::accumulate_tile; }
}  // namespace raster

#else

namespace raster {
ForwardFn forward_kernel_avx2(int) { return nullptr; }
BackwardFn backward_kernel_avx2(int) { return nullptr; }
AccumulateFn accumulate_kernel_avx2() { return nullptr; }
}  // namespace raster

#endif

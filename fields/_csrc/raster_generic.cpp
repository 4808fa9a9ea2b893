// The tile kernels for any CPU (GCC/Clang vector extensions, or plain loops elsewhere).
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "raster_types.h"

namespace raster::sl_generic {
#define SL_AVX2 0
#include "raster_tile.h"
}  // namespace raster::sl_generic

namespace raster {
ForwardFn forward_kernel_generic(int C) { return SL_PICK(sl_generic::forward_tile, C); }
BackwardFn backward_kernel_generic(int C) { return SL_PICK(sl_generic::backward_tile, C); }
AccumulateFn accumulate_kernel_generic() { return &sl_generic::accumulate_tile; }
}  // namespace raster

// CPU tile rasterizer for 2D Gaussians (gsplat's classic conventions), forward and backward,
// over raw float buffers. raster_cpu.cpp binds it to Python; nothing here knows about Python.
//
// Pipeline: a splat record per Gaussian (the tiles its radii reach, narrowed to where alpha can
// reach 1/255; culled when none) -> one stable radix sort of the visible ones by depth ->
// counting sort of (tile, Gaussian) pairs, which keeps depth order inside each tile -> OpenMP over
// tiles, each rendered Gaussian-major in L1 (raster_tile.h). The backward pass reuses the
// forward's records, tile lists and per-pixel (T_final, last contributor), walks each list in
// reverse and adds one gradient row per Gaussian per tile into a per-thread buffer; the buffers
// are summed at the end (no atomics). The weight-accumulation pass (lifting 2D values to
// Gaussians) shares the forward's records and tile lists and its per-pixel transmittance rules.
#pragma once

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef __linux__
#include <sys/mman.h>
#endif

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define SL_HAVE_AVX2_PATH 1
#else
#define SL_HAVE_AVX2_PATH 0
#endif


#include "raster_types.h"

namespace raster {

// Screen-space Gaussians as the caller hands them over; all arrays C-contiguous float32/int32.
struct Scene2D {
    const float* means;   // [N,2]
    const float* conics;  // [N,3]
    const float* opac;    // [N]
    const float* colors;  // [N,C]
    const float* depths;  // [N] (forward only)
    const int32_t* radii; // [N,2]
    int N, C, W, H;
    int tiles_x() const { return (W + kTile - 1) / kTile; }
    int tiles_y() const { return (H + kTile - 1) / kTile; }
};

// Tests switch the portable kernels on where AVX2 exists, to check that they agree.
inline bool force_generic_flag(int set = -1) {
    static std::atomic<bool> flag{false};
    if (set >= 0) flag = set != 0;
    return flag;
}

inline bool use_avx2() {
#if SL_HAVE_AVX2_PATH
    static const bool ok = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }();
    return ok && !force_generic_flag();
#else
    return false;
#endif
}

inline ForwardFn pick_forward(int C) {
    return use_avx2() ? forward_kernel_avx2(C) : forward_kernel_generic(C);
}

inline BackwardFn pick_backward(int C) {
    return use_avx2() ? backward_kernel_avx2(C) : backward_kernel_generic(C);
}

inline AccumulateFn pick_accumulate() {
    return use_avx2() ? accumulate_kernel_avx2() : accumulate_kernel_generic();
}

// Threads for a step with `work` items, of which `grain` are worth waking another thread for.
// Waking a team costs microseconds on an idle machine but up to a scheduler time slice when the
// cores are busy, so small steps stay on the calling thread.
inline int thread_count(int requested, int64_t work, int64_t grain) {
#ifdef _OPENMP
    const int64_t nt = requested > 0 ? requested : omp_get_max_threads();
    return int(std::max<int64_t>(1, std::min<int64_t>(nt, work / grain)));
#else
    (void)requested, (void)work, (void)grain;
    return 1;
#endif
}

constexpr int64_t kGrainSplats = 16384;  // Gaussians per thread when building splat records
constexpr int64_t kGrainPairs = 8192;    // (tile, Gaussian) pairs per thread when binning/rendering

inline int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

inline int thread_total() {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

// 64-byte aligned storage for the per-call arrays. Large ones are fresh anonymous mappings (zero
// pages from the OS) that ask for transparent huge pages: a per-thread gradient buffer of 500k
// Gaussians x 26 floats is 52 MB, and faulting it in page by page costs more than the zeroing.
class Storage {
  public:
    Storage() = default;
    Storage(size_t bytes, bool zeroed) : bytes_(bytes + 64) {
#ifdef __linux__
        if (bytes_ >= (size_t(4) << 20)) {
            void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p != MAP_FAILED) {
                madvise(p, bytes_, MADV_HUGEPAGE);  // advice only: ignored where THP is off
                raw_ = p;
                mapped_ = true;
            }
        }
#endif
        if (!raw_) raw_ = zeroed ? calloc(bytes_, 1) : malloc(bytes_);
        if (!raw_) throw std::bad_alloc();
    }
    Storage(Storage&& o) noexcept { swap(o); }
    Storage& operator=(Storage&& o) noexcept {
        Storage(std::move(o)).swap(*this);
        return *this;
    }
    Storage(const Storage&) = delete;
    Storage& operator=(const Storage&) = delete;
    ~Storage() {
#ifdef __linux__
        if (mapped_) {
            munmap(raw_, bytes_);
            return;
        }
#endif
        free(raw_);
    }
    void* get() const {
        return reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(raw_) + 63) & ~uintptr_t(63));
    }

  private:
    void swap(Storage& o) noexcept {
        std::swap(raw_, o.raw_);
        std::swap(bytes_, o.bytes_);
        std::swap(mapped_, o.mapped_);
    }
    void* raw_ = nullptr;
    size_t bytes_ = 0;
    bool mapped_ = false;
};

// An uninitialised array (the kernels write every element they later read).
template <typename T>
struct Array {
    static_assert(std::is_trivially_copyable_v<T>, "raw storage");
    Storage mem;
    T* data = nullptr;
    size_t size = 0;
    void allocate(size_t n) {
        mem = Storage(n * sizeof(T), false);
        data = static_cast<T*>(mem.get());
        size = n;
    }
};

// A zero-initialised float buffer.
struct AlignedBuffer {
    Storage mem;
    float* data;
    explicit AlignedBuffer(size_t n) : mem(n * sizeof(float), true), data(static_cast<float*>(mem.get())) {}
};

// Everything the backward pass needs from the forward pass besides the colours. The caller keeps
// it alive in between (the Python wrapper hands its buffers to torch's save_for_backward).
struct Saved {
    Array<Splat> splats;           // [N]
    std::vector<int64_t> offsets;  // [tiles+1]
    Array<int32_t> ids;            // [pairs] Gaussian indices grouped by tile, front to back
    Array<float> Tfinal;           // [H][W]
    Array<int32_t> last;           // [H][W] index in its tile's list of the last contributor, or -1
};

// Read-only view of a Saved, as the backward pass receives it.
struct SavedView {
    const Splat* splats;
    const int64_t* offsets;
    const int32_t* ids;
    const float* Tfinal;
    const int32_t* last;
};

// floor/ceil of x clamped to [lo, hi] (integers), without libm calls: x is clamped first, so the
// int64 conversion is exact.
inline double floor_clamped(double x, double lo, double hi) {
    x = x < lo ? lo : (x > hi ? hi : x);
    const double t = double(int64_t(x));
    return t > x ? t - 1 : t;
}
inline double ceil_clamped(double x, double lo, double hi) {
    x = x < lo ? lo : (x > hi ? hi : x);
    const double t = double(int64_t(x));
    return t < x ? t + 1 : t;
}

// Tiles [tx0,tx1) x [ty0,ty1) that Gaussian n's radii reach (gsplat's rule, in double so the
// float64 reference draws the same lines); false when culled or it can never reach 1/255.
inline bool radii_tiles(const Scene2D& in, int n, double t[4]) {
    const int rx = in.radii[2 * n], ry = in.radii[2 * n + 1];
    if (rx <= 0 || ry <= 0) return false;
    if (!(in.opac[n] >= 1.f / 255.f)) return false;  // alpha <= opacity everywhere (drops NaN)
    const float* m = in.means + 2 * n;
    const float* q = in.conics + 3 * n;
    if (!std::isfinite(m[0]) || !std::isfinite(m[1]) || !std::isfinite(q[0]) || !std::isfinite(q[1]) ||
        !std::isfinite(q[2]))
        return false;
    const double mx = m[0], my = m[1], tx = in.tiles_x(), ty = in.tiles_y();
    t[0] = floor_clamped((mx - rx) / kTile, 0, tx);
    t[1] = ceil_clamped((mx + rx) / kTile, 0, tx);
    t[2] = floor_clamped((my - ry) / kTile, 0, ty);
    t[3] = ceil_clamped((my + ry) / kTile, 0, ty);
    return t[0] < t[1] && t[2] < t[3];
}

// The record the kernels use. Its bbox is the radii's tiles narrowed to the ellipse where
// alpha >= 1/255 is possible; narrowing cannot change the image, since a Gaussian below 1/255
// everywhere in a tile neither adds colour nor dims it. Empty bbox (x0 > x1) when culled.
inline void make_splat(const Scene2D& in, int n, Splat& s) {
    double t[4];
    s.x0 = 1;
    s.x1 = 0;
    s.y0 = 1;
    s.y1 = 0;
    if (!radii_tiles(in, n, t)) return;
    const float op = in.opac[n];
    const float fmx = in.means[2 * n], fmy = in.means[2 * n + 1];
    const float fa = in.conics[3 * n], fb = in.conics[3 * n + 1], fc = in.conics[3 * n + 2];
    const double mx = fmx, my = fmy;
    double xlo = t[0] * kTile, xhi = std::min(t[1] * kTile, double(in.W)) - 1;
    double ylo = t[2] * kTile, yhi = std::min(t[3] * kTile, double(in.H)) - 1;
    const double a = fa, b = fb, c = fc, det = a * c - b * b;  // exact: products of floats
    // sigma <= thr  <=>  alpha >= 1/255; the margin keeps float32 rounding inside the ellipse.
    const float thr = logf(255.f * op) + 0.01f;
    const bool pd = a > 0 && det > 0;
    const double inv_det = pd ? 1 / det : 0, inv_a = pd ? 1 / a : 0;
    if (pd) {
        // Pixel i (centre i + 0.5) is inside when |i + 0.5 - mx| <= ex; one pixel of margin.
        // (Clamping the arguments to [lo - 2, hi + 2] keeps every outcome, empty ones included.)
        const double ex = std::sqrt(2 * thr * c * inv_det), ey = std::sqrt(2 * thr * a * inv_det);
        xlo = std::max(xlo, ceil_clamped(mx - ex - 0.5, xlo - 2, xhi + 2) - 1);
        xhi = std::min(xhi, floor_clamped(mx + ex - 0.5, xlo - 2, xhi + 2) + 1);
        ylo = std::max(ylo, ceil_clamped(my - ey - 0.5, ylo - 2, yhi + 2) - 1);
        yhi = std::min(yhi, floor_clamped(my + ey - 0.5, ylo - 2, yhi + 2) + 1);
        if (xlo > xhi || ylo > yhi) return;
    }
    s.mx = fmx;
    s.my = fmy;
    s.ha = 0.5f * fa;
    s.b = fb;
    s.hc = 0.5f * fc;
    s.op = op;
    s.boa = float(b * inv_a);
    s.inva = float(inv_a);
    s.two_a_t = pd ? float(2 * a * thr) : -1.f;
    s.det = pd ? float(det) : 0.f;
    s.x0 = int(xlo);
    s.x1 = int(xhi);
    s.y0 = int(ylo);
    s.y1 = int(yhi);
}

// Monotone map of a float to uint32 (as torch orders floats: -0 == +0, NaN after +inf).
inline uint32_t depth_key(float d) {
    if (d != d) return 0xFFFFFFFFu;
    if (d == 0.f) d = 0.f;
    uint32_t u;
    memcpy(&u, &d, 4);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// A visible Gaussian on its way through the depth sort, carrying its tile rectangle so binning
// reads the sorted array in order.
struct SortItem {
    uint32_t key;
    int32_t n;
    uint16_t tx0, tx1, ty0, ty1;  // inclusive tile range
};

// Stable LSD radix sort by key (11/11/10-bit digits; a pass is skipped when all keys share its
// digit). Stability plus index-ordered input gives the index tie-break.
inline void radix_sort(std::vector<SortItem>& items) {
    const size_t n = items.size();
    std::vector<SortItem> tmp(n);
    const int shifts[3] = {0, 11, 22};
    std::vector<size_t> hist(3 * 2048, 0);
    for (const SortItem& it : items) {
        ++hist[it.key & 2047];
        ++hist[2048 + ((it.key >> 11) & 2047)];
        ++hist[4096 + (it.key >> 22)];
    }
    for (int pass = 0; pass < 3; ++pass) {
        size_t* h = hist.data() + 2048 * pass;
        if (n == 0 || *std::max_element(h, h + 2048) == n) continue;
        size_t sum = 0;
        for (int d = 0; d < 2048; ++d) {
            const size_t c = h[d];
            h[d] = sum;
            sum += c;
        }
        const int sh = shifts[pass];
        for (const SortItem& it : items) tmp[h[(it.key >> sh) & 2047]++] = it;
        items.swap(tmp);
    }
}

// Counting sort of (tile, Gaussian) pairs. Chunks of the depth order are counted and placed in
// parallel, chunk after chunk inside each tile, so every tile's list stays front to back.
inline void bin_tiles(const Scene2D& in, const std::vector<SortItem>& items, Saved& sv, int nt) {
    const int64_t M = int64_t(items.size());
    const int tiles_x = in.tiles_x(), ntiles = tiles_x * in.tiles_y();
    const int chunks = thread_count(nt, M, kGrainSplats);
    std::vector<int64_t> cnt(size_t(chunks) * ntiles, 0);
    auto for_pairs = [&](int ch, auto&& visit) {
        for (int64_t s = M * ch / chunks, s1 = M * (ch + 1) / chunks; s < s1; ++s) {
            const SortItem& it = items[s];
            for (int ty = it.ty0; ty <= it.ty1; ++ty)
                for (int tx = it.tx0; tx <= it.tx1; ++tx) visit(ty * tiles_x + tx, it.n);
        }
    };
#pragma omp parallel for num_threads(chunks) schedule(static, 1)
    for (int ch = 0; ch < chunks; ++ch) {
        int64_t* cc = cnt.data() + size_t(ch) * ntiles;
        for_pairs(ch, [cc](int t, int32_t) { ++cc[t]; });
    }
    sv.offsets.assign(ntiles + 1, 0);
    int64_t total = 0;
    for (int t = 0; t < ntiles; ++t) {
        sv.offsets[t] = total;
        for (int ch = 0; ch < chunks; ++ch) {
            int64_t& c = cnt[size_t(ch) * ntiles + t];
            const int64_t v = c;
            c = total;  // now this chunk's cursor in tile t
            total += v;
        }
    }
    sv.offsets[ntiles] = total;
    sv.ids.allocate(total);
    int32_t* ids = sv.ids.data;
#pragma omp parallel for num_threads(chunks) schedule(static, 1)
    for (int ch = 0; ch < chunks; ++ch) {
        int64_t* cur = cnt.data() + size_t(ch) * ntiles;
        for_pairs(ch, [cur, ids](int t, int32_t n) { ids[cur[t]++] = n; });
    }
}

// Splat records [N] of `sv`, then its depth-ordered tile lists (offsets, ids): what the forward
// and accumulation passes share.
inline void build_tiles(const Scene2D& in, int threads, Saved& sv) {
    const int nt = thread_count(threads, in.N, kGrainSplats);
    // Splat records in index order (sequential reads), then the visible ones sorted by depth;
    // compacting in index order makes ties keep it.
    sv.splats.allocate(in.N);
    Splat* splats = sv.splats.data;
    std::vector<std::vector<SortItem>> found(nt);
#pragma omp parallel num_threads(nt)
    {
        const int tid = thread_id(), parts = thread_total();
        std::vector<SortItem>& mine = found[tid];
        const int n0 = int(int64_t(in.N) * tid / parts), n1 = int(int64_t(in.N) * (tid + 1) / parts);
        mine.reserve(n1 - n0);
        for (int n = n0; n < n1; ++n) {
            Splat& g = splats[n];
            make_splat(in, n, g);
            if (g.x0 > g.x1) continue;
            mine.push_back({depth_key(in.depths[n]), n, uint16_t(g.x0 / kTile), uint16_t(g.x1 / kTile),
                            uint16_t(g.y0 / kTile), uint16_t(g.y1 / kTile)});
        }
    }
    std::vector<SortItem> items;
    size_t total = 0;
    for (const auto& v : found) total += v.size();
    items.reserve(total);
    for (const auto& v : found) items.insert(items.end(), v.begin(), v.end());
    radix_sort(items);
    bin_tiles(in, items, sv, threads);
}

// Renders out [H,W,C] and alpha [H,W,1]; fills `sv` for the backward pass.
inline void render_forward(const Scene2D& in, int threads, float* out, float* alpha, Saved& sv) {
    build_tiles(in, threads, sv);
    Splat* splats = sv.splats.data;
    sv.Tfinal.allocate(size_t(in.W) * in.H);
    sv.last.allocate(size_t(in.W) * in.H);

    Frame f{};
    f.W = in.W;
    f.H = in.H;
    f.tiles_x = in.tiles_x();
    f.tiles_y = in.tiles_y();
    f.C = in.C;
    f.splats = splats;
    f.colors = in.colors;
    f.offsets = sv.offsets.data();
    f.ids = sv.ids.data;
    f.out = out;
    f.alpha = alpha;
    f.Tfinal = sv.Tfinal.data;
    f.last = sv.last.data;
    const ForwardFn kernel = pick_forward(in.C);
    const int ntiles = f.tiles_x * f.tiles_y;
    const int nt = thread_count(threads, int64_t(sv.ids.size), kGrainPairs);
#pragma omp parallel num_threads(nt)
    {
        AlignedBuffer scratch(forward_scratch(in.C));
#pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < ntiles; ++t) kernel(f, t, scratch.data);
    }
}

// Gradients w.r.t. means [N,2], conics [N,3], opacities [N], colors [N,C], all written (culled
// Gaussians get zeros). colors are the forward pass's; grad_alpha may be null.
inline void render_backward(int N, int C, int W, int H, const float* colors, const SavedView& sv,
                            int threads, const float* grad_out, const float* grad_alpha, float* g_means,
                            float* g_conics, float* g_opac, float* g_colors) {
    Frame f{};
    f.W = W;
    f.H = H;
    f.tiles_x = (W + kTile - 1) / kTile;
    f.tiles_y = (H + kTile - 1) / kTile;
    f.C = C;
    f.splats = sv.splats;
    f.colors = colors;
    f.offsets = sv.offsets;
    f.ids = sv.ids;
    f.Tfinal_in = sv.Tfinal;
    f.last_in = sv.last;
    f.grad_out = grad_out;
    f.grad_alpha = grad_alpha;
    const BackwardFn kernel = pick_backward(C);
    const int ntiles = f.tiles_x * f.tiles_y;
    const size_t stride = kGradRow + size_t(C);
    const int nt = thread_count(threads, sv.offsets[ntiles], kGrainPairs);
    std::vector<std::unique_ptr<AlignedBuffer>> grads(nt);
#pragma omp parallel num_threads(nt)
    {
        {
            AlignedBuffer scratch(backward_scratch(C));
            auto mine = std::make_unique<AlignedBuffer>(size_t(N) * stride);
            float* g = mine->data;
            grads[thread_id()] = std::move(mine);
            // Round-robin tiles, not dynamic: each tile's rows always land in the same thread's
            // buffer, so the sums below are bit-identical from run to run (training resumes
            // bit-for-bit) while neighbouring busy tiles still spread over the threads.
#pragma omp for schedule(static, 1)
            for (int t = 0; t < ntiles; ++t) kernel(f, t, scratch.data, g);
        }
        // Sum the threads' rows [mean(2), conic(3), opacity, colour(C)] into the outputs.
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; ++n) {
            const size_t base = size_t(n) * stride;
            auto total = [&](size_t k) {
                float v = 0.f;
                for (int t = 0; t < nt; ++t)
                    if (grads[t]) v += grads[t]->data[base + k];
                return v;
            };
            g_means[2 * n] = total(0);
            g_means[2 * n + 1] = total(1);
            g_conics[3 * n] = total(2);
            g_conics[3 * n + 1] = total(3);
            g_conics[3 * n + 2] = total(4);
            g_opac[n] = total(5);
            for (int ch = 0; ch < C; ++ch) g_colors[size_t(n) * C + ch] = total(6 + size_t(ch));
        }
    }
}

// Forward-only weight accumulation over the same tile lists as render_forward: for every
// Gaussian n, total[n] = sum_p w_np and sums[n][c] = sum_p w_np values[p][c], with w_np its
// blending weight alpha T at pixel p (in.C = C channels of values [H][W][C]; C = 0: totals only,
// sums unused). Culled Gaussians get zeros.
inline void accumulate_weights(const Scene2D& in, const float* values, int threads, float* sums, float* total) {
    Saved sv;
    build_tiles(in, threads, sv);
    Frame f{};
    f.W = in.W;
    f.H = in.H;
    f.tiles_x = in.tiles_x();
    f.tiles_y = in.tiles_y();
    f.C = in.C;
    f.splats = sv.splats.data;
    f.offsets = sv.offsets.data();
    f.ids = sv.ids.data;
    f.values = values;
    const AccumulateFn kernel = pick_accumulate();
    const int C = in.C, N = in.N;
    const int ntiles = f.tiles_x * f.tiles_y;
    const size_t stride = 1 + size_t(C);
    const int nt = thread_count(threads, int64_t(sv.ids.size), kGrainPairs);
    std::vector<std::unique_ptr<AlignedBuffer>> rows(nt);
#pragma omp parallel num_threads(nt)
    {
        {
            AlignedBuffer scratch(accumulate_scratch(C));
            auto mine = std::make_unique<AlignedBuffer>(size_t(N) * stride);
            float* r = mine->data;
            rows[thread_id()] = std::move(mine);
#pragma omp for schedule(dynamic, 1)
            for (int t = 0; t < ntiles; ++t) kernel(f, t, scratch.data, r);
        }
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; ++n) {
            const size_t base = size_t(n) * stride;
            for (size_t k = 0; k < stride; ++k) {
                float v = 0.f;
                for (int t = 0; t < nt; ++t)
                    if (rows[t]) v += rows[t]->data[base + k];
                if (k == 0)
                    total[n] = v;
                else
                    sums[size_t(n) * C + (k - 1)] = v;
            }
        }
    }
}

}  // namespace raster

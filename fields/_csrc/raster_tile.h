// Forward, backward and weight-accumulation kernels for one 16x16 tile, written once over the
// 8-lane vectors of raster_simd.h. raster_avx2.cpp and raster_generic.cpp include this file, each
// inside its own namespace with SL_AVX2 set to 1 or 0, and export the specialisations through
// raster_types.h.
//
// A tile is 32 blocks of 8 pixels: block b covers row r = b & 15, columns 8h..8h+7 with
// h = b >> 4. Per-pixel state lives in channel-major scratch arrays [C][256] that stay in L1.
// The loops are Gaussian-major: for each Gaussian of the tile's depth-ordered list, a 32-bit
// mask of the blocks its alpha >= 1/255 ellipse reaches is computed for all 16 rows at once,
// and only those blocks are visited, in a loop with no data-dependent branches, so the
// out-of-order core overlaps the exp chains of consecutive blocks.

#include "raster_simd.h"

static constexpr float kMinAlpha = 1.f / 255.f;
static constexpr float kMaxAlpha = 0.999f;
static constexpr float kMinTransmittance = 1e-4f;
static constexpr int kPrefetch = 8;      // Gaussians ahead in a tile list
static constexpr int kDoneInterval = 8;  // Gaussians between scans for finished blocks

SL_FN int imin(int a, int b) { return a < b ? a : b; }
SL_FN int imax(int a, int b) { return a > b ? a : b; }

SL_FN int lowest_bit(uint32_t m) {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_ctz(m);
#else
    int b = 0;
    while (!(m & 1u)) m >>= 1, ++b;
    return b;
#endif
}

// Bits r0..r1 of a 16-bit row mask (empty when r0 > r1).
SL_FN uint32_t row_bits(int r0, int r1) {
    if (r0 > r1) return 0;
    return ((2u << r1) - 1u) & ~((1u << r0) - 1u);
}

// Blocks among `live` of the tile at (X0, Y0) that Gaussian g may reach with alpha >= 1/255
// (bbox, then each row's chord of the ellipse, padded by a pixel). Also fills the per-row terms
// every pixel of a row shares: dy = my - pixel centre y, b*dy and c/2*dy^2.
SL_FN uint32_t block_mask(const Splat& g, int X0, int Y0, int nx, int ny, uint32_t live, float* rdy,
                          float* rbdy, float* rhcdy2) {
    const int xlo = imax(g.x0, X0) - X0, xhi = imin(g.x1, X0 + nx - 1) - X0;
    const uint32_t rows = row_bits(imax(g.y0, Y0) - Y0, imin(g.y1, Y0 + ny - 1) - Y0);
    const uint32_t h0 = (xlo <= 7 && xhi >= 0) ? rows : 0u;
    const uint32_t h1 = (xlo <= 15 && xhi >= 8) ? rows : 0u;
    if (!((h0 | (h1 << 16)) & live)) return 0;  // cheap exit: nothing left to do in the bbox
    const V lane = iota();
    uint32_t m0 = 0, m1 = 0;
    const bool pd = g.two_a_t >= 0.f;
    for (int q = 0; q < 2; ++q) {
        const V dy = splat(g.my) - (splat(float(Y0 + 8 * q) + 0.5f) + lane);
        store(rdy + 8 * q, dy);
        store(rbdy + 8 * q, splat(g.b) * dy);
        store(rhcdy2 + 8 * q, splat(g.hc) * dy * dy);
        if (pd) {
            const V d = splat(g.two_a_t) - splat(g.det) * dy * dy;
            const Mask ok = d >= splat(0.f);
            const V hw = vsqrt(vmax(d, splat(0.f))) * splat(g.inva);
            const V xc = splat(g.mx) + splat(g.boa) * dy;
            const V lo = xc - hw - splat(1.5f + float(X0));  // local column bounds with margin
            const V hi = xc + hw + splat(0.5f - float(X0));
            m0 |= uint32_t(bits(ok & (lo <= splat(7.f)) & (hi >= splat(0.f)))) << (8 * q);
            m1 |= uint32_t(bits(ok & (lo <= splat(15.f)) & (hi >= splat(8.f)))) << (8 * q);
        }
    }
    if (!pd) return (h0 | (h1 << 16)) & live;
    return ((m0 & h0) | ((m1 & h1) << 16)) & live;
}

// sigma = 0.5*(a dx^2 + c dy^2) + b dx dy as dx*(a/2 dx + b dy) + c/2 dy^2; alpha as gsplat.
// Forward and backward share this so their skip decisions are bit-identical.
SL_FN void eval_alpha(V dx, V ha, V bdy, V hcdy2, V op, V& vis, V& al, Mask& valid) {
    const V sigma = fmadd(fmadd(ha, dx, bdy), dx, hcdy2);
    vis = vexp(splat(0.f) - sigma);
    al = vmin(op * vis, splat(kMaxAlpha));
    valid = (sigma >= splat(0.f)) & (al >= splat(kMinAlpha));
}

// Blocks whose eight transmittances are all <= 0, i.e. finished or padding.
SL_FN uint32_t finished_blocks(const float* T) {
    uint32_t done = 0;
    for (int b = 0; b < 32; ++b) {
        const int off = (b & 15) * 16 + (b >> 4) * 8;
        done |= uint32_t(bits(load(T + off) > splat(0.f)) == 0) << b;
    }
    return done;
}

// Transmittance T runs from 1 down; when a pixel stops, T is negated, so every later Gaussian
// finds nt = T (1 - alpha) < 1e-4 and contributes nothing, and |T| is the final transmittance.
// Padding pixels outside the image start at -1.
template <int CT>
SL_KERNEL void forward_tile(const Frame& f, int tile, float* scratch) {
    const int C = CT > 0 ? CT : f.C;
    float* T = scratch;
    int* last = reinterpret_cast<int*>(scratch + 256);
    float* acc = scratch + 512;  // [C][256]
    alignas(32) float rdy[16], rbdy[16], rhcdy2[16];

    const int X0 = (tile % f.tiles_x) * 16, Y0 = (tile / f.tiles_x) * 16;
    const int nx = imin(16, f.W - X0), ny = imin(16, f.H - Y0);
    for (int r = 0; r < 16; ++r) {
        for (int c = 0; c < 16; ++c) {
            T[r * 16 + c] = (r < ny && c < nx) ? 1.f : -1.f;
            last[r * 16 + c] = -1;
        }
    }
    for (int i = 0; i < C * 256; ++i) acc[i] = 0.f;
    uint32_t done = finished_blocks(T);

    const V lane = iota();
    alignas(32) float px[16];  // pixel centres x of the two halves
    store(px, splat(float(X0) + 0.5f) + lane);
    store(px + 8, splat(float(X0) + 8.5f) + lane);
    const int64_t begin = f.offsets[tile], end = f.offsets[tile + 1];
    int until_scan = kDoneInterval;
    for (int64_t k = begin; k < end; ++k) {
        if (--until_scan == 0) {
            until_scan = kDoneInterval;
            done = finished_blocks(T);
            if (done == 0xFFFFFFFFu) break;
        }
        if (k + kPrefetch < end) {  // the list jumps around memory: fetch ahead
            const size_t n = size_t(f.ids[k + kPrefetch]);
            SL_PREFETCH(f.splats + n);
            SL_PREFETCH(f.colors + n * C);
        }
        const size_t n = size_t(f.ids[k]);
        const Splat& g = f.splats[n];
        const int li = int(k - begin);
        const float* col = f.colors + n * C;
        uint32_t todo = block_mask(g, X0, Y0, nx, ny, ~done, rdy, rbdy, rhcdy2);
        const V mx = splat(g.mx), ha = splat(g.ha), op = splat(g.op);
        while (todo) {
            const int b = lowest_bit(todo);
            todo &= todo - 1;
            const int r = b & 15, h = b >> 4, off = r * 16 + h * 8;
            const V dx = mx - load(px + 8 * h);
            V vis, al;
            Mask valid;
            eval_alpha(dx, ha, splat(rbdy[r]), splat(rhcdy2[r]), op, vis, al, valid);
            const V Tv = load(T + off);
            const V nt = Tv * (splat(1.f) - al);
            const Mask contrib = valid & (nt > splat(kMinTransmittance));
            const V w = keep(contrib, al * Tv);
            for (int ch = 0; ch < C; ++ch) {
                float* a = acc + ch * 256 + off;
                store(a, fmadd(w, splat(col[ch]), load(a)));
            }
            // Valid but not contributing means this Gaussian would take T to <= 1e-4: the pixel
            // stops, which its sign records (already-stopped pixels have nt < 0 and stay so).
            store(T + off, select(contrib, nt, negative_where(valid, Tv)));
            store_index_where(last + off, contrib, li);
        }
    }

    for (int r = 0; r < ny; ++r) {
        for (int c = 0; c < nx; ++c) {
            const int p = r * 16 + c;
            const size_t gp = size_t(Y0 + r) * f.W + (X0 + c);
            const float tf = T[p] < 0.f ? -T[p] : T[p];
            f.Tfinal[gp] = tf;
            f.alpha[gp] = 1.f - tf;
            f.last[gp] = last[p];
            float* o = f.out + gp * C;
            for (int ch = 0; ch < C; ++ch) o[ch] = acc[ch * 256 + p];
        }
    }
}

// Walks the tile's list back to front, recovering each pixel's transmittance by division, and
// adds each Gaussian's gradient summed over the tile to its row of `grad`, once (grad is this
// thread's private buffer, so no atomics).
//
// Per pixel, with u = dL/dalpha * exp(-sigma) where the 0.999 clamp is inactive, dL/dsigma =
// -opacity * u. The tile loop sums the moments X1 = sum u dx, Y1 = sum u dy, XX = sum u dx^2,
// XY = sum u dx dy, YY = sum u dy^2 and U = sum u; since sigma = a/2 dx^2 + b dx dy + c/2 dy^2
// (dx = mean_x - px), dL/dmean = -opacity (a X1 + b Y1, b X1 + c Y1), dL/dconic = -opacity
// (XX/2, XY, YY/2) and dL/dopacity = U.
//
// dL/dalpha_g = sum_ch dL/dout_ch (c_ch T_g - S_ch / (1 - alpha_g)) + dL/dalpha_out T_final /
// (1 - alpha_g), with S_ch the colour composited behind g. Only GS = sum_ch dL/dout_ch S_ch is
// needed, so one running scalar per pixel replaces the C per-channel sums.
template <int CT>
SL_KERNEL void backward_tile(const Frame& f, int tile, float* scratch, float* grad) {
    const int C = CT > 0 ? CT : f.C;
    const int stride = kGradRow + C;
    constexpr int kMoments = 6;  // X1, Y1, XX, XY, YY, U
    float* T = scratch;
    float* gAT = scratch + 256;  // dL/dalpha_out * T_final
    float* GS = scratch + 512;   // sum_ch dL/dout_ch * colour composited behind
    int* last = reinterpret_cast<int*>(scratch + 768);
    int* blast = reinterpret_cast<int*>(scratch + 1024);  // [32] last contributor per block
    float* G = scratch + 1280;                            // dL/dout, [C][256]
    V accl[CT > 0 ? kMoments + CT : 1];
    V* acc = CT > 0 ? accl : reinterpret_cast<V*>(G + size_t(C) * 256);  // [kMoments + C]
    alignas(32) float suml[CT > 0 ? kMoments + CT + 8 : 1];
    float* sums = CT > 0 ? suml : reinterpret_cast<float*>(acc + kMoments + C);  // [kMoments + C (+8)]
    alignas(32) float rdy[16], rbdy[16], rhcdy2[16];

    const int X0 = (tile % f.tiles_x) * 16, Y0 = (tile / f.tiles_x) * 16;
    const int nx = imin(16, f.W - X0), ny = imin(16, f.H - Y0);
    for (int r = 0; r < 16; ++r) {
        for (int c = 0; c < 16; ++c) {
            const int p = r * 16 + c;
            GS[p] = 0.f;
            if (r < ny && c < nx) {
                const size_t gp = size_t(Y0 + r) * f.W + (X0 + c);
                T[p] = f.Tfinal_in[gp];
                last[p] = f.last_in[gp];
                gAT[p] = f.grad_alpha ? f.grad_alpha[gp] * T[p] : 0.f;
                for (int ch = 0; ch < C; ++ch) G[ch * 256 + p] = f.grad_out[gp * C + ch];
            } else {
                T[p] = 0.f;
                last[p] = -1;
                gAT[p] = 0.f;
                for (int ch = 0; ch < C; ++ch) G[ch * 256 + p] = 0.f;
            }
        }
    }
    int maxl = -1;
    for (int b = 0; b < 32; ++b) {
        const int off = (b & 15) * 16 + (b >> 4) * 8;
        int m = -1;
        for (int q = 0; q < 8; ++q) m = imax(m, last[off + q]);
        blast[b] = m;
        maxl = imax(maxl, m);
    }
    const int64_t begin = f.offsets[tile];
    maxl = imin(maxl, int(f.offsets[tile + 1] - begin) - 1);  // guards against a foreign `last`

    const V lane = iota();
    alignas(32) float px[16];
    store(px, splat(float(X0) + 0.5f) + lane);
    store(px + 8, splat(float(X0) + 8.5f) + lane);
    for (int li = maxl; li >= 0; --li) {
        if (li >= kPrefetch) {
            const size_t n = size_t(f.ids[begin + li - kPrefetch]);
            SL_PREFETCH(f.splats + n);
            SL_PREFETCH(f.colors + n * C);
            SL_PREFETCH(grad + n * stride);
        }
        const size_t n = size_t(f.ids[begin + li]);
        const Splat& g = f.splats[n];
        const float* col = f.colors + n * C;
        uint32_t todo = block_mask(g, X0, Y0, nx, ny, bits_at_least32(blast, li), rdy, rbdy, rhcdy2);
        if (!todo) continue;
        const V mx = splat(g.mx), ha = splat(g.ha), op = splat(g.op);
        for (int k = 0; k < kMoments + C; ++k) acc[k] = splat(0.f);
        Mask any = no_lanes();
        while (todo) {
            const int b = lowest_bit(todo);
            todo &= todo - 1;
            const int r = b & 15, h = b >> 4, off = r * 16 + h * 8;
            const V dx = mx - load(px + 8 * h);
            V vis, al;
            Mask valid;
            eval_alpha(dx, ha, splat(rbdy[r]), splat(rhcdy2[r]), op, vis, al, valid);
            const Mask active = valid & last_at_least(last + off, li);
            any = any | active;
            const V Tv = load(T + off);
            const V ra = splat(1.f) / (splat(1.f) - al);
            const V Tb = Tv * ra;  // transmittance in front of this Gaussian
            store(T + off, select(active, Tb, Tv));
            const V fac = keep(active, al * Tb);  // this Gaussian's blending weight
            // gc = dL/dout . colour, in two chains so wide colours do not serialise on FMA latency.
            V gc0 = splat(0.f), gc1 = splat(0.f);
            int ch = 0;
            for (; ch + 2 <= C; ch += 2) {
                const V g0 = load(G + ch * 256 + off), g1 = load(G + (ch + 1) * 256 + off);
                gc0 = fmadd(g0, splat(col[ch]), gc0);
                gc1 = fmadd(g1, splat(col[ch + 1]), gc1);
                acc[kMoments + ch] = fmadd(fac, g0, acc[kMoments + ch]);
                acc[kMoments + ch + 1] = fmadd(fac, g1, acc[kMoments + ch + 1]);
            }
            if (ch < C) {
                const V g0 = load(G + ch * 256 + off);
                gc0 = fmadd(g0, splat(col[ch]), gc0);
                acc[kMoments + ch] = fmadd(fac, g0, acc[kMoments + ch]);
            }
            const V gc = gc0 + gc1;
            const V gs = load(GS + off);
            const V v_alpha = fmadd(Tb, gc, (load(gAT + off) - gs) * ra);
            store(GS + off, fmadd(fac, gc, gs));
            const Mask m2 = active & (op * vis <= splat(kMaxAlpha));  // no gradient through the clamp
            const V u = keep(m2, vis * v_alpha);
            const V dy = splat(rdy[r]), t = dx * u;
            acc[0] = acc[0] + t;
            acc[1] = fmadd(dy, u, acc[1]);
            acc[2] = fmadd(dx, t, acc[2]);
            acc[3] = fmadd(dy, t, acc[3]);
            acc[4] = fmadd(dy * dy, u, acc[4]);
            acc[5] = acc[5] + u;
        }
        if (bits(any)) {
            int k = 0;
            for (; k + 8 <= kMoments + C; k += 8) store_hsums8(sums + k, acc + k);
            for (; k < kMoments + C; ++k) sums[k] = hsum(acc[k]);
            const float a = 2.f * g.ha, b = g.b, c = 2.f * g.hc, nop = -g.op;
            const float X1 = sums[0], Y1 = sums[1];
            float* row = grad + n * stride;
            row[0] += nop * (a * X1 + b * Y1);
            row[1] += nop * (b * X1 + c * Y1);
            row[2] += nop * 0.5f * sums[2];
            row[3] += nop * sums[3];
            row[4] += nop * 0.5f * sums[4];
            row[5] += sums[5];
            for (int ch = 0; ch < C; ++ch) row[6 + ch] += sums[kMoments + ch];
        }
    }
}

// row[j] += sum over the nb blocks and their lanes of w * vals[j][block], for M channels at
// once (M independent FMA chains; `vals` is channel-major [M][256], `offs` the blocks' offsets,
// `row` unaligned).
template <int M>
SL_FN void add_channel_sums(const float* vals, const float* w, const int* offs, int nb, float* row) {
    V acc[M];
    for (int j = 0; j < M; ++j) acc[j] = splat(0.f);
    for (int i = 0; i < nb; ++i) {
        const V wi = load(w + 8 * i);
        const int off = offs[i];
        for (int j = 0; j < M; ++j) acc[j] = fmadd(wi, load(vals + j * 256 + off), acc[j]);
    }
    if constexpr (M == 8) {
        alignas(32) float sums[8];
        store_hsums8(sums, acc);
        storeu(row, loadu(row) + load(sums));
    } else {
        for (int j = 0; j < M; ++j) row[j] += hsum(acc[j]);
    }
}

// Forward-only weight accumulation: for each Gaussian of the tile, its blending weights
// w = alpha T at the tile's pixels summed, and summed against the per-pixel values, added once
// to its row [total, sums(C)] of `rows` (this thread's private buffer, so no atomics).
// Transmittance, skip and stop decisions are the forward pass's own expressions, so w is
// bit-identical to the weight forward_tile composites with. A Gaussian's weights go to a block
// buffer first, then the channels are summed in groups of 8 (any C without spilling).
SL_KERNEL void accumulate_tile(const Frame& f, int tile, float* scratch, float* rows) {
    const int C = f.C;
    const size_t stride = size_t(C) + 1;
    float* T = scratch;
    float* vals = scratch + 256;  // [C][256]
    alignas(32) float rdy[16], rbdy[16], rhcdy2[16];
    alignas(32) float wbuf[32 * 8];  // weights of the blocks a Gaussian reaches
    int offs[32];

    const int X0 = (tile % f.tiles_x) * 16, Y0 = (tile / f.tiles_x) * 16;
    const int nx = imin(16, f.W - X0), ny = imin(16, f.H - Y0);
    for (int r = 0; r < 16; ++r) {
        for (int c = 0; c < 16; ++c) {
            const int p = r * 16 + c;
            const bool inside = r < ny && c < nx;
            T[p] = inside ? 1.f : -1.f;
            // Padding pixels get weight +0; zero values keep 0 * garbage out of the sums.
            const float* v = inside ? f.values + (size_t(Y0 + r) * f.W + (X0 + c)) * C : nullptr;
            for (int ch = 0; ch < C; ++ch) vals[ch * 256 + p] = inside ? v[ch] : 0.f;
        }
    }
    uint32_t done = finished_blocks(T);

    const V lane = iota();
    alignas(32) float px[16];
    store(px, splat(float(X0) + 0.5f) + lane);
    store(px + 8, splat(float(X0) + 8.5f) + lane);
    const int64_t begin = f.offsets[tile], end = f.offsets[tile + 1];
    int until_scan = kDoneInterval;
    for (int64_t k = begin; k < end; ++k) {
        if (--until_scan == 0) {
            until_scan = kDoneInterval;
            done = finished_blocks(T);
            if (done == 0xFFFFFFFFu) break;
        }
        if (k + kPrefetch < end) {
            const size_t n = size_t(f.ids[k + kPrefetch]);
            SL_PREFETCH(f.splats + n);
            SL_PREFETCH(rows + n * stride);
        }
        const size_t n = size_t(f.ids[k]);
        const Splat& g = f.splats[n];
        uint32_t todo = block_mask(g, X0, Y0, nx, ny, ~done, rdy, rbdy, rhcdy2);
        const V mx = splat(g.mx), ha = splat(g.ha), op = splat(g.op);
        V wsum = splat(0.f);
        int nb = 0;
        while (todo) {
            const int b = lowest_bit(todo);
            todo &= todo - 1;
            const int r = b & 15, h = b >> 4, off = r * 16 + h * 8;
            const V dx = mx - load(px + 8 * h);
            V vis, al;
            Mask valid;
            eval_alpha(dx, ha, splat(rbdy[r]), splat(rhcdy2[r]), op, vis, al, valid);
            const V Tv = load(T + off);
            const V nt = Tv * (splat(1.f) - al);
            const Mask contrib = valid & (nt > splat(kMinTransmittance));
            const V w = keep(contrib, al * Tv);
            store(T + off, select(contrib, nt, negative_where(valid, Tv)));
            store(wbuf + 8 * nb, w);
            offs[nb++] = off;
            wsum = wsum + w;
        }
        // A contributing weight is > 1/255 * 1e-4, so a zero sum means no contribution.
        const float total = nb ? hsum(wsum) : 0.f;
        if (!(total > 0.f)) continue;
        float* row = rows + n * stride;
        row[0] += total;
        float* out = row + 1;
        int ch = 0;
        for (; ch + 8 <= C; ch += 8) add_channel_sums<8>(vals + ch * 256, wbuf, offs, nb, out + ch);
        if (C - ch >= 4) add_channel_sums<4>(vals + ch * 256, wbuf, offs, nb, out + ch), ch += 4;
        if (C - ch >= 2) add_channel_sums<2>(vals + ch * 256, wbuf, offs, nb, out + ch), ch += 2;
        if (C - ch >= 1) add_channel_sums<1>(vals + ch * 256, wbuf, offs, nb, out + ch);
    }
}

// Channel counts with unrolled colour loops; every other C takes the CT = 0 loop.
#define SL_PICK(KERNEL, C) \
    ((C) == 1 ? &KERNEL<1> : (C) == 3 ? &KERNEL<3> : (C) == 4 ? &KERNEL<4> : &KERNEL<0>)

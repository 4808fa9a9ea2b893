// Eight-lane float vectors for the tile kernels: AVX2+FMA or a portable fallback.
//
// Included (through raster_tile.h) once per instruction set, inside that instruction set's
// namespace. With SL_AVX2 every function carries target("avx2,fma") so the file needs no
// -mavx2 flag and the module still loads on any x86-64; the dispatcher checks the CPU.
// Only C headers and intrinsics are used here: inline std:: templates instantiated under two
// targets would be merged by the linker and could leak AVX2 code into the fallback path.

#if SL_AVX2

#define SL_FN static inline __attribute__((always_inline, target("avx2,fma")))
#define SL_KERNEL __attribute__((target("avx2,fma")))

struct V {
    __m256 v;
};
struct Mask {
    __m256 v;
};

SL_FN V splat(float x) { return {_mm256_set1_ps(x)}; }
SL_FN V load(const float* p) { return {_mm256_load_ps(p)}; }
SL_FN void store(float* p, V a) { _mm256_store_ps(p, a.v); }
SL_FN V loadu(const float* p) { return {_mm256_loadu_ps(p)}; }
SL_FN void storeu(float* p, V a) { _mm256_storeu_ps(p, a.v); }
SL_FN V iota() { return {_mm256_setr_ps(0.f, 1.f, 2.f, 3.f, 4.f, 5.f, 6.f, 7.f)}; }
SL_FN V operator+(V a, V b) { return {_mm256_add_ps(a.v, b.v)}; }
SL_FN V operator-(V a, V b) { return {_mm256_sub_ps(a.v, b.v)}; }
SL_FN V operator*(V a, V b) { return {_mm256_mul_ps(a.v, b.v)}; }
SL_FN V operator/(V a, V b) { return {_mm256_div_ps(a.v, b.v)}; }
SL_FN V fmadd(V a, V b, V c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }  // a*b+c, one rounding
SL_FN V vmin(V a, V b) { return {_mm256_min_ps(a.v, b.v)}; }
SL_FN V vmax(V a, V b) { return {_mm256_max_ps(a.v, b.v)}; }
// Ordered comparisons: false when either side is NaN.
SL_FN Mask operator>=(V a, V b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_GE_OQ)}; }
SL_FN Mask operator>(V a, V b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_GT_OQ)}; }
SL_FN Mask operator<=(V a, V b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_LE_OQ)}; }
SL_FN Mask operator&(Mask a, Mask b) { return {_mm256_and_ps(a.v, b.v)}; }
SL_FN Mask operator|(Mask a, Mask b) { return {_mm256_or_ps(a.v, b.v)}; }
SL_FN Mask andnot(Mask a, Mask b) { return {_mm256_andnot_ps(a.v, b.v)}; }  // ~a & b
SL_FN Mask no_lanes() { return {_mm256_setzero_ps()}; }
SL_FN V vsqrt(V a) { return {_mm256_sqrt_ps(a.v)}; }
SL_FN V negative_where(Mask m, V a) {  // -|a| where m (a >= 0 or already negative)
    return {_mm256_or_ps(a.v, _mm256_and_ps(m.v, _mm256_set1_ps(-0.f)))};
}
SL_FN V keep(Mask m, V a) { return {_mm256_and_ps(m.v, a.v)}; }  // a where m, else +0
SL_FN V select(Mask m, V a, V b) { return {_mm256_blendv_ps(b.v, a.v, m.v)}; }
SL_FN int bits(Mask m) { return _mm256_movemask_ps(m.v); }

// Integer lanes (per-pixel index of the last contributor) stored in int32 arrays.
SL_FN Mask last_at_least(const int* p, int i) {
    __m256i l = _mm256_load_si256(reinterpret_cast<const __m256i*>(p));
    return {_mm256_castsi256_ps(_mm256_cmpgt_epi32(l, _mm256_set1_epi32(i - 1)))};
}
SL_FN void store_index_where(int* p, Mask m, int i) {
    __m256 old = _mm256_castsi256_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(p)));
    __m256 nw = _mm256_castsi256_ps(_mm256_set1_epi32(i));
    _mm256_store_si256(reinterpret_cast<__m256i*>(p),
                       _mm256_castps_si256(_mm256_blendv_ps(old, nw, m.v)));
}

// Bit b set where a[b] >= i, for 32 ints.
SL_FN uint32_t bits_at_least32(const int* a, int i) {
    const __m256i t = _mm256_set1_epi32(i - 1);
    uint32_t m = 0;
    for (int q = 0; q < 4; ++q) {
        const __m256i v = _mm256_load_si256(reinterpret_cast<const __m256i*>(a + 8 * q));
        m |= uint32_t(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(v, t)))) << (8 * q);
    }
    return m;
}

SL_FN float hsum(V a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// p[k] = hsum(v[k]) for k < 8, via a transposing reduction (p need not be aligned).
SL_FN void store_hsums8(float* p, const V* v) {
    const __m256 a = _mm256_hadd_ps(v[0].v, v[1].v), b = _mm256_hadd_ps(v[2].v, v[3].v);
    const __m256 c = _mm256_hadd_ps(v[4].v, v[5].v), d = _mm256_hadd_ps(v[6].v, v[7].v);
    const __m256 ab = _mm256_hadd_ps(a, b), cd = _mm256_hadd_ps(c, d);
    const __m256 sum = _mm256_add_ps(_mm256_permute2f128_ps(ab, cd, 0x20), _mm256_permute2f128_ps(ab, cd, 0x31));
    _mm256_storeu_ps(p, sum);
}

// exp(x), Cephes single-precision polynomial (about 1 ulp on [-87, 88]).
SL_FN V vexp(V x) {
    __m256 xv = _mm256_min_ps(_mm256_max_ps(x.v, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    __m256 fx = _mm256_round_ps(_mm256_mul_ps(xv, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), xv);
    r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return {_mm256_mul_ps(p, _mm256_castsi256_ps(e))};
}

#elif (defined(__GNUC__) || defined(__clang__)) && !defined(SL_PLAIN_ARRAYS)
// Portable path: GCC/Clang vector extensions, lowered to whatever the target has (2 x SSE2 on a
// baseline x86-64, 2 x NEON on arm64).

#define SL_FN static inline __attribute__((always_inline))
#define SL_KERNEL

typedef float sl_f8 __attribute__((vector_size(32)));
typedef int32_t sl_i8 __attribute__((vector_size(32)));

struct V {
    sl_f8 v;
};
struct Mask {
    sl_i8 v;  // 0 or -1 per lane
};

SL_FN V splat(float x) { return {sl_f8{x, x, x, x, x, x, x, x}}; }
SL_FN V load(const float* p) { V r; memcpy(&r.v, p, 32); return r; }
SL_FN void store(float* p, V a) { memcpy(p, &a.v, 32); }
SL_FN V loadu(const float* p) { return load(p); }  // memcpy: any alignment
SL_FN void storeu(float* p, V a) { store(p, a); }
SL_FN V iota() { return {sl_f8{0.f, 1.f, 2.f, 3.f, 4.f, 5.f, 6.f, 7.f}}; }
SL_FN V operator+(V a, V b) { return {a.v + b.v}; }
SL_FN V operator-(V a, V b) { return {a.v - b.v}; }
SL_FN V operator*(V a, V b) { return {a.v * b.v}; }
SL_FN V operator/(V a, V b) { return {a.v / b.v}; }
SL_FN V fmadd(V a, V b, V c) { return {a.v * b.v + c.v}; }  // two roundings (-ffp-contract=off)
SL_FN Mask operator>=(V a, V b) { return {a.v >= b.v}; }
SL_FN Mask operator>(V a, V b) { return {a.v > b.v}; }
SL_FN Mask operator<=(V a, V b) { return {a.v <= b.v}; }
SL_FN Mask operator&(Mask a, Mask b) { return {a.v & b.v}; }
SL_FN Mask operator|(Mask a, Mask b) { return {a.v | b.v}; }
SL_FN Mask andnot(Mask a, Mask b) { return {~a.v & b.v}; }
SL_FN Mask no_lanes() { return {sl_i8{0, 0, 0, 0, 0, 0, 0, 0}}; }
SL_FN V keep(Mask m, V a) { return {(sl_f8)((sl_i8)a.v & m.v)}; }
SL_FN V select(Mask m, V a, V b) { return {(sl_f8)(((sl_i8)a.v & m.v) | ((sl_i8)b.v & ~m.v))}; }
// min/max with the second operand returned when either is NaN, as minps/maxps do.
SL_FN V vmin(V a, V b) { return select({a.v < b.v}, a, b); }
SL_FN V vmax(V a, V b) { return select({a.v > b.v}, a, b); }
SL_FN V vsqrt(V a) {
    for (int k = 0; k < 8; ++k) a.v[k] = sqrtf(a.v[k]);
    return a;
}
SL_FN V negative_where(Mask m, V a) {
    const sl_i8 sign = {INT32_MIN, INT32_MIN, INT32_MIN, INT32_MIN, INT32_MIN, INT32_MIN, INT32_MIN, INT32_MIN};
    return {(sl_f8)((sl_i8)a.v | (m.v & sign))};
}
SL_FN int bits(Mask m) {
    int b = 0;
    for (int k = 0; k < 8; ++k) b |= (m.v[k] ? 1 : 0) << k;
    return b;
}
SL_FN Mask last_at_least(const int* p, int i) {
    sl_i8 l;
    memcpy(&l, p, 32);
    return {l >= i};
}
SL_FN void store_index_where(int* p, Mask m, int i) {
    sl_i8 l;
    memcpy(&l, p, 32);
    l = (l & ~m.v) | (m.v & i);
    memcpy(p, &l, 32);
}
SL_FN uint32_t bits_at_least32(const int* a, int i) {
    uint32_t m = 0;
    for (int q = 0; q < 4; ++q) m |= uint32_t(bits(last_at_least(a + 8 * q, i))) << (8 * q);
    return m;
}
SL_FN float hsum(V a) {
    const float s0 = (a.v[0] + a.v[4]) + (a.v[2] + a.v[6]);
    const float s1 = (a.v[1] + a.v[5]) + (a.v[3] + a.v[7]);
    return s0 + s1;
}
SL_FN void store_hsums8(float* p, const V* v) {
    for (int j = 0; j < 8; ++j) p[j] = hsum(v[j]);
}
// exp(x), the same Cephes polynomial as the AVX2 path.
SL_FN V vexp(V x) {
    const V xv = vmin(vmax(x, splat(-87.3f)), splat(88.3f));
    // Round to nearest through the 1.5*2^23 trick (exact for |v| < 2^22).
    const sl_f8 fx = (xv.v * 1.44269504088896341f + 12582912.f) - 12582912.f;
    sl_f8 r = xv.v - fx * 0.693359375f;
    r = r - fx * -2.12194440e-4f;
    sl_f8 p = r * 1.9875691500e-4f + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + (r + 1.f);
    const sl_i8 e = (__builtin_convertvector(fx, sl_i8) + 127) << 23;
    return {p * (sl_f8)e};
}

#else  // plain loops over eight lanes, for compilers without vector extensions

#define SL_FN static inline
#define SL_KERNEL

struct alignas(32) V {
    float f[8];
};
struct alignas(32) Mask {
    int32_t m[8];  // 0 or -1
};

#define SL_LANES for (int k = 0; k < 8; ++k)

SL_FN V splat(float x) { V r; SL_LANES r.f[k] = x; return r; }
SL_FN V load(const float* p) { V r; SL_LANES r.f[k] = p[k]; return r; }
SL_FN void store(float* p, V a) { SL_LANES p[k] = a.f[k]; }
SL_FN V loadu(const float* p) { return load(p); }
SL_FN void storeu(float* p, V a) { store(p, a); }
SL_FN V iota() { V r; SL_LANES r.f[k] = float(k); return r; }
SL_FN V operator+(V a, V b) { V r; SL_LANES r.f[k] = a.f[k] + b.f[k]; return r; }
SL_FN V operator-(V a, V b) { V r; SL_LANES r.f[k] = a.f[k] - b.f[k]; return r; }
SL_FN V operator*(V a, V b) { V r; SL_LANES r.f[k] = a.f[k] * b.f[k]; return r; }
SL_FN V operator/(V a, V b) { V r; SL_LANES r.f[k] = a.f[k] / b.f[k]; return r; }
SL_FN V fmadd(V a, V b, V c) { V r; SL_LANES r.f[k] = a.f[k] * b.f[k] + c.f[k]; return r; }
// min/max with the second operand returned when either is NaN, as minps/maxps do.
SL_FN V vmin(V a, V b) { V r; SL_LANES r.f[k] = a.f[k] < b.f[k] ? a.f[k] : b.f[k]; return r; }
SL_FN V vmax(V a, V b) { V r; SL_LANES r.f[k] = a.f[k] > b.f[k] ? a.f[k] : b.f[k]; return r; }
SL_FN Mask operator>=(V a, V b) { Mask r; SL_LANES r.m[k] = a.f[k] >= b.f[k] ? -1 : 0; return r; }
SL_FN Mask operator>(V a, V b) { Mask r; SL_LANES r.m[k] = a.f[k] > b.f[k] ? -1 : 0; return r; }
SL_FN Mask operator<=(V a, V b) { Mask r; SL_LANES r.m[k] = a.f[k] <= b.f[k] ? -1 : 0; return r; }
SL_FN Mask operator&(Mask a, Mask b) { Mask r; SL_LANES r.m[k] = a.m[k] & b.m[k]; return r; }
SL_FN Mask operator|(Mask a, Mask b) { Mask r; SL_LANES r.m[k] = a.m[k] | b.m[k]; return r; }
SL_FN Mask andnot(Mask a, Mask b) { Mask r; SL_LANES r.m[k] = ~a.m[k] & b.m[k]; return r; }
SL_FN Mask no_lanes() { Mask r; SL_LANES r.m[k] = 0; return r; }
SL_FN V vsqrt(V a) { V r; SL_LANES r.f[k] = sqrtf(a.f[k]); return r; }
SL_FN V negative_where(Mask m, V a) { V r; SL_LANES r.f[k] = m.m[k] ? -fabsf(a.f[k]) : a.f[k]; return r; }
SL_FN uint32_t bits_at_least32(const int* a, int i) {
    uint32_t m = 0;
    for (int k = 0; k < 32; ++k) m |= uint32_t(a[k] >= i) << k;
    return m;
}
SL_FN V keep(Mask m, V a) { V r; SL_LANES r.f[k] = m.m[k] ? a.f[k] : 0.f; return r; }
SL_FN V select(Mask m, V a, V b) { V r; SL_LANES r.f[k] = m.m[k] ? a.f[k] : b.f[k]; return r; }
SL_FN int bits(Mask m) { int b = 0; SL_LANES b |= (m.m[k] ? 1 : 0) << k; return b; }
SL_FN Mask last_at_least(const int* p, int i) { Mask r; SL_LANES r.m[k] = p[k] >= i ? -1 : 0; return r; }
SL_FN void store_index_where(int* p, Mask m, int i) { SL_LANES if (m.m[k]) p[k] = i; }
SL_FN float hsum(V a) {
    float s0 = (a.f[0] + a.f[4]) + (a.f[2] + a.f[6]);
    float s1 = (a.f[1] + a.f[5]) + (a.f[3] + a.f[7]);
    return s0 + s1;
}
SL_FN void store_hsums8(float* p, const V* v) {
    for (int j = 0; j < 8; ++j) p[j] = hsum(v[j]);
}
SL_FN V vexp(V x) {
    V r;
    SL_LANES {
        float xv = x.f[k] > -87.3f ? x.f[k] : -87.3f;
        xv = xv < 88.3f ? xv : 88.3f;
        // Round to nearest through the 1.5*2^23 trick (exact for |v| < 2^22, no libm call).
        float fx = (xv * 1.44269504088896341f + 12582912.f) - 12582912.f;
        float rr = xv - fx * 0.693359375f;
        rr = rr - fx * -2.12194440e-4f;
        float p = 1.9875691500e-4f;
        p = p * rr + 1.3981999507e-3f;
        p = p * rr + 8.3334519073e-3f;
        p = p * rr + 4.1665795894e-2f;
        p = p * rr + 1.6666665459e-1f;
        p = p * rr + 5.0000001201e-1f;
        p = p * (rr * rr) + (rr + 1.f);
        uint32_t e = uint32_t(int32_t(fx) + 127) << 23;
        float scale;
        memcpy(&scale, &e, 4);
        r.f[k] = p * scale;
    }
    return r;
}
#undef SL_LANES

#endif

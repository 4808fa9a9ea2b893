// Language-query relevancy over Gaussians in one pass (fields/features/_query.py, FieldQuery).
//
// Each Gaussian's unit feature u_i (d floats, stored channel-major: unit_t[c * N + i]) is dotted
// with P positive and M negative directions (texts folded through the head, d floats each);
// the result is the LERF margin max_p (u·pos_p − max_j u·neg_j) (or max_p u·pos_p without
// negatives), to which the caller applies sigmoid(T · margin). Blocks of Gaussians stay in L1:
// each channel row of a block is read once and multiplied into all P + M accumulators, so the
// features are streamed from memory exactly once and nothing of size P·M·N is written.
#pragma once

#include <algorithm>
#include <cstring>
#include <cstdint>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace query {

constexpr int64_t kBlock = 512;  // Gaussians per scheduled chunk

constexpr int kMaxDirs = 16;  // register-blocked path up to this many texts; beyond, the plain one
typedef float v8 __attribute__((vector_size(32)));

// One block of Gaussians. With at most kMaxDirs directions, eight Gaussians at a time keep one
// accumulator vector per direction in registers across all d channels (each feature value is
// loaded once, no accumulator traffic); otherwise accumulators live in `acc` [K, kBlock].
// Written once, compiled twice (portable and AVX2+FMA).
#define QUERY_BLOCK_BODY                                                                          \
    int64_t j = 0;                                                                                \
    if (k_total <= kMaxDirs) {                                                                    \
        for (; j + 8 <= len; j += 8) {                                                            \
            v8 a[kMaxDirs];                                                                       \
            for (int k = 0; k < k_total; ++k) a[k] = v8{0, 0, 0, 0, 0, 0, 0, 0};                  \
            for (int c = 0; c < d; ++c) {                                                         \
                v8 r;                                                                             \
                std::memcpy(&r, unit_t + int64_t(c) * n + i0 + j, sizeof r);                     \
                for (int k = 0; k < k_total; ++k) a[k] += dirs[int64_t(k) * d + c] * r;           \
            }                                                                                     \
            v8 neg_max = v8{0, 0, 0, 0, 0, 0, 0, 0};                                              \
            if (k_total > p) {                                                                    \
                neg_max = a[p];                                                                   \
                for (int k = p + 1; k < k_total; ++k) neg_max = a[k] > neg_max ? a[k] : neg_max;  \
            }                                                                                     \
            v8 best = a[0] - neg_max;                                                             \
            for (int k = 1; k < p; ++k) {                                                         \
                const v8 v = a[k] - neg_max;                                                      \
                best = v > best ? v : best;                                                       \
            }                                                                                     \
            std::memcpy(out + i0 + j, &best, sizeof best);                                        \
        }                                                                                         \
    }                                                                                             \
    for (; j < len; ++j) { /* the tail, and many texts: one Gaussian at a time */                \
        float neg_max = -3.0e38f, best = -3.0e38f;                                                \
        for (int k = 0; k < k_total; ++k) {                                                       \
            float v = 0.0f;                                                                       \
            for (int c = 0; c < d; ++c) v += dirs[int64_t(k) * d + c] * unit_t[int64_t(c) * n + i0 + j]; \
            if (k < p) acc[k] = v; else neg_max = std::max(neg_max, v);                           \
        }                                                                                         \
        for (int k = 0; k < p; ++k) best = std::max(best, acc[k] - (k_total > p ? neg_max : 0.0f)); \
        out[i0 + j] = best;                                                                       \
    }

inline void block_generic(const float* __restrict unit_t, int64_t n, int d, const float* __restrict dirs,
                          int p, int k_total, int64_t i0, int64_t len, float* __restrict acc,
                          float* __restrict out) {
    QUERY_BLOCK_BODY
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2,fma"))) inline void block_avx2(const float* __restrict unit_t, int64_t n, int d,
                                                            const float* __restrict dirs, int p, int k_total,
                                                            int64_t i0, int64_t len, float* __restrict acc,
                                                            float* __restrict out) {
    QUERY_BLOCK_BODY
}
#endif
#undef QUERY_BLOCK_BODY

// unit_t [d,N] channel-major unit features; dirs [P+M, d] (positives first); out [N] margins.
inline void margins(const float* unit_t, int64_t n, int d, const float* dirs, int p, int m, float* out,
                    int threads, bool avx2) {
    const int64_t blocks = (n + kBlock - 1) / kBlock;
    const int k_total = p + m;
#pragma omp parallel num_threads(std::max(1, threads))
    {
        std::vector<float> acc(size_t(std::max(k_total, 1)) * 8);  // one 8-Gaussian group
#pragma omp for schedule(static)
        for (int64_t b = 0; b < blocks; ++b) {
            const int64_t i0 = b * kBlock;
            const int64_t len = std::min<int64_t>(kBlock, n - i0);
#if defined(__x86_64__) || defined(__i386__)
            if (avx2) {
                block_avx2(unit_t, n, d, dirs, p, k_total, i0, len, acc.data(), out);
                continue;
            }
#endif
            block_generic(unit_t, n, d, dirs, p, k_total, i0, len, acc.data(), out);
        }
    }
}

}  // namespace query

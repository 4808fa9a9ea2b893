// Projection of 3D Gaussians to screen-space splats plus SH colour (gsplat's "classic" EWA
// semantics, as stated in fields/rendering/_project_cpu.py), forward and hand-derived backward, over
// raw float32 buffers, OpenMP over Gaussians (the caller picks the thread count). raster_cpu.cpp
// binds it to Python.
//
// Backward recomputes each Gaussian's forward quantities (a few hundred flops) instead of saving
// them: the inputs are all it needs, and culled Gaussians (radii 0) get exactly zero gradients.
#pragma once

#include <math.h>
#include <stdint.h>

#include <algorithm>

namespace project {

constexpr float kAlphaMin = 1.0f / 255.0f;
constexpr float kExtendMax = 3.33f;
constexpr float kFovClamp = 0.3f;

constexpr float kC0 = 0.28209479177387814f;
constexpr float kC1 = 0.4886025119029199f;
constexpr float kC2[5] = {1.0925484305920792f, -1.0925484305920792f, 0.31539156525252005f,
                          -1.0925484305920792f, 0.5462742152960396f};
constexpr float kC3[7] = {-0.5900435899266435f, 2.890611442640554f, -0.4570457994644658f,
                          0.3731763325901154f,  -0.4570457994644658f, 1.445305721320277f,
                          -0.5900435899266435f};

// Per-frame constants.
struct View {
    float W[9];       // world-to-camera rotation, row-major
    float t[3];       // world-to-camera translation
    float campos[3];  // camera centre, world
    float fx, fy, cx, cy;
    float lxn, lyn, lxp, lyp;  // clamp limits of x/z (-lxn..lxp) and y/z for the Jacobian
    float near, far, eps2d;
    int width, height;
    int degree;  // SH degree evaluated (<= the data's)
    int K;       // SH coefficients per channel stored per Gaussian
};

inline View make_view(const double* viewmat, const double* campos, double fx, double fy, double cx,
                      double cy, int width, int height, double near, double far, double eps2d,
                      int degree, int K) {
    View v{};
    for (int r = 0; r < 3; ++r) {
        for (int c = 0; c < 3; ++c) v.W[r * 3 + c] = float(viewmat[r * 4 + c]);
        v.t[r] = float(viewmat[r * 4 + 3]);
        v.campos[r] = float(campos[r]);
    }
    v.fx = float(fx), v.fy = float(fy), v.cx = float(cx), v.cy = float(cy);
    const double tan_x = 0.5 * width / fx, tan_y = 0.5 * height / fy;
    v.lxn = float(cx / fx + kFovClamp * tan_x);
    v.lyn = float(cy / fy + kFovClamp * tan_y);
    v.lxp = float((width - cx) / fx + kFovClamp * tan_x);
    v.lyp = float((height - cy) / fy + kFovClamp * tan_y);
    v.near = float(near), v.far = float(far), v.eps2d = float(eps2d);
    v.width = width, v.height = height, v.degree = degree, v.K = K;
    return v;
}

struct Inputs {
    const float* means;   // [N,3]
    const float* quats;   // [N,4] wxyz, any norm
    const float* scales;  // [N,3] log
    const float* opac;    // [N] logits
    const float* sh;      // [N,K,3]
    int N;
};

// Everything about one Gaussian's geometry that forward and backward share.
struct Geo {
    float p[3];       // camera-frame mean
    float rz;         // 1 / z (z = 1 where z is out of [near, far], keeping culled rows finite)
    bool z_ok;
    float qn[4];      // normalised quaternion
    float rqnorm;     // 1 / |q|
    float R[9];       // rotation of qn
    float s[3];       // exp(scales)
    float M[9];       // R diag(s)
    float C[9];       // camera-frame covariance W M M^T W^T
    float J[6];       // 2x3 perspective Jacobian at the clamped point
    float tx, ty;     // z * clamped x/z, y/z
    bool clx, cly;    // x/z resp. y/z was clamped
    float cov[3];     // a, b, c of cov2d (eps2d added)
    float det;
};

inline void geometry(const View& v, const float* m, const float* q, const float* ls, Geo& g) {
    for (int r = 0; r < 3; ++r)
        g.p[r] = v.W[r * 3] * m[0] + v.W[r * 3 + 1] * m[1] + v.W[r * 3 + 2] * m[2] + v.t[r];
    const float z = g.p[2];
    g.z_ok = z >= v.near && z <= v.far;
    const float zs = g.z_ok ? z : 1.0f;
    g.rz = 1.0f / zs;

    const float qq = q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3];
    g.rqnorm = 1.0f / std::max(sqrtf(qq), 1e-12f);
    for (int k = 0; k < 4; ++k) g.qn[k] = q[k] * g.rqnorm;
    const float w = g.qn[0], x = g.qn[1], y = g.qn[2], zq = g.qn[3];
    float* R = g.R;
    R[0] = 1 - 2 * (y * y + zq * zq), R[1] = 2 * (x * y - w * zq), R[2] = 2 * (x * zq + w * y);
    R[3] = 2 * (x * y + w * zq), R[4] = 1 - 2 * (x * x + zq * zq), R[5] = 2 * (y * zq - w * x);
    R[6] = 2 * (x * zq - w * y), R[7] = 2 * (y * zq + w * x), R[8] = 1 - 2 * (x * x + y * y);
    for (int j = 0; j < 3; ++j) g.s[j] = expf(ls[j]);
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) g.M[i * 3 + j] = R[i * 3 + j] * g.s[j];
    // WM = W M, C = WM WM^T
    float WM[9];
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
            WM[i * 3 + j] = v.W[i * 3] * g.M[j] + v.W[i * 3 + 1] * g.M[3 + j] + v.W[i * 3 + 2] * g.M[6 + j];
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
            g.C[i * 3 + j] = WM[i * 3] * WM[j * 3] + WM[i * 3 + 1] * WM[j * 3 + 1] + WM[i * 3 + 2] * WM[j * 3 + 2];

    const float ux = g.p[0] * g.rz, uy = g.p[1] * g.rz;
    const float cux = std::min(std::max(ux, -v.lxn), v.lxp);
    const float cuy = std::min(std::max(uy, -v.lyn), v.lyp);
    g.clx = !(ux >= -v.lxn && ux <= v.lxp);
    g.cly = !(uy >= -v.lyn && uy <= v.lyp);
    g.tx = zs * cux, g.ty = zs * cuy;
    const float rz2 = g.rz * g.rz;
    g.J[0] = v.fx * g.rz, g.J[1] = 0.0f, g.J[2] = -v.fx * g.tx * rz2;
    g.J[3] = 0.0f, g.J[4] = v.fy * g.rz, g.J[5] = -v.fy * g.ty * rz2;
    // T = J C (2x3), cov2d = T J^T
    float T[6];
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j)
            T[i * 3 + j] = g.J[i * 3] * g.C[j] + g.J[i * 3 + 1] * g.C[3 + j] + g.J[i * 3 + 2] * g.C[6 + j];
    g.cov[0] = T[0] * g.J[0] + T[1] * g.J[1] + T[2] * g.J[2] + v.eps2d;
    g.cov[1] = T[0] * g.J[3] + T[1] * g.J[4] + T[2] * g.J[5];
    g.cov[2] = T[3] * g.J[3] + T[4] * g.J[4] + T[5] * g.J[5] + v.eps2d;
    g.det = g.cov[0] * g.cov[2] - g.cov[1] * g.cov[1];
}

// SH basis at unit direction d, (degree+1)^2 values.
inline void sh_basis(int degree, const float* d, float* b) {
    const float x = d[0], y = d[1], z = d[2];
    b[0] = kC0;
    if (degree < 1) return;
    b[1] = -kC1 * y, b[2] = kC1 * z, b[3] = -kC1 * x;
    if (degree < 2) return;
    const float xx = x * x, yy = y * y, zz = z * z;
    b[4] = kC2[0] * x * y;
    b[5] = kC2[1] * y * z;
    b[6] = kC2[2] * (2 * zz - xx - yy);
    b[7] = kC2[3] * x * z;
    b[8] = kC2[4] * (xx - yy);
    if (degree < 3) return;
    b[9] = kC3[0] * y * (3 * xx - yy);
    b[10] = kC3[1] * x * y * z;
    b[11] = kC3[2] * y * (4 * zz - xx - yy);
    b[12] = kC3[3] * z * (2 * zz - 3 * xx - 3 * yy);
    b[13] = kC3[4] * x * (4 * zz - xx - yy);
    b[14] = kC3[5] * z * (xx - yy);
    b[15] = kC3[6] * x * (xx - 3 * yy);
}

// g_d += sum_k gb[k] * grad(basis_k)(d)
inline void sh_basis_vjp(int degree, const float* d, const float* gb, float* gd) {
    const float x = d[0], y = d[1], z = d[2];
    gd[0] = gd[1] = gd[2] = 0.0f;
    if (degree < 1) return;
    gd[0] += -kC1 * gb[3], gd[1] += -kC1 * gb[1], gd[2] += kC1 * gb[2];
    if (degree < 2) return;
    const float xx = x * x, yy = y * y, zz = z * z;
    gd[0] += kC2[0] * y * gb[4] - 2 * kC2[2] * x * gb[6] + kC2[3] * z * gb[7] + 2 * kC2[4] * x * gb[8];
    gd[1] += kC2[0] * x * gb[4] + kC2[1] * z * gb[5] - 2 * kC2[2] * y * gb[6] - 2 * kC2[4] * y * gb[8];
    gd[2] += kC2[1] * y * gb[5] + 4 * kC2[2] * z * gb[6] + kC2[3] * x * gb[7];
    if (degree < 3) return;
    gd[0] += kC3[0] * 6 * x * y * gb[9] + kC3[1] * y * z * gb[10] - kC3[2] * 2 * x * y * gb[11] -
             kC3[3] * 6 * x * z * gb[12] + kC3[4] * (4 * zz - 3 * xx - yy) * gb[13] +
             kC3[5] * 2 * x * z * gb[14] + kC3[6] * (3 * xx - 3 * yy) * gb[15];
    gd[1] += kC3[0] * (3 * xx - 3 * yy) * gb[9] + kC3[1] * x * z * gb[10] +
             kC3[2] * (4 * zz - xx - 3 * yy) * gb[11] - kC3[3] * 6 * y * z * gb[12] -
             kC3[4] * 2 * x * y * gb[13] - kC3[5] * 2 * y * z * gb[14] - kC3[6] * 6 * x * y * gb[15];
    gd[2] += kC3[1] * x * y * gb[10] + kC3[2] * 8 * y * z * gb[11] +
             kC3[3] * (6 * zz - 3 * xx - 3 * yy) * gb[12] + kC3[4] * 8 * x * z * gb[13] +
             kC3[5] * (xx - yy) * gb[14];
}

// Unit view direction (mean - campos) and 1 / |mean - campos| (torch's normalize: eps 1e-12).
inline float view_dir(const View& v, const float* m, float* d) {
    const float u0 = m[0] - v.campos[0], u1 = m[1] - v.campos[1], u2 = m[2] - v.campos[2];
    const float rn = 1.0f / std::max(sqrtf(u0 * u0 + u1 * u1 + u2 * u2), 1e-12f);
    d[0] = u0 * rn, d[1] = u1 * rn, d[2] = u2 * rn;
    return rn;
}

inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// Outputs: means2d [N,2], conics [N,3], opacities [N] (activated), rgb [N,3], z [N], radii [N,2].
inline void forward(const View& v, const Inputs& in, int threads, float* means2d, float* conics,
                    float* opac, float* rgb, float* zout, int32_t* radii) {
    const int kd = (v.degree + 1) * (v.degree + 1);
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int i = 0; i < in.N; ++i) {
        Geo g;
        geometry(v, in.means + 3 * i, in.quats + 4 * i, in.scales + 3 * i, g);
        const bool det_ok = g.det > 0.0f;
        const float rdet = det_ok ? 1.0f / g.det : 1.0f;
        conics[3 * i] = g.cov[2] * rdet;
        conics[3 * i + 1] = -g.cov[1] * rdet;
        conics[3 * i + 2] = g.cov[0] * rdet;
        const float mx = v.fx * g.p[0] * g.rz + v.cx, my = v.fy * g.p[1] * g.rz + v.cy;
        means2d[2 * i] = mx, means2d[2 * i + 1] = my;
        zout[i] = g.p[2];
        const float o = sigmoid(in.opac[i]);
        opac[i] = o;

        // Opacity-aware box: alpha = o exp(-sigma) >= 1/255 inside it, at most 3.33 sigma.
        int32_t rx = 0, ry = 0;
        if (g.z_ok && det_ok && o >= kAlphaMin) {
            const float extend = std::min(sqrtf(2.0f * std::max(logf(o * 255.0f), 0.0f)), kExtendMax);
            const float fx_ = ceilf(extend * sqrtf(std::max(g.cov[0], 0.0f)));
            const float fy_ = ceilf(extend * sqrtf(std::max(g.cov[2], 0.0f)));
            const bool off = mx + fx_ <= 0.0f || mx - fx_ >= float(v.width) || my + fy_ <= 0.0f ||
                             my - fy_ >= float(v.height);
            if (!off && (fx_ > 0.0f || fy_ > 0.0f) && fx_ < 2e9f && fy_ < 2e9f)
                rx = int32_t(fx_), ry = int32_t(fy_);
        }
        radii[2 * i] = rx, radii[2 * i + 1] = ry;

        const float* sh = in.sh + size_t(i) * v.K * 3;
        float b[16], d[3];
        view_dir(v, in.means + 3 * i, d);
        sh_basis(v.degree, d, b);
        for (int c = 0; c < 3; ++c) {
            float acc = 0.0f;
            for (int k = 0; k < kd; ++k) acc += b[k] * sh[k * 3 + c];
            rgb[3 * i + c] = std::max(acc + 0.5f, 0.0f);
        }
    }
}

// Gradients of the inputs from those of the outputs (all [N,...] like forward's). Rows with
// radii (0, 0) get zeros.
inline void backward(const View& v, const Inputs& in, const int32_t* radii, const float* v_means2d,
                     const float* v_conics, const float* v_opac, const float* v_rgb,
                     const float* v_z, int threads, float* g_means, float* g_quats,
                     float* g_scales, float* g_opac, float* g_sh) {
    const int kd = (v.degree + 1) * (v.degree + 1);
    const int K = v.K;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int i = 0; i < in.N; ++i) {
        float* gm = g_means + 3 * i;
        float* gq = g_quats + 4 * i;
        float* gs = g_scales + 3 * i;
        float* gsh = g_sh + size_t(i) * K * 3;
        for (int k = 0; k < K * 3; ++k) gsh[k] = 0.0f;
        if (radii[2 * i] <= 0 && radii[2 * i + 1] <= 0) {
            gm[0] = gm[1] = gm[2] = 0.0f;
            gq[0] = gq[1] = gq[2] = gq[3] = 0.0f;
            gs[0] = gs[1] = gs[2] = 0.0f;
            g_opac[i] = 0.0f;
            continue;
        }
        const float* m = in.means + 3 * i;
        Geo g;
        geometry(v, m, in.quats + 4 * i, in.scales + 3 * i, g);

        // opacity
        const float o = sigmoid(in.opac[i]);
        g_opac[i] = v_opac[i] * o * (1.0f - o);

        // SH colour -> sh, view direction -> mean
        float gmean[3] = {0.0f, 0.0f, 0.0f};
        {
            const float* sh = in.sh + size_t(i) * K * 3;
            float b[16], d[3];
            const float rn = view_dir(v, m, d);
            sh_basis(v.degree, d, b);
            float gc[3];
            for (int c = 0; c < 3; ++c) {
                float acc = 0.0f;
                for (int k = 0; k < kd; ++k) acc += b[k] * sh[k * 3 + c];
                gc[c] = acc + 0.5f >= 0.0f ? v_rgb[3 * i + c] : 0.0f;  // clamp_min passes at 0
            }
            float gb[16];
            for (int k = 0; k < kd; ++k) {
                gsh[k * 3] = b[k] * gc[0], gsh[k * 3 + 1] = b[k] * gc[1], gsh[k * 3 + 2] = b[k] * gc[2];
                gb[k] = sh[k * 3] * gc[0] + sh[k * 3 + 1] * gc[1] + sh[k * 3 + 2] * gc[2];
            }
            if (v.degree > 0) {
                float gd[3];
                sh_basis_vjp(v.degree, d, gb, gd);
                const float dot = gd[0] * d[0] + gd[1] * d[1] + gd[2] * d[2];
                for (int r = 0; r < 3; ++r) gmean[r] = (gd[r] - d[r] * dot) * rn;
            }
        }

        // conic = inverse(cov2d): v_cov = -inv G inv with G the symmetric gradient of inv
        const float rdet = 1.0f / g.det;
        const float ia = g.cov[2] * rdet, ib = -g.cov[1] * rdet, ic = g.cov[0] * rdet;
        const float Ga = v_conics[3 * i], Gb = 0.5f * v_conics[3 * i + 1], Gc = v_conics[3 * i + 2];
        // P = inv G
        const float P00 = ia * Ga + ib * Gb, P01 = ia * Gb + ib * Gc;
        const float P10 = ib * Ga + ic * Gb, P11 = ib * Gb + ic * Gc;
        float S[4];  // v_cov2d = -(P inv), symmetric
        S[0] = -(P00 * ia + P01 * ib);
        S[1] = -(P00 * ib + P01 * ic);
        S[2] = -(P10 * ia + P11 * ib);
        S[3] = -(P10 * ib + P11 * ic);
        const float s01 = 0.5f * (S[1] + S[2]);
        S[1] = S[2] = s01;

        // cov2d = J C J^T + eps2d I: v_C = J^T S J, v_J = 2 S J C
        float SJ[6];  // S J, 2x3
        for (int j = 0; j < 3; ++j) {
            SJ[j] = S[0] * g.J[j] + S[1] * g.J[3 + j];
            SJ[3 + j] = S[2] * g.J[j] + S[3] * g.J[3 + j];
        }
        float vJ[6];
        for (int r = 0; r < 2; ++r)
            for (int j = 0; j < 3; ++j)
                vJ[r * 3 + j] = 2.0f * (SJ[r * 3] * g.C[j] + SJ[r * 3 + 1] * g.C[3 + j] +
                                        SJ[r * 3 + 2] * g.C[6 + j]);
        float vC[9];
        for (int a = 0; a < 3; ++a)
            for (int c = 0; c < 3; ++c) vC[a * 3 + c] = g.J[a] * SJ[c] + g.J[3 + a] * SJ[3 + c];

        // camera-frame mean: means2d, z, and the Jacobian (with gsplat's clamp)
        float gp[3];
        const float rz = g.rz, rz2 = rz * rz, rz3 = rz2 * rz;
        const float x = g.p[0], y = g.p[1];
        const float vmx = v_means2d[2 * i], vmy = v_means2d[2 * i + 1];
        gp[0] = v.fx * rz * vmx;
        gp[1] = v.fy * rz * vmy;
        gp[2] = -(v.fx * x * vmx + v.fy * y * vmy) * rz2 + v_z[i];
        gp[2] += -v.fx * rz2 * vJ[0] - v.fy * rz2 * vJ[4];
        // J02 = -fx tx / z^2: tx = x (free) or z * limit (clamped)
        if (g.clx) {
            gp[2] += v.fx * g.tx * rz3 * vJ[2];
        } else {
            gp[0] += -v.fx * rz2 * vJ[2];
            gp[2] += 2.0f * v.fx * g.tx * rz3 * vJ[2];
        }
        if (g.cly) {
            gp[2] += v.fy * g.ty * rz3 * vJ[5];
        } else {
            gp[1] += -v.fy * rz2 * vJ[5];
            gp[2] += 2.0f * v.fy * g.ty * rz3 * vJ[5];
        }
        for (int c = 0; c < 3; ++c)
            gm[c] = gmean[c] + v.W[c] * gp[0] + v.W[3 + c] * gp[1] + v.W[6 + c] * gp[2];

        // C = W Sig W^T: v_Sig = W^T v_C W; Sig = M M^T: v_M = 2 v_Sig M
        float tmp[9], vSig[9];
        for (int a = 0; a < 3; ++a)
            for (int c = 0; c < 3; ++c)
                tmp[a * 3 + c] = v.W[a] * vC[c] + v.W[3 + a] * vC[3 + c] + v.W[6 + a] * vC[6 + c];
        for (int a = 0; a < 3; ++a)
            for (int c = 0; c < 3; ++c)
                vSig[a * 3 + c] = tmp[a * 3] * v.W[c] + tmp[a * 3 + 1] * v.W[3 + c] + tmp[a * 3 + 2] * v.W[6 + c];
        float vM[9];
        for (int a = 0; a < 3; ++a)
            for (int c = 0; c < 3; ++c)
                vM[a * 3 + c] = 2.0f * (vSig[a * 3] * g.M[c] + vSig[a * 3 + 1] * g.M[3 + c] +
                                        vSig[a * 3 + 2] * g.M[6 + c]);
        // M = R diag(s)
        float vR[9];
        for (int j = 0; j < 3; ++j) {
            float acc = 0.0f;
            for (int a = 0; a < 3; ++a) {
                vR[a * 3 + j] = vM[a * 3 + j] * g.s[j];
                acc += vM[a * 3 + j] * g.R[a * 3 + j];
            }
            gs[j] = acc * g.s[j];
        }
        // R(qn) -> qn -> q
        const float w = g.qn[0], qx = g.qn[1], qy = g.qn[2], qz = g.qn[3];
        float vq[4];
        vq[0] = 2.0f * (qx * (vR[7] - vR[5]) + qy * (vR[2] - vR[6]) + qz * (vR[3] - vR[1]));
        vq[1] = 2.0f * (-2.0f * qx * (vR[4] + vR[8]) + qy * (vR[3] + vR[1]) + qz * (vR[6] + vR[2]) +
                        w * (vR[7] - vR[5]));
        vq[2] = 2.0f * (qx * (vR[3] + vR[1]) - 2.0f * qy * (vR[0] + vR[8]) + qz * (vR[7] + vR[5]) +
                        w * (vR[2] - vR[6]));
        vq[3] = 2.0f * (qx * (vR[6] + vR[2]) + qy * (vR[7] + vR[5]) - 2.0f * qz * (vR[0] + vR[4]) +
                        w * (vR[3] - vR[1]));
        const float dq = vq[0] * w + vq[1] * qx + vq[2] * qy + vq[3] * qz;
        for (int k = 0; k < 4; ++k) gq[k] = (vq[k] - g.qn[k] * dq) * g.rqnorm;
    }
}

}  // namespace project

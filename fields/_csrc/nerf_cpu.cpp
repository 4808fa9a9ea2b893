// CPU kernels of scenelab's NeRF (fields/nerf): the multi-resolution hash encoding's forward and
// backward and the occupancy-grid ray marcher. numpy in, numpy out, GIL released while computing.
// The torch wrappers and the plain-torch references they are tested against are in
// fields/nerf/_encoding.py and fields/nerf/_march.py.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace py = pybind11;

namespace {

using FArr = py::array_t<float, py::array::c_style | py::array::forcecast>;
using IArr = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using BArr = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

void expect(bool ok, const std::string& msg) {
    if (!ok) throw std::invalid_argument("nerf_cpu: " + msg);
}

struct Layout {
    const int32_t* res;
    const int32_t* offsets;
    const int32_t* sizes;
    const uint8_t* hashed;
    int L;
};

Layout layout_of(const IArr& res, const IArr& offsets, const IArr& sizes, const BArr& hashed) {
    const int L = int(res.size());
    expect(L > 0 && offsets.size() == L && sizes.size() == L && hashed.size() == L,
           "resolutions, offsets, sizes and hashed must have one entry per level");
    return Layout{res.data(), offsets.data(), sizes.data(), hashed.data(), L};
}

int threads_of(int threads) { return threads > 0 ? threads : omp_get_max_threads(); }

// The 8 table rows and trilinear weights of point p at one level (same arithmetic as
// fields/nerf/_encoding.py: uint32 spatial hash, cells clamped to [0, N-1]).
inline void corners(const float* p, int n, int32_t offset, int32_t size, bool hashed, int64_t* rows,
                    float* w) {
    int32_t b[3];
    float f[3];
    for (int d = 0; d < 3; ++d) {
        const float pos = p[d] * float(n);
        int32_t c = int32_t(std::floor(pos));
        c = std::min(std::max(c, 0), n - 1);
        b[d] = c;
        f[d] = pos - float(c);
    }
    const uint32_t n1 = uint32_t(n) + 1;
    for (int c = 0; c < 8; ++c) {
        const uint32_t x = uint32_t(b[0] + (c & 1)), y = uint32_t(b[1] + ((c >> 1) & 1)),
                       z = uint32_t(b[2] + ((c >> 2) & 1));
        uint32_t i;
        if (hashed) {
            i = ((x * 1u) ^ (y * 2654435761u) ^ (z * 805459861u)) % uint32_t(size);
        } else {
            i = x + n1 * (y + n1 * z);
        }
        rows[c] = int64_t(offset) + int64_t(i);
        const float wx = (c & 1) ? f[0] : 1.f - f[0];
        const float wy = ((c >> 1) & 1) ? f[1] : 1.f - f[1];
        const float wz = ((c >> 2) & 1) ? f[2] : 1.f - f[2];
        w[c] = wx * wy * wz;
    }
}

// out[S, L*F]
py::array_t<float> encode_forward(const FArr& x, const FArr& table, const IArr& res, const IArr& offsets,
                                  const IArr& sizes, const BArr& hashed, int threads) {
    expect(x.ndim() == 2 && x.shape(1) == 3, "x must be [S,3]");
    expect(table.ndim() == 2, "table must be [rows,F]");
    const Layout lay = layout_of(res, offsets, sizes, hashed);
    const int64_t S = x.shape(0);
    const int F = int(table.shape(1));
    const int64_t rows = table.shape(0);
    expect(lay.offsets[lay.L - 1] + lay.sizes[lay.L - 1] <= rows, "table has fewer rows than the layout");
    py::array_t<float> out({S, int64_t(lay.L) * F});
    const float* X = x.data();
    const float* T = table.data();
    float* O = out.mutable_data();
    {
        py::gil_scoped_release release;
#pragma omp parallel for schedule(static) num_threads(threads_of(threads))
        for (int64_t s = 0; s < S; ++s) {
            int64_t r[8];
            float w[8];
            for (int l = 0; l < lay.L; ++l) {
                corners(X + 3 * s, lay.res[l], lay.offsets[l], lay.sizes[l], lay.hashed[l] != 0, r, w);
                float* o = O + (s * lay.L + l) * F;
                for (int k = 0; k < F; ++k) o[k] = 0.f;
                for (int c = 0; c < 8; ++c) {
                    const float* t = T + r[c] * F;
                    for (int k = 0; k < F; ++k) o[k] += w[c] * t[k];
                }
            }
        }
    }
    return out;
}

// d loss / d table [rows, F] from d loss / d out [S, L*F]. Each thread scatters into its own
// table and the tables are summed in thread order: the result does not depend on timing.
py::array_t<float> encode_backward(const FArr& x, const FArr& grad_out, int64_t rows, int F, const IArr& res,
                                   const IArr& offsets, const IArr& sizes, const BArr& hashed, int threads) {
    const Layout lay = layout_of(res, offsets, sizes, hashed);
    expect(x.ndim() == 2 && x.shape(1) == 3, "x must be [S,3]");
    const int64_t S = x.shape(0);
    expect(grad_out.ndim() == 2 && grad_out.shape(0) == S && grad_out.shape(1) == int64_t(lay.L) * F,
           "grad_out must be [S, L*F]");
    py::array_t<float> grad({rows, int64_t(F)});
    float* G = grad.mutable_data();
    const float* X = x.data();
    const float* GO = grad_out.data();
    const int nt = threads_of(threads);
    {
        py::gil_scoped_release release;
        std::vector<std::vector<float>> part(nt > 1 ? nt - 1 : 0);
#pragma omp parallel num_threads(nt)
        {
            const int tid = omp_get_thread_num();
            const int n = omp_get_num_threads();
            float* mine;
            if (tid == 0) {
                mine = G;
            } else {
                part[tid - 1].assign(size_t(rows) * F, 0.f);
                mine = part[tid - 1].data();
            }
            if (tid == 0) std::fill(G, G + rows * F, 0.f);
            const int64_t lo = S * tid / n, hi = S * (tid + 1) / n;
            int64_t r[8];
            float w[8];
            for (int64_t s = lo; s < hi; ++s) {
                for (int l = 0; l < lay.L; ++l) {
                    const float* g = GO + (s * lay.L + l) * F;
                    bool any = false;
                    for (int k = 0; k < F; ++k) any = any || g[k] != 0.f;
                    if (!any) continue;
                    corners(X + 3 * s, lay.res[l], lay.offsets[l], lay.sizes[l], lay.hashed[l] != 0, r, w);
                    for (int c = 0; c < 8; ++c) {
                        float* t = mine + r[c] * F;
                        for (int k = 0; k < F; ++k) t[k] += w[c] * g[k];
                    }
                }
            }
#pragma omp barrier
            // Sum the other threads' tables into G, rows split between threads.
            const int64_t n_el = rows * F;
            const int64_t a = n_el * tid / n, b = n_el * (tid + 1) / n;
            for (size_t p = 0; p < part.size(); ++p) {
                const float* src = part[p].data();
                for (int64_t e = a; e < b; ++e) G[e] += src[e];
            }
        }
    }
    return grad;
}

// Occupancy-grid ray marching. For ray r, candidate samples sit at t_k = t0[r] + (k + 0.5) dt
// (k = 0, 1, ...) while t_k < t1[r]; with cone stepping (cone > 0) the step grows to
// clamp(t * cone, dt, dt_max). A sample is kept when the grid cell of its (contracted) position is
// occupied. Returns (ray_ids[S] int32, t[S], delta[S]) in ray order, t increasing within a ray.
// Positions map to the grid through x_n = (x - center) / radius in [-1,1]^3 (box) or the
// mip-NeRF 360 contraction of x_n into [-2,2]^3 rescaled to [-1,1]^3 (contract = 1).
inline void to_unit(const float* o, const float* d, float t, const float* center, float radius, bool contract,
                    float* u) {
    float p[3];
    for (int k = 0; k < 3; ++k) p[k] = (o[k] + t * d[k] - center[k]) / radius;
    if (contract) {
        const float m = std::max(std::fabs(p[0]), std::max(std::fabs(p[1]), std::fabs(p[2])));
        if (m > 1.f) {
            const float s = (2.f - 1.f / m) / m;
            for (int k = 0; k < 3; ++k) p[k] *= s;
        }
        for (int k = 0; k < 3; ++k) p[k] *= 0.5f;
    }
    for (int k = 0; k < 3; ++k) u[k] = 0.5f * (p[k] + 1.f);  // [0,1]
}

py::tuple march(const FArr& origins, const FArr& dirs, const FArr& t0, const FArr& t1, const BArr& occ, int res,
                const FArr& center, float radius, int contract, float dt, float cone, float dt_max,
                int max_samples_per_ray, int threads) {
    expect(origins.ndim() == 2 && origins.shape(1) == 3, "origins must be [R,3]");
    const int64_t R = origins.shape(0);
    expect(dirs.ndim() == 2 && dirs.shape(0) == R && dirs.shape(1) == 3, "dirs must be [R,3]");
    expect(t0.size() == R && t1.size() == R, "t0 and t1 must be [R]");
    expect(occ.size() == int64_t(res) * res * res, "occupancy must be [res^3]");
    expect(center.size() == 3, "center must be [3]");
    expect(dt > 0.f && radius > 0.f && max_samples_per_ray > 0, "dt, radius and max samples must be > 0");
    const float* O = origins.data();
    const float* D = dirs.data();
    const float* A = t0.data();
    const float* B = t1.data();
    const uint8_t* G = occ.data();
    const float* C = center.data();
    const int nt = threads_of(threads);
    std::vector<std::vector<int32_t>> ids(nt);
    std::vector<std::vector<float>> ts(nt), dts(nt);
    std::vector<int64_t> bounds(nt + 1);
    {
        py::gil_scoped_release release;
#pragma omp parallel num_threads(nt)
        {
            const int tid = omp_get_thread_num();
            const int n = omp_get_num_threads();
            const int64_t lo = R * tid / n, hi = R * (tid + 1) / n;
            auto& I = ids[tid];
            auto& Tt = ts[tid];
            auto& Dt = dts[tid];
            for (int64_t r = lo; r < hi; ++r) {
                float t = A[r];
                const float end = B[r];
                int kept = 0;
                while (t < end && kept < max_samples_per_ray) {
                    const float step = cone > 0.f ? std::min(std::max(t * cone, dt), dt_max) : dt;
                    const float tm = t + 0.5f * step;
                    if (tm >= end) break;
                    float u[3];
                    to_unit(O + 3 * r, D + 3 * r, tm, C, radius, contract != 0, u);
                    int cell[3];
                    bool inside = true;
                    for (int k = 0; k < 3; ++k) {
                        const int c = int(std::floor(u[k] * float(res)));
                        inside = inside && c >= 0 && c < res;
                        cell[k] = c;
                    }
                    if (inside && G[(int64_t(cell[2]) * res + cell[1]) * res + cell[0]]) {
                        I.push_back(int32_t(r));
                        Tt.push_back(tm);
                        Dt.push_back(step);
                        ++kept;
                    }
                    t += step;
                }
            }
        }
    }
    int64_t S = 0;
    for (int k = 0; k < nt; ++k) S += int64_t(ids[k].size());
    py::array_t<int32_t> out_id(S);
    py::array_t<float> out_t(S), out_dt(S);
    int64_t at = 0;
    for (int k = 0; k < nt; ++k) {
        std::copy(ids[k].begin(), ids[k].end(), out_id.mutable_data() + at);
        std::copy(ts[k].begin(), ts[k].end(), out_t.mutable_data() + at);
        std::copy(dts[k].begin(), dts[k].end(), out_dt.mutable_data() + at);
        at += int64_t(ids[k].size());
    }
    return py::make_tuple(out_id, out_t, out_dt);
}

}  // namespace

PYBIND11_MODULE(_nerf_cpu, m) {
    m.doc() = "CPU kernels of scenelab's NeRF: hash encoding forward/backward, occupancy-grid ray "
              "marching. Use fields.nerf (the torch wrappers), not this module.";
    m.def("encode_forward", &encode_forward, py::arg("x"), py::arg("table"), py::arg("resolutions"),
          py::arg("offsets"), py::arg("sizes"), py::arg("hashed"), py::arg("threads") = 0,
          "Hash-grid features [S, L*F] of points x [S,3] in [0,1].");
    m.def("encode_backward", &encode_backward, py::arg("x"), py::arg("grad_out"), py::arg("rows"), py::arg("F"),
          py::arg("resolutions"), py::arg("offsets"), py::arg("sizes"), py::arg("hashed"), py::arg("threads") = 0,
          "d loss / d table [rows, F] from d loss / d features [S, L*F] (deterministic).");
    m.def("march", &march, py::arg("origins"), py::arg("dirs"), py::arg("t0"), py::arg("t1"), py::arg("occupancy"),
          py::arg("res"), py::arg("center"), py::arg("radius"), py::arg("contract"), py::arg("dt"), py::arg("cone"),
          py::arg("dt_max"), py::arg("max_samples_per_ray"), py::arg("threads") = 0,
          "Samples of rays in occupied grid cells: (ray_ids[S] int32, t[S], delta[S]), ray-major.");
}

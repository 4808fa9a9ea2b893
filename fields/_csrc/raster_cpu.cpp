// Python bindings of the CPU tile rasterizer (raster_core.h) and of the projection (project.h):
// numpy in, numpy out, GIL released while computing. The torch autograd wrappers are
// fields/rendering/_cpu.py and fields/rendering/_project_cpu.py.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "project.h"
#include "query.h"
#include "raster_core.h"

namespace py = pybind11;

namespace {

using FArr = py::array_t<float, py::array::c_style | py::array::forcecast>;
using IArr = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using LArr = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

using BArr = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

// A numpy view of a buffer inside `owner` (a capsule that keeps the whole Saved alive).
template <typename T>
py::array_t<T> view(T* data, std::vector<py::ssize_t> shape, const py::capsule& owner) {
    return py::array_t<T>(shape, data, owner);
}

void expect(bool ok, const std::string& msg) {
    if (!ok) throw std::invalid_argument("rasterize_cpu: " + msg);
}

void expect_shape(const py::array& a, std::initializer_list<py::ssize_t> shape, const char* name) {
    bool ok = a.ndim() == py::ssize_t(shape.size());
    int d = 0;
    for (py::ssize_t s : shape) ok = ok && a.shape(d++) == s;
    expect(ok, std::string(name) + " has the wrong shape");
}

// The geometry every pass reads (no colours: in.colors = null, in.C = 0).
raster::Scene2D geometry(const FArr& means, const FArr& conics, const FArr& opac, const IArr& radii, int W,
                         int H) {
    expect(W > 0 && H > 0 && W <= (1 << 20) && H <= (1 << 20), "width and height must be in [1, 2^20]");
    expect(means.ndim() == 2 && means.shape(1) == 2, "means2d must be [N,2]");
    const py::ssize_t N = means.shape(0);
    expect(N < (py::ssize_t(1) << 31), "too many Gaussians");
    expect_shape(conics, {N, 3}, "conics");
    expect_shape(opac, {N}, "opacities");
    expect_shape(radii, {N, 2}, "radii");
    raster::Scene2D in{};
    in.means = means.data();
    in.conics = conics.data();
    in.opac = opac.data();
    in.radii = radii.data();
    in.N = int(N);
    in.W = W;
    in.H = H;
    return in;
}

raster::Scene2D scene(const FArr& means, const FArr& conics, const FArr& opac, const FArr& colors,
                      const IArr& radii, int W, int H) {
    raster::Scene2D in = geometry(means, conics, opac, radii, W, H);
    expect(colors.ndim() == 2 && colors.shape(0) == in.N && colors.shape(1) >= 1,
           "colors must be [N,C] with C >= 1");
    in.colors = colors.data();
    in.C = int(colors.shape(1));
    return in;
}

py::tuple forward(const FArr& means, const FArr& conics, const FArr& opac, const FArr& colors,
                  const FArr& depths, const IArr& radii, int W, int H, int threads) {
    raster::Scene2D in = scene(means, conics, opac, colors, radii, W, H);
    expect_shape(depths, {in.N}, "depths");
    in.depths = depths.data();
    FArr out({py::ssize_t(H), py::ssize_t(W), py::ssize_t(in.C)});
    FArr alpha({py::ssize_t(H), py::ssize_t(W), py::ssize_t(1)});
    float *po = out.mutable_data(), *pa = alpha.mutable_data();
    auto* sv = new raster::Saved();
    py::capsule owner(sv, [](void* p) { delete reinterpret_cast<raster::Saved*>(p); });
    {
        py::gil_scoped_release nogil;
        raster::render_forward(in, threads, po, pa, *sv);
    }
    py::tuple saved = py::make_tuple(
        view(reinterpret_cast<uint8_t*>(sv->splats.data), {py::ssize_t(in.N * sizeof(raster::Splat))},
             owner),
        view(sv->offsets.data(), {py::ssize_t(sv->offsets.size())}, owner),
        view(sv->ids.data, {py::ssize_t(sv->ids.size)}, owner),
        view(sv->Tfinal.data, {H, W}, owner), view(sv->last.data, {H, W}, owner));
    return py::make_tuple(out, alpha, saved);
}

py::tuple backward(const FArr& colors, const BArr& splats, const LArr& offsets, const IArr& ids,
                   const FArr& Tfinal, const IArr& last, const FArr& grad_out, const py::object& grad_alpha_obj,
                   int W, int H, int threads) {
    expect(W > 0 && H > 0, "width and height must be positive");
    expect(colors.ndim() == 2 && colors.shape(1) >= 1, "colors must be [N,C]");
    const py::ssize_t N = colors.shape(0);
    const int C = int(colors.shape(1));
    const int ntiles = ((W + 15) / 16) * ((H + 15) / 16);
    expect_shape(splats, {N * py::ssize_t(sizeof(raster::Splat))}, "splats");
    expect_shape(offsets, {ntiles + 1}, "tile_offsets");
    expect(ids.ndim() == 1, "tile_ids must be 1-D");
    expect_shape(Tfinal, {H, W}, "T_final");
    expect_shape(last, {H, W}, "last");
    expect_shape(grad_out, {H, W, C}, "grad_out");
    // The saved state comes from forward(); these checks keep a foreign one from reading or
    // writing out of bounds (the kernels also clamp `last` to each tile's list).
    const int64_t* po = offsets.data();
    expect(po[0] == 0 && po[ntiles] == ids.shape(0), "tile offsets do not match the tile lists");
    for (int t = 0; t < ntiles; ++t) expect(po[t] <= po[t + 1], "tile offsets must not decrease");
    const int32_t* pi = ids.data();
    for (py::ssize_t k = 0; k < ids.shape(0); ++k) expect(pi[k] >= 0 && pi[k] < N, "tile_ids out of range");
    // Splat records are read as structs: re-align them if the buffer was copied somewhere odd.
    std::vector<raster::Splat> realigned;
    const raster::Splat* ps = reinterpret_cast<const raster::Splat*>(splats.data());
    if (reinterpret_cast<uintptr_t>(ps) % alignof(raster::Splat) != 0) {
        realigned.resize(N);
        memcpy(static_cast<void*>(realigned.data()), splats.data(), N * sizeof(raster::Splat));
        ps = realigned.data();
    }
    FArr grad_alpha;
    const float* pga = nullptr;
    if (!grad_alpha_obj.is_none()) {
        grad_alpha = FArr::ensure(grad_alpha_obj);
        expect(bool(grad_alpha), "grad_alpha must be a float array");
        expect_shape(grad_alpha, {H, W, 1}, "grad_alpha");
        pga = grad_alpha.data();
    }
    const raster::SavedView sv{ps, po, pi, Tfinal.data(), last.data()};
    FArr g_means({py::ssize_t(N), py::ssize_t(2)});
    FArr g_conics({py::ssize_t(N), py::ssize_t(3)});
    FArr g_opac({py::ssize_t(N)});
    FArr g_colors({py::ssize_t(N), py::ssize_t(C)});
    float *gm = g_means.mutable_data(), *gc = g_conics.mutable_data();
    float *go = g_opac.mutable_data(), *gcol = g_colors.mutable_data();
    const float* pg = grad_out.data();
    {
        py::gil_scoped_release nogil;
        raster::render_backward(int(N), C, W, H, colors.data(), sv, threads, pg, pga, gm, gc, go, gcol);
    }
    return py::make_tuple(g_means, g_conics, g_opac, g_colors);
}

// Blending weights summed per Gaussian: (sums [N,C], total [N]); values None = totals only
// (sums [N,0]).
py::tuple accumulate(const FArr& means, const FArr& conics, const FArr& opac, const FArr& depths,
                     const IArr& radii, const py::object& values_obj, int W, int H, int threads) {
    raster::Scene2D in = geometry(means, conics, opac, radii, W, H);
    expect_shape(depths, {in.N}, "depths");
    in.depths = depths.data();
    FArr values;
    const float* pv = nullptr;
    if (!values_obj.is_none()) {
        values = FArr::ensure(values_obj);
        expect(bool(values), "values must be a float array");
        expect(values.ndim() == 3 && values.shape(0) == H && values.shape(1) == W && values.shape(2) >= 1,
               "values must be [H,W,C] with C >= 1");
        in.C = int(values.shape(2));
        pv = values.data();
    }
    FArr sums({py::ssize_t(in.N), py::ssize_t(in.C)});
    FArr total({py::ssize_t(in.N)});
    float *ps = sums.mutable_data(), *pt = total.mutable_data();
    {
        py::gil_scoped_release nogil;
        raster::accumulate_weights(in, pv, threads, ps, pt);
    }
    return py::make_tuple(sums, total);
}

// ---------------------------------------------------------------------- projection
using DArr = py::array_t<double, py::array::c_style | py::array::forcecast>;

struct ProjectArgs {
    project::View view;
    project::Inputs in;
};

ProjectArgs project_args(const FArr& means, const FArr& quats, const FArr& scales, const FArr& opac,
                         const FArr& sh, const DArr& viewmat, const DArr& campos, const py::tuple& intr,
                         double near, double far, double eps2d, int degree) {
    auto fail = [](const std::string& msg) { throw std::invalid_argument("project_cpu: " + msg); };
    if (means.ndim() != 2 || means.shape(1) != 3) fail("means must be [N,3]");
    const py::ssize_t N = means.shape(0);
    if (N >= (py::ssize_t(1) << 31)) fail("too many Gaussians");
    auto shape_is = [](const py::array& a, std::initializer_list<py::ssize_t> shape) {
        bool ok = a.ndim() == py::ssize_t(shape.size());
        int d = 0;
        for (py::ssize_t s : shape) ok = ok && a.shape(d++) == s;
        return ok;
    };
    if (!shape_is(quats, {N, 4})) fail("quats must be [N,4]");
    if (!shape_is(scales, {N, 3})) fail("scales must be [N,3]");
    if (!shape_is(opac, {N})) fail("opacities must be [N]");
    if (sh.ndim() != 3 || sh.shape(0) != N || sh.shape(2) != 3 || sh.shape(1) < 1 || sh.shape(1) > 16)
        fail("sh must be [N,K,3] with 1 <= K <= 16");
    const int K = int(sh.shape(1));
    if (degree < 0 || degree > 3 || (degree + 1) * (degree + 1) > K) fail("sh_degree out of range");
    if (!shape_is(viewmat, {4, 4})) fail("viewmat must be [4,4]");
    if (!shape_is(campos, {3})) fail("campos must be [3]");
    if (intr.size() != 6) fail("intrinsics must be (fx, fy, cx, cy, width, height)");
    const int width = intr[4].cast<int>(), height = intr[5].cast<int>();
    if (width <= 0 || height <= 0) fail("image size must be positive");
    ProjectArgs a;
    a.view = project::make_view(viewmat.data(), campos.data(), intr[0].cast<double>(), intr[1].cast<double>(),
                                intr[2].cast<double>(), intr[3].cast<double>(), width, height, near, far,
                                eps2d, degree, K);
    a.in = project::Inputs{means.data(), quats.data(), scales.data(), opac.data(), sh.data(), int(N)};
    return a;
}

py::tuple project_forward(const FArr& means, const FArr& quats, const FArr& scales, const FArr& opac,
                          const FArr& sh, const DArr& viewmat, const DArr& campos, const py::tuple& intr,
                          double near, double far, double eps2d, int degree, int threads) {
    const ProjectArgs a = project_args(means, quats, scales, opac, sh, viewmat, campos, intr, near, far,
                                       eps2d, degree);
    const py::ssize_t N = a.in.N;
    FArr means2d({N, py::ssize_t(2)}), conics({N, py::ssize_t(3)}), op({N}), rgb({N, py::ssize_t(3)}), z({N});
    IArr radii({N, py::ssize_t(2)});
    float *pm = means2d.mutable_data(), *pc = conics.mutable_data(), *po = op.mutable_data();
    float *pr = rgb.mutable_data(), *pz = z.mutable_data();
    int32_t* prad = radii.mutable_data();
    {
        py::gil_scoped_release nogil;
        project::forward(a.view, a.in, raster::thread_count(threads, N, 4096), pm, pc, po, pr, pz, prad);
    }
    return py::make_tuple(means2d, conics, op, rgb, z, radii);
}

py::tuple project_backward(const FArr& means, const FArr& quats, const FArr& scales, const FArr& opac,
                           const FArr& sh, const DArr& viewmat, const DArr& campos, const py::tuple& intr,
                           double near, double far, double eps2d, int degree, const IArr& radii,
                           const FArr& v_means2d, const FArr& v_conics, const FArr& v_opac, const FArr& v_rgb,
                           const FArr& v_z, int threads) {
    const ProjectArgs a = project_args(means, quats, scales, opac, sh, viewmat, campos, intr, near, far,
                                       eps2d, degree);
    const py::ssize_t N = a.in.N;
    expect_shape(radii, {N, 2}, "radii");
    expect_shape(v_means2d, {N, 2}, "grad means2d");
    expect_shape(v_conics, {N, 3}, "grad conics");
    expect_shape(v_opac, {N}, "grad opacities");
    expect_shape(v_rgb, {N, 3}, "grad rgb");
    expect_shape(v_z, {N}, "grad z");
    FArr gm({N, py::ssize_t(3)}), gq({N, py::ssize_t(4)}), gs({N, py::ssize_t(3)}), go({N});
    FArr gsh({N, py::ssize_t(a.view.K), py::ssize_t(3)});
    float *pm = gm.mutable_data(), *pq = gq.mutable_data(), *ps = gs.mutable_data();
    float *po = go.mutable_data(), *psh = gsh.mutable_data();
    {
        py::gil_scoped_release nogil;
        project::backward(a.view, a.in, radii.data(), v_means2d.data(), v_conics.data(), v_opac.data(),
                          v_rgb.data(), v_z.data(), raster::thread_count(threads, N, 4096), pm, pq, ps, po, psh);
    }
    return py::make_tuple(gm, gq, gs, go, gsh);
}

// Language-query margins (query.h): unit_t [d,N], pos [P,d], neg [M,d] -> [N].
py::array_t<float> relevancy_margins(const FArr& unit_t, const FArr& pos, const FArr& neg, int threads) {
    expect(unit_t.ndim() == 2 && pos.ndim() == 2 && neg.ndim() == 2, "relevancy: 2-D arrays expected");
    const int d = int(unit_t.shape(0));
    const py::ssize_t n = unit_t.shape(1);
    expect(pos.shape(1) == d && (neg.shape(0) == 0 || neg.shape(1) == d) && pos.shape(0) > 0,
           "relevancy: directions must be [K, d] with at least one positive");
    const int p = int(pos.shape(0));
    const int m = int(neg.shape(0));
    std::vector<float> dirs(size_t(p + m) * d);
    std::copy(pos.data(), pos.data() + size_t(p) * d, dirs.begin());
    if (m) std::copy(neg.data(), neg.data() + size_t(m) * d, dirs.begin() + size_t(p) * d);
    py::array_t<float> out(n);
    float* po = out.mutable_data();
    const float* pu = unit_t.data();
    {
        py::gil_scoped_release release;
        query::margins(pu, n, d, dirs.data(), p, m, po, raster::thread_count(threads, n, 65536),
                       raster::use_avx2());
    }
    return out;
}

}  // namespace

PYBIND11_MODULE(_raster_cpu, m) {
    m.doc() = "CPU projection of 3D Gaussians and tile rasterizer for 2D ones; use "
              "fields.rendering._project_cpu.project_cpu and fields.rendering._cpu.rasterize_cpu.";
    m.def("relevancy_margins", &relevancy_margins, py::arg("unit_t"), py::arg("pos"), py::arg("neg"),
          py::arg("threads") = 0,
          "LERF margins max_p(u·pos_p - max_j u·neg_j) of unit features unit_t [d,N] against folded "
          "text directions pos [P,d], neg [M,d] (M may be 0): [N] float32.");
    m.def("forward", &forward, py::arg("means2d"), py::arg("conics"), py::arg("opacities"), py::arg("colors"),
          py::arg("depths"), py::arg("radii"), py::arg("width"), py::arg("height"), py::arg("threads") = 0,
          "Render. Returns (out[H,W,C], alpha[H,W,1], saved), saved = (splats, tile_offsets, "
          "tile_ids, T_final, last): what backward() needs besides the colours.");
    m.def("backward", &backward, py::arg("colors"), py::arg("splats"), py::arg("tile_offsets"),
          py::arg("tile_ids"), py::arg("T_final"), py::arg("last"), py::arg("grad_out"), py::arg("grad_alpha"),
          py::arg("width"), py::arg("height"), py::arg("threads") = 0,
          "Gradients (means2d[N,2], conics[N,3], opacities[N], colors[N,C]) from forward()'s colours "
          "and saved arrays.");
    m.def("accumulate", &accumulate, py::arg("means2d"), py::arg("conics"), py::arg("opacities"),
          py::arg("depths"), py::arg("radii"), py::arg("values"), py::arg("width"), py::arg("height"),
          py::arg("threads") = 0,
          "Per-Gaussian sums of the blending weights w = alpha T that forward() composites with: "
          "(sums[N,C] = sum_p w values[p], total[N] = sum_p w) for values [H,W,C] or None "
          "(then sums is [N,0]).");
    m.def("project_forward", &project_forward, py::arg("means"), py::arg("quats"), py::arg("scales"),
          py::arg("opacities"), py::arg("sh"), py::arg("viewmat"), py::arg("campos"), py::arg("intrinsics"),
          py::arg("near"), py::arg("far"), py::arg("eps2d"), py::arg("sh_degree"), py::arg("threads") = 0,
          "Project Gaussians: (means2d[N,2], conics[N,3], opacities[N], rgb[N,3], z[N], radii[N,2] int32).");
    m.def("project_backward", &project_backward, py::arg("means"), py::arg("quats"), py::arg("scales"),
          py::arg("opacities"), py::arg("sh"), py::arg("viewmat"), py::arg("campos"), py::arg("intrinsics"),
          py::arg("near"), py::arg("far"), py::arg("eps2d"), py::arg("sh_degree"), py::arg("radii"),
          py::arg("v_means2d"), py::arg("v_conics"), py::arg("v_opacities"), py::arg("v_rgb"), py::arg("v_z"),
          py::arg("threads") = 0,
          "Gradients (means[N,3], quats[N,4], scales[N,3], opacity logits[N], sh[N,K,3]) of project_forward's "
          "inputs; rows with radii (0, 0) get zeros.");
    m.def(
        "simd", [] { return raster::use_avx2() ? "avx2" : "generic"; },
        "Instruction set the kernels run with: 'avx2' (AVX2+FMA) or 'generic'.");
    m.def(
        "force_generic", [](bool on) { raster::force_generic_flag(on ? 1 : 0); }, py::arg("on"),
        "Use the portable kernels even where AVX2 is available (for tests).");
}

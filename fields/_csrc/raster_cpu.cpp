// Python bindings of the CPU tile rasterizer (raster_core.h): numpy in, numpy out, GIL released
// while computing. The torch autograd wrapper is fields/render/_cpu.py.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

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

raster::Scene2D scene(const FArr& means, const FArr& conics, const FArr& opac, const FArr& colors,
                      const IArr& radii, int W, int H) {
    expect(W > 0 && H > 0 && W <= (1 << 20) && H <= (1 << 20), "width and height must be in [1, 2^20]");
    expect(means.ndim() == 2 && means.shape(1) == 2, "means2d must be [N,2]");
    const py::ssize_t N = means.shape(0);
    expect(N < (py::ssize_t(1) << 31), "too many Gaussians");
    expect_shape(conics, {N, 3}, "conics");
    expect_shape(opac, {N}, "opacities");
    expect_shape(radii, {N, 2}, "radii");
    expect(colors.ndim() == 2 && colors.shape(0) == N && colors.shape(1) >= 1,
           "colors must be [N,C] with C >= 1");
    raster::Scene2D in{};
    in.means = means.data();
    in.conics = conics.data();
    in.opac = opac.data();
    in.colors = colors.data();
    in.radii = radii.data();
    in.N = int(N);
    in.C = int(colors.shape(1));
    in.W = W;
    in.H = H;
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

}  // namespace

PYBIND11_MODULE(_raster_cpu, m) {
    m.doc() = "CPU tile rasterizer for 2D Gaussians; use fields.render._cpu.rasterize_cpu.";
    m.def("forward", &forward, py::arg("means2d"), py::arg("conics"), py::arg("opacities"), py::arg("colors"),
          py::arg("depths"), py::arg("radii"), py::arg("width"), py::arg("height"), py::arg("threads") = 0,
          "Render. Returns (out[H,W,C], alpha[H,W,1], saved), saved = (splats, tile_offsets, "
          "tile_ids, T_final, last): what backward() needs besides the colours.");
    m.def("backward", &backward, py::arg("colors"), py::arg("splats"), py::arg("tile_offsets"),
          py::arg("tile_ids"), py::arg("T_final"), py::arg("last"), py::arg("grad_out"), py::arg("grad_alpha"),
          py::arg("width"), py::arg("height"), py::arg("threads") = 0,
          "Gradients (means2d[N,2], conics[N,3], opacities[N], colors[N,C]) from forward()'s colours "
          "and saved arrays.");
    m.def(
        "simd", [] { return raster::use_avx2() ? "avx2" : "generic"; },
        "Instruction set the kernels run with: 'avx2' (AVX2+FMA) or 'generic'.");
    m.def(
        "force_generic", [](bool on) { raster::force_generic_flag(on ? 1 : 0); }, py::arg("on"),
        "Use the portable kernels even where AVX2 is available (for tests).");
}

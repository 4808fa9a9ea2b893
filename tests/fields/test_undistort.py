"""Lens undistortion on load: photos of bright dots rendered through each lens model with the
forward distortion formula written out here in numpy; after loading, every dot must sit at the
pinhole projection `K @ [R|t] X` of the camera the dataset returns.

Two checks per image: the dot centroids against the pinhole projection (loose: a warped blob's
centroid is not exactly the warped centre, ~0.2 px here), and against a reference rendering of
the undistorted photo made from the returned camera and the forward formula (tight: 0.05 px,
which is what catches a half-pixel slip in the pixel-centre conversion)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage
import torch

from fields.camera import Camera
from fields.datasets import load_colmap, load_dataset, load_transforms
from fields.errors import SceneFormatError
from tests.fields.test_datasets import GL_TO_CV, rotmat_to_qvec, write_png

pytestmark = pytest.mark.filterwarnings("error::UserWarning")

W, H = 96, 72
SIGMA = 1.6  # dot radius (pixels, at every resolution)

# COLMAP model -> its distortion parameters (after f / fx, fy, cx, cy), strong enough that the
# dots move by several pixels near the borders.
LENSES: dict[str, dict[str, float]] = {
    "SIMPLE_RADIAL": {"k": -0.22},
    "RADIAL": {"k1": 0.12, "k2": 0.05},
    "OPENCV": {"k1": -0.18, "k2": 0.03, "p1": 0.006, "p2": -0.004},
    "FULL_OPENCV": {
        "k1": -0.15,
        "k2": 0.04,
        "p1": 0.004,
        "p2": 0.005,
        "k3": 0.01,
        "k4": 0.06,
        "k5": -0.01,
        "k6": 0.02,
    },
    "OPENCV_FISHEYE": {"k1": 0.06, "k2": -0.02, "k3": 0.004, "k4": -0.001},
    "SIMPLE_RADIAL_FISHEYE": {"k": -0.05},
    "RADIAL_FISHEYE": {"k1": 0.04, "k2": -0.01},
}
_SINGLE_FOCAL = ("SIMPLE_RADIAL", "RADIAL", "SIMPLE_RADIAL_FISHEYE", "RADIAL_FISHEYE")


# ---------------------------------------------------------------------- the forward model
def distort(model: str, p: dict[str, float], x: np.ndarray, y: np.ndarray):
    """Normalized undistorted (x, y) -> distorted, COLMAP's formulas written out."""
    g = p.get
    if model.endswith("FISHEYE"):
        k1, k2, k3, k4 = g("k", g("k1", 0.0)), g("k2", 0.0), g("k3", 0.0), g("k4", 0.0)
        r = np.sqrt(x * x + y * y)
        theta = np.arctan(r)
        t2 = theta * theta
        theta_d = theta * (1 + k1 * t2 + k2 * t2**2 + k3 * t2**3 + k4 * t2**4)
        scale = np.where(r > 1e-12, theta_d / np.maximum(r, 1e-12), 1.0)
        return x * scale, y * scale
    k1, k2, k3 = g("k", g("k1", 0.0)), g("k2", 0.0), g("k3", 0.0)
    k4, k5, k6 = (g("k4", 0.0), g("k5", 0.0), g("k6", 0.0)) if model == "FULL_OPENCV" else (0, 0, 0)
    p1, p2 = g("p1", 0.0), g("p2", 0.0)
    r2 = x * x + y * y
    radial = (1 + k1 * r2 + k2 * r2**2 + k3 * r2**3) / (1 + k4 * r2 + k5 * r2**2 + k6 * r2**3)
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return xd, yd


def lens_camera(width: int = W, height: int = H, single_focal: bool = False) -> Camera:
    f = 0.62 * width
    K = torch.tensor(
        [
            [f, 0, 0.5 * width - 0.7],
            [0, f if single_focal else 1.04 * f, 0.5 * height + 0.9],
            [0, 0, 1],
        ]
    )
    return Camera.look_at(
        (2.0, -3.0, 1.0), (0.1, 0.2, 0.0), (0, 0, 1), K, width, height, "view.png"
    )


def dot_points(camera: Camera) -> np.ndarray:
    """[N,3] world points whose pinhole projections spread over the image, corners included."""
    xy = [(0.0, 0.0), (-0.55, -0.38), (0.55, -0.38), (-0.55, 0.38), (0.55, 0.38), (0.62, 0.0),
          (0.0, -0.44), (-0.3, 0.2)]  # fmt: skip
    depth = np.array([4.0, 3.5, 5.0, 4.2, 3.8, 4.5, 3.9, 4.1])
    cam = np.array([[x * z, y * z, z] for (x, y), z in zip(xy, depth, strict=True)])
    c2w = camera.c2w.double().numpy()
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def render_dots(
    camera: Camera,
    model: str,
    params: dict[str, float],
    X: np.ndarray,
    scale: float = 1.0,
    sigma: float = SIGMA,
):
    """The photo: a Gaussian dot at each point's DISTORTED projection (pixel centres at +0.5),
    drawn at `scale` times the camera's resolution. uint8 [h,w,3] and the dot pixel centres."""
    V = camera.viewmat.double().numpy()
    Xc = X @ V[:3, :3].T + V[:3, 3]
    xd, yd = distort(model, params, Xc[:, 0] / Xc[:, 2], Xc[:, 1] / Xc[:, 2])
    K = camera.K.double().numpy()
    u = (K[0, 0] * xd + K[0, 2]) * scale
    v = (K[1, 1] * yd + K[1, 2]) * scale
    w, h = round(camera.width * scale), round(camera.height * scale)
    jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    img = sum(
        np.exp(-((jj - a) ** 2 + (ii - b) ** 2) / (2 * sigma**2)) for a, b in zip(u, v, strict=True)
    )
    gray = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1), np.stack([u, v], -1)


def write_model(root: Path, camera: Camera, model: str, params: dict[str, float], X: np.ndarray):
    d = root / "sparse" / "0"
    d.mkdir(parents=True)
    K = camera.K.double().numpy()
    if model in _SINGLE_FOCAL:
        intr = [K[0, 0], K[0, 2], K[1, 2]]
    else:
        intr = [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]
    values = " ".join(repr(float(v)) for v in [*intr, *params.values()])
    (d / "cameras.txt").write_text(f"1 {model} {camera.width} {camera.height} {values}\n")
    V = camera.viewmat.double().numpy()
    q, t = rotmat_to_qvec(V[:3, :3]), V[:3, 3]
    pose = " ".join(repr(float(v)) for v in [*q, *t])
    (d / "images.txt").write_text(f"1 {pose} 1 {camera.name}\n\n")
    pts = "\n".join(f"{k + 1} {x} {y} {z} 255 255 255 0.1" for k, (x, y, z) in enumerate(X))
    (d / "points3D.txt").write_text(pts + "\n")


def pinhole_projection(camera: Camera, X: np.ndarray) -> np.ndarray:
    """[N,2] pixel positions (centres at +0.5) of `K @ [R|t] X`."""
    V, K = camera.viewmat.double().numpy(), camera.K.double().numpy()
    uvw = (X @ V[:3, :3].T + V[:3, 3]) @ K.T
    return uvw[:, :2] / uvw[:, 2:]


def dot_centroids(intensity: np.ndarray, near: np.ndarray) -> np.ndarray:
    """[N,2] intensity-weighted centroid (pixel centres at +0.5) of the bright blob nearest to
    each position in `near`."""
    labels, n = scipy.ndimage.label(intensity > 0.02)
    index = np.arange(1, n + 1)
    cy, cx = np.array(scipy.ndimage.center_of_mass(intensity, labels, index)).T
    centres = np.stack([cx + 0.5, cy + 0.5], -1)
    nearest = np.argmin(np.linalg.norm(centres[None] - near[:, None], axis=-1), axis=1)
    return centres[nearest]


def assert_dots_at_projection(camera: Camera, image: torch.Tensor, X: np.ndarray, tol: float):
    assert image.shape == (camera.height, camera.width, 3)
    expected = pinhole_projection(camera, X)
    margin = 2 * SIGMA
    size = [camera.width - margin, camera.height - margin]
    inside = (expected > margin).all(1) & (expected < size).all(1)
    assert inside.sum() >= 6  # the corners' dots are really tested
    found = dot_centroids(image[..., 0].double().numpy(), expected)
    err = np.linalg.norm(found - expected, axis=-1)[inside]
    assert err.max() < tol, f"dot offsets from the projection {np.round(err, 3)} px"


def reference_undistorted(
    loaded: Camera, photo_camera: Camera, model: str, params: dict[str, float], dots: np.ndarray
) -> np.ndarray:
    """What a perfect undistortion returns: for each pixel centre of `loaded`, its ray through
    the forward lens formula into the photo, where the Gaussian dots are evaluated exactly."""
    Kn, K = loaded.K.double().numpy(), photo_camera.K.double().numpy()
    jj, ii = np.meshgrid(np.arange(loaded.width) + 0.5, np.arange(loaded.height) + 0.5)
    xd, yd = distort(model, params, (jj - Kn[0, 2]) / Kn[0, 0], (ii - Kn[1, 2]) / Kn[1, 1])
    u, v = K[0, 0] * xd + K[0, 2], K[1, 1] * yd + K[1, 2]
    return sum(np.exp(-((u - a) ** 2 + (v - b) ** 2) / (2 * SIGMA**2)) for a, b in dots)


def assert_matches_reference(loaded, image, photo_camera, model, params, dots, X, tol=0.05):
    reference = reference_undistorted(loaded, photo_camera, model, params, dots)
    expected = pinhole_projection(loaded, X)
    found = dot_centroids(image[..., 0].double().numpy(), expected)
    want = dot_centroids(reference, expected)
    err = np.linalg.norm(found - want, axis=-1)
    assert err.max() < tol, f"dot offsets from the reference rendering {np.round(err, 3)} px"


# ---------------------------------------------------------------------- tests
@pytest.mark.parametrize("model", list(LENSES))
def test_colmap_dots_land_on_pinhole_projection(tmp_path: Path, model: str) -> None:
    params = LENSES[model]
    camera = lens_camera(single_focal=model in _SINGLE_FOCAL)
    X = dot_points(camera)
    photo, distorted = render_dots(camera, model, params, X)
    write_model(tmp_path, camera, model, params, X)
    write_png(tmp_path / "images" / camera.name, photo)
    ds = load_colmap(tmp_path)  # no warning: these lenses are undistorted
    assert ds.undistorted and ds.distortion[0].model == model
    loaded, image = ds[0]
    assert loaded is ds.cameras[0]
    assert (loaded.width, loaded.height) != (W, H) or model.endswith("FISHEYE")
    torch.testing.assert_close(loaded.viewmat, camera.viewmat)
    # The dots really moved: the raw photo's dots are pixels away from the pinhole projection.
    raw_offset = np.linalg.norm(distorted - pinhole_projection(camera, X), axis=-1)
    assert raw_offset.max() > 2.0
    assert_dots_at_projection(loaded, image, X, tol=0.25)
    assert_matches_reference(loaded, image, camera, model, params, distorted, X)


@pytest.mark.parametrize("model", ["OPENCV", "OPENCV_FISHEYE"])
def test_downscale_and_pre_downscaled_folder(tmp_path: Path, model: str) -> None:
    params = LENSES[model]
    camera = lens_camera()
    X = dot_points(camera)
    photo, _ = render_dots(camera, model, params, X)
    write_model(tmp_path, camera, model, params, X)
    write_png(tmp_path / "images" / camera.name, photo)
    ds = load_colmap(tmp_path, downscale=2)  # full-resolution photo: undistort, then box
    loaded, image = ds[0]
    assert loaded is ds.cameras[0]
    full = load_colmap(tmp_path).cameras[0]
    assert (loaded.width, loaded.height) == (round(full.width / 2), round(full.height / 2))
    assert_dots_at_projection(loaded, image, X, tol=0.25)
    # A pre-downscaled images_2/ copy is undistorted at its own resolution.
    small, _ = render_dots(camera, model, params, X, scale=0.5, sigma=1.1)
    write_png(tmp_path / "images_2" / camera.name, small)
    ds = load_colmap(tmp_path, downscale=2)
    assert ds.image_paths[0].parent.name == "images_2"
    loaded, image = ds[0]
    assert loaded is ds.cameras[0]
    assert_dots_at_projection(loaded, image, X, tol=0.25)


def test_labels_undistorted_nearest_and_aligned(tmp_path: Path) -> None:
    model, params = "OPENCV", LENSES["OPENCV"]
    camera = lens_camera()
    X = dot_points(camera)
    photo, distorted = render_dots(camera, model, params, X)
    write_model(tmp_path, camera, model, params, X)
    write_png(tmp_path / "images" / camera.name, photo)
    jj, ii = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    labels = np.full((H, W), 255, np.uint8)
    for k, (u, v) in enumerate(distorted):
        labels[(jj - u) ** 2 + (ii - v) ** 2 < 2.5**2] = k
    write_png(tmp_path / "labels" / camera.name, labels)
    for downscale in (1, 2):
        ds = load_colmap(tmp_path, downscale=downscale)
        loaded, image = ds[0]
        got = ds.load_map("labels", 0).numpy()
        assert got.shape == image.shape[:2]
        assert set(np.unique(got)) <= set(np.unique(labels))  # nearest: no blended ids
        expected = pinhole_projection(loaded, X)
        for k, (u, v) in enumerate(expected):
            if not (4 < u < loaded.width - 4 and 4 < v < loaded.height - 4):
                continue
            rows, cols = np.nonzero(got == k)
            centre = np.array([cols.mean() + 0.5, rows.mean() + 0.5])
            assert np.linalg.norm(centre - [u, v]) < 0.5 / downscale + 0.3


def test_transforms_opencv_and_fisheye(tmp_path: Path) -> None:
    for model, params in [
        ("OPENCV", {"k1": -0.18, "k2": 0.03, "p1": 0.006, "p2": -0.004, "k3": 0.01}),
        ("OPENCV_FISHEYE", LENSES["OPENCV_FISHEYE"]),
    ]:
        root = tmp_path / model
        camera = lens_camera()
        X = dot_points(camera)
        photo, dots = render_dots(camera, model, params, X)
        write_png(root / "images" / "view.png", photo)
        K = camera.K
        meta = {
            "camera_model": model,
            "fl_x": float(K[0, 0]),
            "fl_y": float(K[1, 1]),
            "cx": float(K[0, 2]),
            "cy": float(K[1, 2]),
            "w": W,
            "h": H,
            **params,
            "frames": [
                {
                    "file_path": "images/view.png",
                    "transform_matrix": (camera.c2w.double().numpy() @ GL_TO_CV).tolist(),
                }
            ],
        }
        (root / "transforms.json").write_text(json.dumps(meta))
        ds = load_transforms(root)
        assert ds.undistorted
        loaded, image = ds[0]
        assert_dots_at_projection(loaded, image, X, tol=0.25)
        assert_matches_reference(loaded, image, camera, model, params, dots, X)


def test_transforms_polynomial_k4_is_warned_not_undistorted(tmp_path: Path) -> None:
    camera = lens_camera()
    write_png(tmp_path / "images" / "view.png", np.zeros((H, W, 3), np.uint8))
    K = camera.K
    meta = {
        "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]),
        "w": W, "h": H, "k1": -0.1, "k4": 0.01,
        "frames": [{"file_path": "images/view.png", "transform_matrix": np.eye(4).tolist()}],
    }  # fmt: skip
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="cannot undistort"):
        ds = load_dataset(tmp_path)
    assert not ds.undistorted and ds.cameras[0].width == W


def test_pinhole_images_bit_identical(tmp_path: Path) -> None:
    camera = lens_camera()
    X = dot_points(camera)
    photo, _ = render_dots(camera, "PINHOLE", {}, X)
    write_model(tmp_path, camera, "PINHOLE", {}, X)
    write_png(tmp_path / "images" / camera.name, photo)
    ds = load_colmap(tmp_path)
    assert not ds.undistorted
    loaded, image = ds[0]
    torch.testing.assert_close(loaded.K, camera.K, atol=1e-5, rtol=0)
    assert torch.equal(image, torch.from_numpy(photo.astype(np.float32) / 255.0))
    assert_dots_at_projection(loaded, image, X, tol=0.05)  # the measurement itself is sound


def test_zero_coefficients_change_nothing_but_the_border(tmp_path: Path) -> None:
    """An OPENCV lens with all-zero coefficients: the undistorted camera is the same pinhole
    (up to OpenCV's conservative one-pixel roi) and pixels are copied, not shifted by half a
    pixel (the pixel-centre conversion on the way in and out)."""
    camera = lens_camera()
    X = dot_points(camera)
    photo, _ = render_dots(camera, "PINHOLE", {}, X)
    write_model(tmp_path, camera, "OPENCV", {"k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0}, X)
    write_png(tmp_path / "images" / camera.name, photo)
    ds = load_colmap(tmp_path)
    assert not ds.undistorted  # zero coefficients: a pinhole, nothing to do
    from fields.datasets._undistort import Lens, remap_linear, undistort_maps, undistorted_camera

    new = undistorted_camera(camera, Lens(False, (0.0, 0.0, 0.0, 0.0)))
    torch.testing.assert_close(new.K, camera.K, atol=1e-4, rtol=0)
    assert (W - 1, H - 1) <= (new.width, new.height) <= (W, H)
    maps = undistort_maps(camera, Lens(False, (0.0, 0.0, 0.0, 0.0)), new)
    np.testing.assert_allclose(maps[0], np.arange(new.width)[None].repeat(new.height, 0), atol=1e-3)
    out = remap_linear(photo.astype(np.float32), maps)
    np.testing.assert_allclose(out, photo[: new.height, : new.width], atol=0.05)


def test_maps_computed_once_per_camera(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fields.datasets import _undistort

    camera = lens_camera()
    X = dot_points(camera)
    photo, _ = render_dots(camera, "OPENCV", LENSES["OPENCV"], X)
    write_model(tmp_path, camera, "OPENCV", LENSES["OPENCV"], X)
    images_txt = tmp_path / "sparse" / "0" / "images.txt"
    line = images_txt.read_text().splitlines()[0]
    lines = [
        line.replace(" view.png", f" v{k}.png").replace("1 ", f"{k + 1} ", 1) for k in range(3)
    ]
    images_txt.write_text("\n\n".join(lines) + "\n\n")
    for k in range(3):
        write_png(tmp_path / "images" / f"v{k}.png", photo)
    calls: list[int] = []
    real = _undistort.undistort_maps

    def counting(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(_undistort, "undistort_maps", counting)
    ds = load_colmap(tmp_path)
    images = [ds[k][1] for k in range(3)] + [ds.split("train")[0][1]]
    assert len(calls) == 1  # one camera shared by every view (and by the split's subset)
    for image in images[1:]:
        assert torch.equal(image, images[0])


def test_no_opencv_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from fields.datasets import _undistort

    real_import = builtins.__import__

    def no_cv2(name, *args, **kwargs):
        if name == "cv2":
            raise ImportError("No module named 'cv2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cv2)
    with pytest.raises(ImportError, match="pip install 'opencv-python-headless"):
        _undistort.undistorted_camera(lens_camera(), _undistort.Lens(False, (0.1, 0, 0, 0)))


def test_lens_mapping_to_opencv_order() -> None:
    from fields.datasets._undistort import lens_for

    assert lens_for("SIMPLE_RADIAL", {"k": 0.1}).coeffs == (0.1, 0.0, 0.0, 0.0, 0.0)
    assert lens_for("RADIAL", {"k1": 0.1, "k2": 0.2}).coeffs == (0.1, 0.2, 0.0, 0.0, 0.0)
    assert lens_for("OPENCV", {"k1": 1, "k2": 2, "p1": 3, "p2": 4}).coeffs[:4] == (1, 2, 3, 4)
    full = dict(zip(("k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6"), range(1, 9), strict=True))
    assert lens_for("FULL_OPENCV", full).coeffs == tuple(float(v) for v in range(1, 9))
    assert lens_for("RADIAL_FISHEYE", {"k1": 0.1, "k2": 0.2}).coeffs == (0.1, 0.2, 0.0, 0.0)
    assert lens_for("FOV", {"omega": 0.3}) is None
    assert lens_for("THIN_PRISM_FISHEYE", {}) is None


def test_lens_that_folds_the_image_is_a_clear_error(tmp_path: Path) -> None:
    camera = lens_camera(single_focal=True)
    X = dot_points(camera)
    write_model(tmp_path, camera, "SIMPLE_RADIAL", {"k": -0.9}, X)  # folds over inside the image
    write_png(tmp_path / "images" / camera.name, np.zeros((H, W, 3), np.uint8))
    with pytest.raises(SceneFormatError, match=r"'view\.png'.*does not map the 96x72 image"):
        load_colmap(tmp_path)

"""The first look at a large scene: `show_preview` frames a strided sample of the PLY and sends
it to the scene node the viewer's own splats replace later."""

from __future__ import annotations

import numpy as np

from app.viewer import ViewerApp, ViewerConfig, show_preview, start_server
from app.viewer._splats import SplatBuffer, unpack
from fields import framing_view, save_scene

from .conftest import blob_scene


def test_preview_frames_a_widened_sample_and_the_viewer_replaces_it(tmp_path):
    scene = blob_scene().replace(meta={"up": "+z"})
    path = save_scene(scene, tmp_path / "big.ply")
    started = start_server(ViewerConfig(port=0))
    try:
        n = len(scene)
        assert not show_preview(started, path, max_splats=n)  # small: no preview
        assert show_preview(started, path, max_splats=n // 4)
        k = -(-n // (n // 4))
        sample = scene.subset(np.arange(0, n, k))
        ic = started.server.initial_camera
        eye, look_at = framing_view(sample, np.array([0.0, 0.0, 1.0]))
        assert np.allclose(ic.position, eye, atol=1e-5) and np.allclose(
            ic.look_at, look_at, atol=1e-5
        )
        assert np.allclose(ic.up, [0, 0, 1])
        handle = started.server.scene._handle_from_node_name["/scene/splats"]
        parts = unpack(handle.buffer)
        assert np.array_equal(parts["centers"], sample.means.numpy())
        # Widened by N / M: the covariance's trace grows by that factor.
        own = unpack(SplatBuffer().build(sample).buffer)["covariances"]
        ratio = np.trace(parts["covariances"], axis1=1, axis2=2) / np.trace(own, axis1=1, axis2=2)
        assert np.allclose(ratio, n / len(sample), rtol=0.01)
        app = ViewerApp(scene, ViewerConfig(port=0, root=tmp_path, max_splats=0), server=started)
        try:  # the viewer's own buffer (every splat) is what the node holds now
            assert app.splats is not None and app.splats.buffer.shape[0] == n
            handle = started.server.scene._handle_from_node_name["/scene/splats"]
            assert handle.buffer.shape[0] == n
        finally:
            app.stop()
    finally:
        started.server.stop()

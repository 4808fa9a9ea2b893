"""The scenelab viewer: a viser app that shows a Gaussian scene in the browser, with model-free
selection, reversible edits, save/export and a job runner for long work.

```python
from app.viewer import ViewerApp, ViewerConfig

app = ViewerApp(load_scene("scene.ply"), ViewerConfig(port=8080))
app.wait()  # serve until Ctrl+C
```

`start_server(config)` binds the port and serves the page before a scene exists (the CLI does
this so the browser loads while the scene loads); pass its result as `ViewerApp(server=...)`.
`show_preview(started, path)` sends a strided sample of a large PLY meanwhile (a 3M-Gaussian
file is on screen in a few seconds, before it is parsed whole).

`run_training_viewer(session)` (`scenelab train DATA --out X --viewer`) serves a viewer that
shows a `fields.training.TrainSession` training: the splats (or, for `--model nerf`, the NeRF's
server-rendered frames) refresh every few seconds, and the Train folder pauses, resumes, stops
and saves it.

`ViewerApp(nerf_scene)` shows a `fields.nerf.NerfScene`: frames rendered on the server stream
into each browser as the background image with depth (`_nerf_view`), low resolution while the
camera moves and refined once it rests; "Convert to Gaussians" swaps in Gaussians and every
Gaussian tool.

`scenelab view PROJECT.scenelab` (or the File panel's "Open project") reopens a whole session
(`editing.project`); `ViewerApp.start_autosave` keeps a crash-recovery copy in the recovery folder
and `ViewerApp.offer_recovery` asks the browsers whether to restore one.

Everything else lives in private modules: `_state` (shared scene state), `_splats` (scene ->
viser splat buffer), `_jobs` (job runner), `_overlay` (server-rendered overlays), `_camera`, and
one `_panel_*` module per GUI folder (`_panel_marks`: named selections and camera bookmarks).
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING

from ._server import ViewerConfig, start_server

if TYPE_CHECKING:
    from fields.training import TrainSession

    from ._app import ViewerApp
    from ._panel_train import TrainPanel
    from ._preview import show_preview

__all__ = [
    "TrainPanel",
    "ViewerApp",
    "ViewerConfig",
    "run_training_viewer",
    "show_preview",
    "start_server",
]

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def run_training_viewer(
    session: TrainSession,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    open_seconds: float | None = None,
) -> int:
    """Serve a viewer on `session`'s snapshot with the Train folder already running it, and
    block until Ctrl+C (or, with `open_seconds`, that long: scripts and tests). Either way a run
    still going is stopped and what it trained is saved before this returns. The viewer stays
    up after training finishes, to look at the result. Prints a JSON summary like the CLI's;
    returns 0, or 1 when training failed."""
    from ._app import ViewerApp
    from ._panel_train import TrainPanel

    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in 0..65535, got {port}")
    config = ViewerConfig(host=host, port=port)
    started = start_server(config)
    if started.port_was_taken:
        print(
            f"scenelab: port {port} on {host} is already in use; serving on {started.port}",
            file=sys.stderr,
        )
    if host not in LOCAL_HOSTS:
        print(
            f"scenelab: warning: listening on {host}: anyone who can reach this port can steer "
            "the training",
            file=sys.stderr,
        )
    try:
        snap = session.snapshot()
        if snap is None:
            raise RuntimeError("the training session has no scene to show")
        dataset = session.trainer.dataset
        app = ViewerApp(
            snap[1],
            config,
            server=started,
            cameras=dataset.cameras,
            title=f"training {session.out.name}",
            dataset=dataset,
        )
    except BaseException:
        started.server.stop()
        raise
    panel = TrainPanel(app, session=session)
    job = panel.job
    print(f"scenelab train: watch at {app.url}  (Ctrl+C stops training and saves)", flush=True)
    deadline = None if open_seconds is None else time.monotonic() + open_seconds
    told = False
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
            if not told and job is not None and job.status.finished:
                told = True
                st = session.status()
                print(
                    f"scenelab train: {st.state} at step {st.step:,}; saved {st.last_saved}. "
                    "The viewer stays up: Ctrl+C to quit.",
                    flush=True,
                )
    except KeyboardInterrupt:
        if not told:
            print("\nscenelab train: stopping; saving what was trained…", file=sys.stderr)
    finally:
        session.stop()
        try:
            if job is not None:
                job.wait()
        except KeyboardInterrupt:
            print("scenelab train: interrupted again; not waiting for the save", file=sys.stderr)
        panel.close()
        app.stop()
    st = session.status()
    summary = {
        "out": None if st.last_saved is None else str(st.last_saved),
        "checkpoint": None if session.checkpoint is None else str(session.checkpoint),
        "state": st.state,
        "steps": st.step,
        "seconds": round(st.elapsed_s, 1),
        "gaussians": st.n_gaussians,
        "model": getattr(st, "kind", "gaussians"),
        "heldout_psnr": None if st.heldout_psnr is None else round(st.heldout_psnr, 3),
    }
    print(json.dumps(summary), flush=True)
    if st.state == "failed":
        print(f"scenelab train: error: {st.error}", file=sys.stderr)
        return 1
    return 0


def __getattr__(name: str):
    # `ViewerApp` pulls in torch; importing it lazily keeps `start_server` light.
    if name == "ViewerApp":
        from ._app import ViewerApp

        return ViewerApp
    if name == "TrainPanel":
        from ._panel_train import TrainPanel

        return TrainPanel
    if name == "show_preview":
        from ._preview import show_preview

        return show_preview
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The scenelab viewer: a viser app that shows a Gaussian scene in the browser, with model-free
selection, reversible edits, save/export and a job runner for long work.

```python
from app.viewer import ViewerApp, ViewerConfig

app = ViewerApp(load_scene("scene.ply"), ViewerConfig(port=8080))
app.wait()  # serve until Ctrl+C
```

`start_server(config)` binds the port and serves the page before a scene exists (the CLI does
this so the browser loads while the scene loads); pass its result as `ViewerApp(server=...)`.

Everything else lives in private modules: `_state` (shared scene state), `_splats` (scene ->
viser splat buffer), `_jobs` (job runner), `_overlay` (server-rendered overlays), `_camera`, and
one `_panel_*` module per GUI folder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._server import ViewerConfig, start_server

if TYPE_CHECKING:
    from ._app import ViewerApp

__all__ = ["ViewerApp", "ViewerConfig", "start_server"]


def __getattr__(name: str):
    # `ViewerApp` pulls in torch; importing it lazily keeps `start_server` light.
    if name == "ViewerApp":
        from ._app import ViewerApp

        return ViewerApp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Starting the viser server, kept free of torch so that the CLI can serve the page while the
scene (and torch) are still loading: the browser's ~MB client bundle loads in parallel with the
server's imports, and the splats follow as soon as they exist."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import viser


@dataclass
class ViewerConfig:
    """How the viewer serves. Defaults are the safe ones."""

    host: str = "127.0.0.1"
    """Interface to bind. 127.0.0.1 keeps the viewer on this machine; 0.0.0.0 exposes it."""
    port: int = 8080
    """Port to serve on; when it is taken the next free one is used and reported."""
    share: bool = False
    """Ask viser's share service for a public URL (off unless asked for)."""
    root: Path | None = None
    """Folder that file paths typed in the GUI are confined to (default: working directory)."""
    overlay_size: int = 192
    """Long side in pixels of server-rendered overlays (clamped to 128–256)."""
    show_cameras: bool = True
    """Show the dataset's camera frustums (click one to look through it)."""
    max_cameras: int = 300
    """Show at most this many frustums (evenly spaced through the dataset)."""
    max_splats: int | None = None
    """Splats sent to browsers. None: automatic — a widened sample of at most `COARSE_SPLATS`
    first, then every splat once the browser proves it renders fast (software GL, e.g. in a
    VM, takes seconds per frame for 10^5 splats); 0: always all; N: at most N."""
    nerf_size: int = 256
    """Long side in pixels of a NeRF's frames once the camera rests (server-rendered)."""
    nerf_preview: int = 64
    """Long side in pixels of a NeRF's frames while the camera moves (lowered automatically when
    they render slower than ~0.1 s)."""
    history_bytes: int = 2**31
    """Memory budget of the undo history; the oldest steps are dropped beyond it."""
    label: str = "scenelab"
    edit_model: str | None = None
    """diffusers model for the Text edit and Text to 3D panels: a hub id or a folder saved with
    `save_pretrained` (None: Stable Diffusion 1.5's hub id, which needs its weights cached)."""


@dataclass
class ServerStart:
    """A started server and how it came to be on its port."""

    server: viser.ViserServer
    host: str
    port: int
    requested_port: int
    port_was_taken: bool
    share_url: str | None = None

    @property
    def url(self) -> str:
        shown = "localhost" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{shown}:{self.port}"


def start_server(config: ViewerConfig) -> ServerStart:
    """Bind and serve the (still empty) viewer page. A taken port moves to the next free one
    (viser's own search); `port_was_taken` records it so the caller can say so."""
    if not 0 <= config.port <= 65535:
        raise ValueError(f"port must be in 0..65535, got {config.port}")
    server = viser.ViserServer(host=config.host, port=config.port, label=config.label)
    port = server.get_port()
    taken = config.port != 0 and port != config.port
    share_url = server.request_share_url() if config.share else None
    return ServerStart(server, config.host, port, config.port, taken, share_url)

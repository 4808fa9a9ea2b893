"""Diffusion models named in the GUI (Text edit, Text to 3D): a hub id as typed, or a folder
saved with `save_pretrained` — confined, like every GUI path, to the viewer's root folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._paths import confine

DEFAULT_EDIT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"


def looks_like_path(text: str, root: Path) -> bool:
    """A typed model names a folder (not a hub id `org/name`) when it starts like a path or
    exists inside `root`."""
    return text.startswith((".", "/", "~")) or (Path(root) / text).exists()


def resolve_model(text: str, root: Path) -> str:
    """The hub id, or the confined absolute folder, that `text` names."""
    text = str(text).strip()
    if not text:
        raise ValueError("give a diffusion model: a hub id or a folder saved with save_pretrained")
    return str(confine(text, root)) if looks_like_path(text, root) else text


def load_gui_distiller(text: str, root: Path) -> Any:
    """A score distiller at the model's native resolution (`editing.text_edit`)."""
    from editing.text_edit import load_edit_distiller

    return load_edit_distiller(resolve_model(text, root))

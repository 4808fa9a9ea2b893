"""Bundled data: the demo world (`demo/`, written by `scenelab make-demo assets/demo --seed 0`)."""

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
DEMO_DIR = ASSETS_DIR / "demo"
OBJECTS_DIR = ASSETS_DIR / "objects"  # insertable objects (objects/README.md)

"""Registry of CLI commands: name -> module with HELP, add_arguments(parser), run(args)."""

from . import demo, make_demo, render, view

COMMANDS = {
    "make-demo": make_demo,
    "render": render,
    "view": view,
    "demo": demo,
}

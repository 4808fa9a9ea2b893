"""Registry of CLI commands: name -> module with HELP, add_arguments(parser), run(args)."""

from . import make_demo, render

COMMANDS = {
    "make-demo": make_demo,
    "render": render,
}

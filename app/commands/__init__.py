"""Registry of CLI commands: name -> module with HELP, add_arguments(parser), run(args)."""

from . import demo, distill, eval_query, make_demo, query, render, view

COMMANDS = {
    "make-demo": make_demo,
    "render": render,
    "view": view,
    "demo": demo,
    "distill": distill,
    "query": query,
    "eval-query": eval_query,
}

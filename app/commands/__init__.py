"""Registry of CLI commands: name -> module with HELP, add_arguments(parser), run(args)."""

from . import (
    demo,
    distill,
    edit,
    eval_query,
    grasp,
    insert,
    make_demo,
    make_tiny_model,
    query,
    render,
    view,
)

COMMANDS = {
    "grasp": grasp,
    "make-demo": make_demo,
    "make-tiny-model": make_tiny_model,
    "render": render,
    "view": view,
    "demo": demo,
    "distill": distill,
    "query": query,
    "eval-query": eval_query,
    "insert": insert,
    "edit": edit,
}

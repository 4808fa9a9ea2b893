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
    objects,
    query,
    render,
    view,
)

COMMANDS = {
    "make-demo": make_demo,
    "render": render,
    "view": view,
    "demo": demo,
    "distill": distill,
    "query": query,
    "objects": objects,
    "eval-query": eval_query,
    "grasp": grasp,
    "edit": edit,
    "insert": insert,
    "make-tiny-model": make_tiny_model,
}

"""Registry of CLI commands: name -> module with HELP, add_arguments(parser), run(args)."""

from . import (
    convert,
    demo,
    distill,
    edit,
    eval_query,
    evaluate,
    grasp,
    insert,
    make_demo,
    make_tiny_model,
    objects,
    query,
    render,
    save_project,
    train,
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
    "train": train,
    "eval": evaluate,
    "convert": convert,
    "save-project": save_project,
    "grasp": grasp,
    "edit": edit,
    "insert": insert,
    "make-tiny-model": make_tiny_model,
}

"""Tasks (classify, multilabel, detect, segment, instance): what differs between them, as rows of one table the pipeline reads."""
from .registry import TASKS, Task, find_task, load_run, register_task, run_task, task_of

# The built-in tasks register themselves on import (as the datasets and models do).
from . import classify, detect, instance, multilabel, segment  # noqa: E402,F401

__all__ = ["TASKS", "Task", "find_task", "load_run", "register_task", "run_task", "task_of"]

"""Tasks by name (`config.task.name`): what the trainer trains on and how it evaluates."""

from semvlp_jax.tasks import nlvr2, pretrain, retrieval, vqa
from semvlp_jax.tasks.base import EvalContext, Task, TaskData

TASKS: dict[str, Task] = {
    task.name: task for task in (pretrain.TASK, vqa.VQA, vqa.GQA, nlvr2.TASK, retrieval.TASK)
}


def get(name: str) -> Task:
    if name not in TASKS:
        raise KeyError(f'unknown task {name!r}; expected one of {sorted(TASKS)}')
    return TASKS[name]


__all__ = ['TASKS', 'EvalContext', 'Task', 'TaskData', 'get']

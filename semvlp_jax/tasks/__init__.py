"""Tasks by name (`config.task.name`): what the trainer trains on and how it evaluates."""

from semvlp_jax.tasks.base import EvalContext, RecordTask, Task, TaskData
from semvlp_jax.tasks.nlvr2 import Nlvr2
from semvlp_jax.tasks.pretrain import Pretrain
from semvlp_jax.tasks.retrieval import Retrieval
from semvlp_jax.tasks.vqa import Gqa, Vqa

TASKS: dict[str, type[Task]] = {task.name: task for task in (Pretrain, Vqa, Gqa, Nlvr2, Retrieval)}


def get(name: str) -> type[Task]:
    if name not in TASKS:
        raise KeyError(f'unknown task {name!r}; expected one of {sorted(TASKS)}')
    return TASKS[name]


__all__ = ['TASKS', 'EvalContext', 'RecordTask', 'Task', 'TaskData', 'get']

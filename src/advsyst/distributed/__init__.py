"""dask.distributed execution of the attack (GPU workers when advertised)."""

from __future__ import annotations

from advsyst.distributed.attack import (
    deserialize_model,
    gpu_workers,
    run_attack_task,
    serialize_model,
    submit_attack,
)
from advsyst.distributed.sharded import (
    CheckpointMismatch,
    ShardedAttackResult,
    ShardLostError,
    ShardSource,
    sharded_attack,
)

__all__ = [
    "CheckpointMismatch",
    "ShardedAttackResult",
    "ShardLostError",
    "ShardSource",
    "sharded_attack",
    "deserialize_model",
    "gpu_workers",
    "run_attack_task",
    "serialize_model",
    "submit_attack",
]

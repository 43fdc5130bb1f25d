"""Adversarial attacks: CONSERVAttack (dataset-level budgets) and first-order attacks."""

from __future__ import annotations

from advsyst.attacks.config import ConservAttackConfig
from advsyst.attacks.conservattack import ConservAttack, conservattack
from advsyst.attacks.model import ModelAdapter, as_adapter
from advsyst.attacks.result import AttackResult

__all__ = [
    "AttackResult",
    "ConservAttack",
    "ConservAttackConfig",
    "ModelAdapter",
    "as_adapter",
    "conservattack",
]

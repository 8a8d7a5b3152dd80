"""The online apply (apply_mode "online"): a bundle's lock phase built on a copy of its table
while the application writes, swapped in under a short lock. See rollout.online.engine."""

from rollout.online.definition import OnlineRefused
from rollout.online.engine import (
    AlreadyApplied,
    OnlineOptions,
    OnlinePlan,
    apply_online,
    cleanup,
    leftovers,
    phases,
    plan_online,
)

__all__ = [
    "AlreadyApplied",
    "OnlineOptions",
    "OnlinePlan",
    "OnlineRefused",
    "apply_online",
    "cleanup",
    "leftovers",
    "phases",
    "plan_online",
]

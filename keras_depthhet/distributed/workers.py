"""The workers of a multi-worker run, as the distributed API names them.

At each event the chief alone scores, one broadcast gives every worker its
numbers bit for bit and every worker runs the same selection on them, so
all grow the same neurons. Only the chief writes files
(`ChiefBackupAndRestore` is `keras_depthhet.growth.GrowthBackupAndRestore`).
"""

from keras_depthhet.growth.agreement import growth_settings, join_workers
from keras_depthhet.growth.backup import GrowthBackupAndRestore
from keras_depthhet.utils.workers import (
    Workers,
    check_same_settings,
    chief_decides,
    workers_of,
)

ChiefBackupAndRestore = GrowthBackupAndRestore
"""The former name of `keras_depthhet.growth.GrowthBackupAndRestore`."""

__all__ = [
    "ChiefBackupAndRestore",
    "Workers",
    "check_same_settings",
    "chief_decides",
    "growth_settings",
    "join_workers",
    "workers_of",
]

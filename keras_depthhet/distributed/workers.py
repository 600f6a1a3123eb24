"""The workers of a multi-worker run, as the distributed API names them.

At each event the chief alone scores and one broadcast gives every worker
its numbers bit for bit, so that all select and grow the same neurons.
"""

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
    "workers_of",
]

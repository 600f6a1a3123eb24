"""The workers of a multi-worker run, as the distributed API names them.

The collectives (`Workers`, `workers_of`, `check_same_settings`,
`chief_decides`) are defined in `keras_depthhet.utils.workers`, below
growth, which uses them; `growth_settings` and `join_workers`, which
apply them to a `GrowthCallback`, in `keras_depthhet.growth.agreement`.
`ChiefBackupAndRestore` is `keras_depthhet.growth.GrowthBackupAndRestore`,
which only the chief writes.
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

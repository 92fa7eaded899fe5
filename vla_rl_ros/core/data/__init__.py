"""LeRobot dataset writing/reading for the trajectory_logger, trainer and replay (ROS-free).

* :mod:`.schema`  -- the per-step field layout (:func:`make_features`, field-name constants)
* :mod:`.writer`  -- :class:`EpisodeWriter`: non-blocking, crash-safe episode saving
* :mod:`.store`   -- the staging + atomic-commit protocol on top of lerobot; :func:`recover`
* :mod:`.reader`  -- :func:`open_dataset`, :func:`episode_frames`, :func:`episode_summaries`

Importing this package (or :mod:`.writer`) does not import lerobot or torch; the saving
worker and the reader functions do.
"""

from .schema import make_features

_LAZY = {
    "EpisodeWriter": ".writer",
    "SavedEpisode": ".writer",
    "FailedEpisode": ".writer",
    "validate_episode": ".writer",
    "recover": ".store",
    "open_dataset": ".reader",
    "episode_frames": ".reader",
    "episode_summaries": ".reader",
}

__all__ = [  # noqa: RUF022
    "make_features",
    "EpisodeWriter",
    "SavedEpisode",
    "FailedEpisode",
    "validate_episode",
    "recover",
    "open_dataset",
    "episode_frames",
    "episode_summaries",
]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(name)

"""Scalars of training runs as TensorBoard event files (``<run out>/tb/``), next to the plots.

:class:`ScalarLog` is what the trainers write through (``train-bc``, ``train-rl``, ``train-wm``,
``improve``): ``add(tag, value, step)`` / ``add_dict(prefix, values, step)``, one event file per
run (``tensorboardX``'s writer; ``tensorboard --logdir <out>/tb`` shows them; tensorboard itself is
not a dependency). Values that are not finite numbers (NaN, None, strings) are skipped. Writing
scalars never fails a training run: the first error (tensorboardX missing, an unwritable folder,
...) is logged once as a warning and the log turns itself off.

:func:`read_scalars` reads the event files back (``{tag: [(step, value), ...]}``) without
tensorboard: the TFRecord framing (uint64 length, uint32 masked CRC-32C of the length, the
``Event`` protobuf, uint32 masked CRC-32C of the data; both CRCs verified) parsed with the
``Event`` message class that tensorboardX ships. TensorBoard stores ``simple_value`` as float32,
so a value reads back rounded to float32.

Tags (``<group>/<metric>``, the metric named as in the run's ``history``):

* ``train-bc``: ``train/loss``, ``train/lr`` (every 25 steps), ``val/loss``, ``val/cube_err_cm``
  (every ``--val-every``); step: the optimiser step.
* ``train-rl``: ``rl/<key>`` for every key of an epoch's history entry (``policy_loss``,
  ``clip_fraction``, ``ess``, ``ess_minibatch``, ``kl_behaviour``, ``kl_base``, ``value_loss``);
  step: the epoch (1-based).
* ``train-wm``: ``wm/dynamics``, ``wm/heads`` (every 50 steps and the last); step: the step.
* ``improve``: ``improve/success`` (noiseless success rate, overall), ``improve/success_<family>``,
  ``improve/explored_success``, ``improve/mu_shift_sigma``, ``improve/version``; step: the round
  (0 = before RL). Each round's update writes its own ``round_<r>/tb`` (``rl/...``).
"""

from __future__ import annotations

import logging
import math
import numbers
import struct
import time
from pathlib import Path

#: sub-folder of a run's output folder that holds its event files
TB_DIR = "tb"
#: seconds between flushes of the event file to disk (what a live ``tensorboard`` sees)
FLUSH_SECONDS = 10
#: TFRecord framing: (uint64 length, uint32 masked CRC of it) before the data, uint32 masked CRC after
_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")

log = logging.getLogger(__name__)


def _number(value) -> float | None:
    """``value`` as a finite float, or None (not a number, bool, NaN or infinite)."""
    if isinstance(value, bool):
        return None
    if not isinstance(value, numbers.Real):
        try:  # numpy / torch scalars
            value = value.item()
        except (AttributeError, TypeError, ValueError):
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return None
    v = float(value)
    return v if math.isfinite(v) else None


class ScalarLog:
    """Event-file writer of one run: ``<out_dir>/tb/``. ``enabled=False``: writes nothing.
    The writer is opened at the first value; use it as a context manager (or call ``close``)."""

    def __init__(self, out_dir, enabled: bool = True):
        self.dir = Path(out_dir) / TB_DIR
        self.enabled = bool(enabled)
        self._writer = None
        self._failed = False

    def _fail(self, what: str, err: Exception) -> None:
        if not self._failed:
            log.warning("TensorBoard scalars off for this run (%s %s: %s: %s)", what, self.dir, type(err).__name__, err)
        self._failed = True

    def _get(self):
        if self._writer is None:
            from tensorboardX import SummaryWriter

            # tensorboardX names the file by the second and host: a second writer in the same second
            # (a run resumed into the same folder) would truncate the first one without the suffix
            self._writer = SummaryWriter(logdir=str(self.dir), flush_secs=FLUSH_SECONDS,
                                         filename_suffix=f".{time.time_ns()}")
        return self._writer

    def add(self, tag: str, value, step: int) -> bool:
        """Write ``value`` under ``tag`` at ``step``; False when skipped (not a finite number, the
        log off or failed)."""
        v = _number(value)
        if v is None or not self.enabled or self._failed:
            return False
        try:
            self._get().add_scalar(tag, v, int(step))
        except Exception as e:  # noqa: BLE001 - scalars never fail a run
            self._fail("writing", e)
            return False
        return True

    def add_dict(self, prefix: str, values: dict, step: int, skip=()) -> int:
        """``add(prefix/key, value, step)`` for every item of ``values`` whose key is not in
        ``skip``; returns how many were written."""
        return sum(self.add(f"{prefix}/{k}" if prefix else str(k), v, step)
                   for k, v in values.items() if k not in skip)

    def flush(self) -> None:
        if self._writer is not None and not self._failed:
            try:
                self._writer.flush()
            except Exception as e:  # noqa: BLE001
                self._fail("flushing", e)

    def close(self) -> None:
        w, self._writer = self._writer, None
        if w is not None:
            try:
                w.close()
            except Exception as e:  # noqa: BLE001
                self._fail("closing", e)

    def __enter__(self) -> "ScalarLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _records(path: Path):
    """The data of every complete record of a TFRecord file (CRCs verified; a torn last record,
    one still being written, ends the file)."""
    from tensorboardX.record_writer import masked_crc32c

    data = path.read_bytes()
    i = 0
    while i + _HEADER.size <= len(data):
        n, crc_n = _HEADER.unpack_from(data, i)
        end = i + _HEADER.size + n + _FOOTER.size
        if end > len(data):
            return
        if masked_crc32c(data[i:i + 8]) != crc_n:
            raise ValueError(f"{path}: bad length CRC of the record at byte {i}")
        rec = data[i + _HEADER.size:end - _FOOTER.size]
        if masked_crc32c(rec) != _FOOTER.unpack_from(data, end - _FOOTER.size)[0]:
            raise ValueError(f"{path}: bad data CRC of the record at byte {i}")
        yield rec
        i = end


def read_scalars(tb_dir) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of every scalar in the event files under ``tb_dir`` (files
    in name order: by creation time; values in the order written)."""
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list[tuple[int, float]]] = {}
    for f in sorted(Path(tb_dir).rglob("events.out.tfevents.*")):
        for rec in _records(f):
            ev = Event.FromString(rec)
            if not ev.HasField("summary"):
                continue
            for v in ev.summary.value:
                if v.WhichOneof("value") == "simple_value":
                    out.setdefault(v.tag, []).append((int(ev.step), float(v.simple_value)))
    return out

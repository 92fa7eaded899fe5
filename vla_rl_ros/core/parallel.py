"""Independent episodes in order, over worker processes or Ray actors (ARCHITECTURE.md §9).

:func:`ordered_map` is the one place the direct loops (``core/collect.py``,
``core/policy/evaluate.py``) fan out. Each worker runs ``init(**init_kwargs)`` once (it builds its
simulator and its copy of the policy in module globals), then ``fn(job)`` for the jobs it is
given; the results come back in job order. An episode depends only on its job (seed, family,
exploration seed), so the results do not depend on the number of workers or on where they run.

* ``ray_address=None``: a :class:`~concurrent.futures.ProcessPoolExecutor` (spawn) on this machine.
* ``ray_address=""`` or ``"local"``: a local Ray started here (``num_cpus=workers``).
* any other string: ``ray.init(address=...)`` — ``"auto"`` (a cluster started on this machine with
  ``ray start --head``) or ``"ray://host:10001"`` / ``"host:6379"``. Every node needs this package
  and its dependencies installed (the same environment); the code is not shipped.

Under Ray each of the ``workers`` actors reserves one CPU and owns one simulator and one policy.
Directories named in ``ship`` (keys of ``init_kwargs``: a checkpoint) are put into Ray's object
store once per call — ``{relative path: bytes}`` — and every actor writes them into a temporary
directory of its own node, passed to ``init`` in place of the driver's path; no node needs the
driver's files. ``ray`` is an optional extra (``requirements/extras.txt``), imported only here.
ROS-free.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from vla_rl_ros.core.config import opt

#: the pinned Ray release (requirements/extras.txt, constraints.txt)
RAY_VERSION = "2.60.0"
RAY_MISSING = (f"--ray needs the optional extra Ray: pip install -c requirements/constraints.txt ray=={RAY_VERSION} "
               "(scripts/setup_env.sh installs requirements/extras.txt)")
#: the value of ``--ray`` given without an address
LOCAL = "local"
RAY_HELP = ("run the episodes on Ray actors instead of worker processes: --ray alone starts a local Ray with "
            "--workers CPUs, --ray ADDRESS joins a cluster (auto: the one `ray start --head` started here; "
            "host:6379 or ray://host:10001); after positional arguments, or --ray=ADDRESS")


def ray_option():
    """The ``--ray [ADDRESS]`` field of every verb that runs direct episodes (one name, one default)."""
    return opt(None, RAY_HELP, const=LOCAL)


def ordered_map(init: Callable, init_kwargs: dict, fn: Callable, jobs: Iterable, workers: int = 1,
                ray_address: str | None = None, ship: Iterable[str] = ()) -> Iterator:
    """``fn(job)`` for every job, yielded in job order, over ``workers`` processes (``ray_address``
    None) or Ray actors, each initialised once with ``init(**init_kwargs)``. ``init`` and ``fn``
    must be module-level functions (pickled by reference). ``ship``: keys of ``init_kwargs`` whose
    values are directories (a checkpoint) that Ray actors receive through the object store (empty
    values are not shipped); ignored without Ray, where the workers read the paths themselves."""
    jobs = list(jobs)
    workers = max(1, int(workers))
    if ray_address is None:
        yield from _process_map(init, init_kwargs, fn, jobs, workers)
    else:
        yield from _ray_map(init, init_kwargs, fn, jobs, workers, ray_address, tuple(ship))


# ----------------------------------------------------------------------------- processes
def _process_map(init, init_kwargs, fn, jobs, workers) -> Iterator:
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=functools.partial(init, **init_kwargs)) as pool:
        yield from pool.map(fn, jobs, chunksize=1)


# ----------------------------------------------------------------------------- Ray
def import_ray():
    """The ``ray`` module, or a RuntimeError saying how to install the optional extra."""
    try:
        import ray
    except ImportError as e:
        raise RuntimeError(RAY_MISSING) from e
    return ray


def ensure_ray(ray_address: str, workers: int):
    """Start (``""``/``"local"``: a local Ray with ``workers`` CPUs) or join (an address) Ray unless
    this process is already connected; returns the module. Ray stays up for the process (an
    ``improve`` run maps several times); ``ray.shutdown()`` ends it."""
    ray = import_ray()
    if not ray.is_initialized():
        if ray_address in ("", LOCAL):
            ray.init(num_cpus=workers, include_dashboard=False, logging_level="WARNING",
                     configure_logging=True)
        else:
            ray.init(address=ray_address, logging_level="WARNING")
    return ray


def pack_dir(path: str) -> dict[str, bytes]:
    """Every file under ``path`` as ``{relative posix path: bytes}``."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{path!r} is not a directory (a checkpoint to ship to the Ray workers)")
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def unpack_dir(files: dict[str, bytes], dest: str) -> str:
    """Write :func:`pack_dir`'s ``files`` under ``dest`` (created); returns ``dest``."""
    root = Path(dest)
    for rel, data in files.items():
        p = root / rel
        if root.resolve() not in p.resolve().parents:
            raise ValueError(f"shipped file {rel!r} escapes its directory")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return str(root)


class _Actor:
    """One Ray worker: its shipped directories in a temporary folder, then ``init`` once."""

    def __init__(self, init, init_kwargs: dict, fn, shipped: dict):
        self._fn, self._tmp = fn, []
        kwargs = dict(init_kwargs)
        for key, files in shipped.items():
            d = tempfile.mkdtemp(prefix=f"vla_rl_ros_{key}_")
            self._tmp.append(d)
            kwargs[key] = unpack_dir(files, d)
        init(**kwargs)

    def run(self, job):
        return self._fn(job)

    def close(self) -> None:
        for d in self._tmp:
            shutil.rmtree(d, ignore_errors=True)
        self._tmp = []


def _ray_map(init, init_kwargs, fn, jobs, workers, ray_address, ship) -> Iterator:
    ray = ensure_ray(ray_address, workers)
    cpus = int(ray.cluster_resources().get("CPU", 0))
    n = max(1, min(workers, cpus, len(jobs) or 1))  # more actors than CPUs would wait forever
    # the directories once per call, in the object store (a top-level argument: resolved by Ray)
    shipped = ray.put({k: pack_dir(init_kwargs[k]) for k in ship if init_kwargs.get(k)})
    actor_cls = ray.remote(num_cpus=1)(_Actor)
    actors = [actor_cls.remote(init, init_kwargs, fn, shipped) for _ in range(n)]
    try:
        from ray.util import ActorPool

        yield from ActorPool(actors).map(lambda a, job: a.run.remote(job), jobs)
    finally:
        try:
            ray.get([a.close.remote() for a in actors], timeout=30)
        except Exception:  # noqa: BLE001 - an actor that died has nothing left to clean
            pass
        for a in actors:
            ray.kill(a)

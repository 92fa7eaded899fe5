"""Repeated starts and stops: every exit code must be 0 and no process may be left behind.

    .venv/bin/python bench/shutdown_loop.py [--iterations 30] [--graphs sim,collect,policy_sim,explore,replay,robot]
                                            [--evaluate-iterations 30]

1. ``--evaluate-iterations`` runs of ``vla-rl-ros evaluate --episodes 1`` through the ROS graph:
   each must exit 0 (no abort at teardown) and leave no process of its graph.
2. For each graph, ``--iterations`` starts of ``vla-rl-ros run <graph>``, each stopped once it
   runs (an episode under way; robot: the logger recording) by SIGTERM, SIGINT and SIGHUP in
   turn: each must exit 0 and leave no process.
Prints a line per run and a summary; exits 1 if any run failed.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from shutdown import overrides, wait_running  # noqa: E402

from vla_rl_ros.lifetime import processes_of_runner  # noqa: E402
from vla_rl_ros.standin import StandInConfig, wait_until  # noqa: E402

GONE_S = 2.0


def leftovers_after(pid: int) -> dict[int, str]:
    wait_until(lambda: not processes_of_runner(pid), GONE_S, poll=0.02)
    left = processes_of_runner(pid)
    for p in left:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def keep_logs(run_dir: Path, keep: str) -> str:
    """A failed run's node logs: copied to ``keep`` (the run's temp dir is removed), tails printed."""
    import shutil

    logs = run_dir / "logs"
    if not logs.is_dir():
        return "\n(no node logs)"
    dest = Path(keep) / run_dir.name
    shutil.copytree(logs, dest, dirs_exist_ok=True)
    tails = [f"--- {f.name} (last lines) ---\n" + "\n".join(f.read_text(errors="replace").splitlines()[-15:])
             for f in sorted(logs.glob("*.log"))]
    return f"\nnode logs kept in {dest}\n" + "\n".join(tails)


def main() -> int:
    # started under nohup or with `&` from a script, this process ignores SIGHUP / SIGINT and the
    # runners it starts inherit that; a runner keeps an ignored disposition on purpose (nohup
    # semantics), so those stops would hang: give the children the default dispositions back
    for sig, handler in ((signal.SIGINT, signal.default_int_handler), (signal.SIGHUP, signal.SIG_DFL)):
        if signal.getsignal(sig) == signal.SIG_IGN:
            print(f"note: {signal.Signals(sig).name} was ignored (nohup / background job); restored for the runs")
            signal.signal(sig, handler)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--evaluate-iterations", type=int, default=30)
    ap.add_argument("--graphs", default="sim,collect,policy_sim,explore,replay,robot")
    ap.add_argument("--domain-id", type=int, default=160)
    ap.add_argument("--keep", default="out/shutdown_loop_failures", help="where a failed run's node logs are kept")
    args = ap.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    results: dict[str, list[bool]] = {}
    cfg = StandInConfig()
    with tempfile.TemporaryDirectory(prefix="shutdown_loop_") as tmp:
        tmp = Path(tmp)
        for i in range(args.evaluate_iterations):
            t0 = time.monotonic()
            r = subprocess.Popen([sys.executable, "-m", "vla_rl_ros.cli", "evaluate", "--episodes", "1", "--real-time-factor", "2",
                                  "--domain-id", str(args.domain_id), "--log-dir", str(tmp / f"eval_{i}")],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            out, _ = r.communicate(timeout=600)
            left = leftovers_after(r.pid)
            ok = r.returncode == 0 and not left
            results.setdefault("evaluate --episodes 1", []).append(ok)
            print(f"evaluate {i + 1:2d}: exit {r.returncode}, {time.monotonic() - t0:.1f} s, "
                  f"left {len(left)}{'' if ok else ' FAILED: ' + out[-1500:]}", flush=True)
        from vla_rl_ros.nodes.background import BackgroundNode

        sigs = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]
        for graph in [g for g in args.graphs.split(",") if g]:
            for i in range(args.iterations):
                sig = sigs[i % len(sigs)]
                bg = BackgroundNode(f"shutdown_loop_{os.getpid()}", args.domain_id)
                run_dir = tmp / f"{graph}_{i}"
                run_dir.mkdir()
                ov = [f"{k}={v}" for k, v in overrides(graph, run_dir, cfg).items()]
                t0 = time.monotonic()
                r = subprocess.Popen([sys.executable, "-m", "vla_rl_ros.cli", "run", graph, *ov,
                                      "--domain-id", str(args.domain_id), "--log-dir", str(run_dir / "logs")],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                arm = None
                try:
                    arm = wait_running(graph, bg, cfg)
                    r.send_signal(sig)
                    out, _ = r.communicate(timeout=120)
                except Exception as e:  # noqa: BLE001
                    r.kill()
                    out = f"{type(e).__name__}: {e}\n{r.communicate()[0]}"
                finally:
                    if arm is not None:
                        arm.close()
                    bg.close()
                left = leftovers_after(r.pid)
                ok = r.returncode == 0 and not left
                results.setdefault(f"run {graph}", []).append(ok)
                print(f"{graph} {i + 1:2d} ({sig.name}): exit {r.returncode}, {time.monotonic() - t0:.1f} s, "
                      f"left {len(left)}{'' if ok else ' FAILED: ' + out[-1500:] + keep_logs(run_dir, args.keep)}",
                      flush=True)
    print("\nsummary (runs with exit 0 and nothing left behind):")
    for k, v in results.items():
        print(f"  {k:24s} {sum(v)}/{len(v)}")
    return 0 if all(all(v) for v in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

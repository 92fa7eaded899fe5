"""``vla-rl-ros improve``: rounds of collect (with exploration) → train-rl → hot swap → evaluate.

Graph mode (default) keeps one ROS graph running for the whole run — ``config/graphs/explore.yaml``:
sim_node + policy_node (μ) + exploration_node (a = μ + ε, truncated Gaussian) + trajectory_logger
(one LeRobot dataset for all rounds). Per round:

1. resume the simulator (``sim_node`` parameter ``paused``) until the round's episodes have ended,
   pausing it as soon as the round's last episode has started, and wait until the logger has saved them all;
2. ``train_rl`` on everything logged so far (each frame carries its behaviour log-likelihood and
   the policy version that produced it), starting from the current version, with ONNX export;
3. announce the new checkpoint on ``/vla/policy/weights``: the *still-running* policy node
   validates it off the control path and swaps it in between two inferences (the next round
   explores with it);
4. evaluate the noiseless mean on fixed evaluation seeds (direct loop in ``--workers`` processes:
   the same episodes as the graph on the same seeds, see ``tests/ros/test_evaluate.py``), with
   the failures sorted by class (``evaluate --diagnose``), so a round shows *what* RL changed.

The explored episodes' own success is the noisy policy's success (on the collection seeds).
``--direct`` runs the collection without ROS (the same loop and frame layout, in parallel) for
multi-seed experiments. Writes ``rounds.json``, ``improve.png`` and prints a per-round table.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

from vla_rl_ros.core.sim.tasks import FAMILIES


def _table(rows: list[dict]) -> str:
    fams = list(FAMILIES)
    head = ["round", "version", "episodes", "explored"] + [f"eval {f}" for f in fams] + ["eval overall"]
    lines = [head]
    for r in rows:
        ev = r["eval"]
        cells = [str(r["round"]), f"v{r['version']}", str(r["collected_total"]),
                 "-" if r.get("explored_success") is None else f"{100 * r['explored_success']:.1f}%"]
        for f in fams + ["overall"]:
            k, n = ev.get(f, (0, 0))
            cells.append(f"{100.0 * k / max(n, 1):.1f}% ({k}/{n})")
        lines.append(cells)
    w = [max(len(x[i]) for x in lines) for i in range(len(head))]
    out = ["  ".join(c.rjust(w[i]) for i, c in enumerate(x)) for x in lines]
    out.insert(1, "-" * len(out[0]))
    return "\n".join(out)


def plot_rounds(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    x = [r["round"] for r in rows]
    for f in list(FAMILIES) + ["overall"]:
        y = [100.0 * r["eval"].get(f, (0, 1))[0] / max(r["eval"].get(f, (0, 1))[1], 1) for r in rows]
        ax.plot(x, y, "o-", lw=2.5 if f == "overall" else 1.2, label=f"mean policy: {f}")
    ex = [(r["round"], 100 * r["explored_success"]) for r in rows if r.get("explored_success") is not None]
    if ex:
        ax.plot([a for a, _ in ex], [b for _, b in ex], "k--", lw=1, label="explored (noisy) episodes")
    finish_rounds_plot(fig, ax, x, "round (0 = before RL)", "vla-rl-ros improve", path)


def finish_rounds_plot(fig, ax, rounds, xlabel: str, title: str, path) -> None:
    """Shared axes of the per-round success plots (improve.png, bench/improve_seeds.py): save, close."""
    import matplotlib.pyplot as plt

    ax.set_xticks(rounds)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("noiseless success %")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _eval(ckpt: str, args) -> tuple[dict, dict]:
    """Noiseless success per family on the evaluation seeds, and the failures by class
    (``evaluate --diagnose``), cached by the weights' hash."""
    from tqdm import tqdm

    from vla_rl_ros.core.policy.evaluate import evaluate_parallel, success_by_family

    seeds = list(range(args.eval_seed, args.eval_seed + args.eval_episodes))
    # evaluation is deterministic given the weights and the seeds: cache it by the weights' hash
    # (the baseline is then evaluated once for all training seeds of an experiment)
    manifest = json.loads((Path(ckpt) / "manifest.json").read_text())["files"]
    key = "|".join([manifest["model.safetensors"]["sha256"], str(seeds[0]), str(len(seeds)), str(args.max_steps),
                    "diagnose"])
    cache = Path.home() / ".cache" / "vla_rl_ros" / "eval"
    cache.mkdir(parents=True, exist_ok=True)
    hit = cache / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".json")
    if hit.is_file():
        got = json.loads(hit.read_text())
        return got["success"], got["failures"]
    bar = tqdm(total=len(seeds), unit="ep", desc="  evaluate (mean)", leave=False, dynamic_ncols=True)

    def prog(res, dt):
        bar.n = len(res)
        bar.set_postfix(success=f"{sum(r.success for r in res)}/{len(res)}")
        bar.refresh()

    res = evaluate_parallel(ckpt, seeds, workers=args.workers, max_steps=args.max_steps, progress=prog, diagnose=True)
    bar.close()
    table = {k: list(v) for k, v in success_by_family(res).items()}
    failures: dict = {}
    for r in res:
        if r.failure:
            failures[r.failure] = failures.get(r.failure, 0) + 1
    failures = dict(sorted(failures.items(), key=lambda kv: -kv[1]))
    hit.write_text(json.dumps({"success": table, "failures": failures}))
    return table, failures


def _failures_line(row: dict) -> str:
    f = row.get("failures") or {}
    return f"  v{row['version']} failures on the evaluation seeds: " + (
        ", ".join(f"{k} {v}" for k, v in f.items()) or "none")


class _GraphCollector:
    """The explore graph, started once; rounds are gated with sim_node's ``paused`` parameter."""

    def __init__(self, ckpt: str, data: Path, args, log_dir: Path):
        from std_msgs.msg import String

        from vla_rl_ros.cli import GraphMonitor
        from vla_rl_ros.core.policy.checkpoint import read_config
        from vla_rl_ros.graph import GraphRunner, load_graph
        from vla_rl_ros.nodes.common import LATCHED_QOS

        size = int(read_config(ckpt)["policy"]["image_size"])
        graph = load_graph("explore", {
            "checkpoint": str(Path(ckpt).resolve()), "out": str(data), "seed": args.collect_seed,
            "episodes": 0, "real_time_factor": args.speed, "image_width": size, "image_height": size,
            "sigma": [args.sigma], "gripper_sigma": args.gripper_sigma, "explore_seed": args.seed,
            "backend": "onnxruntime", "max_steps": args.max_steps, "seed_repeat": args.group_size,
        })
        for n in graph.nodes:
            if n.name == "sim_node":
                n.parameters["paused"] = True
        self.domain = args.domain_id
        self.monitor = GraphMonitor(self.domain)
        self.monitor.bg.collect(String, "/vla/policy/swap", LATCHED_QOS)
        self.runner = GraphRunner(graph, log_dir=str(log_dir), domain_id=self.domain).start()
        self.log_dir = log_dir
        # episodes start only once the policy (model loaded) and the logger are up
        self.monitor.bg.collect(String, "/vla/exploration/status", LATCHED_QOS)
        ready = lambda: (self.monitor.policy_status and self.monitor.status  # noqa: E731
                         and self.monitor.bg.msgs("/vla/exploration/status"))
        t0 = time.monotonic()
        while not ready():
            self._check()
            if time.monotonic() - t0 > 180:
                raise RuntimeError(f"the graph did not come up within 180 s; logs in {log_dir}")
            time.sleep(0.2)

    def _set(self, node: str, name: str, value) -> None:
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        bg = self.monitor.bg
        cli = bg.node.create_client(SetParameters, f"/{node}/set_parameters")
        if not cli.wait_for_service(timeout_sec=60):
            raise RuntimeError(f"{node} does not answer parameter requests; logs in {self.log_dir}")
        v = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=bool(value)) if isinstance(value, bool) \
            else ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=int(value))
        fut = cli.call_async(SetParameters.Request(parameters=[Parameter(name=name, value=v)]))
        if not bg.wait_for(fut.done, 30):
            raise RuntimeError(f"setting {node}.{name} timed out")
        bg.node.destroy_client(cli)

    def _check(self) -> None:
        dead = self.runner.dead()
        if dead:
            tails = "\n".join(f"--- {n} (exit {c})\n{self.runner.tail(n, 15)}" for n, c in dead.items())
            raise RuntimeError(f"graph node(s) died:\n{tails}")

    def collect(self, target_total: int, round_index: int, bar) -> list[dict]:
        """Run until ``target_total`` episodes have ended and been saved; returns the new ones."""
        before = len(self.monitor.ended())
        self._set("exploration_node", "round_index", round_index)
        self._set("sim_node", "paused", False)
        paused = False
        last, t_last = -1, time.monotonic()
        while True:
            time.sleep(0.2)
            self._check()
            n = len(self.monitor.ended())
            if n != last:
                last, t_last = n, time.monotonic()
                bar.n = n - before
                bar.refresh()
            started = len({e.get("episode") for e in self.monitor.events if e.get("event") == "start"})
            if not paused and started >= target_total:
                self._set("sim_node", "paused", True)  # the running episode is the round's last
                paused = True
            saved = int(self.monitor.status.get("saved", 0))
            if n >= target_total and saved >= n:
                return self.monitor.ended()[before:]
            if time.monotonic() - t_last > 180:
                raise RuntimeError(f"no episode ended for 180 s; logs in {self.log_dir}")

    def announce(self, ckpt: str) -> dict:
        from std_msgs.msg import String

        from vla_rl_ros.nodes.common import RELIABLE_QOS

        bg = self.monitor.bg
        if not hasattr(self, "_pub"):
            self._pub = bg.node.create_publisher(String, "/vla/policy/weights", RELIABLE_QOS)
            bg.wait_for(lambda: self._pub.get_subscription_count() > 0, 30)
        target = str(Path(ckpt).resolve())
        self._pub.publish(String(data=json.dumps({"path": target})))
        ok = lambda: [e for e in bg.json_msgs("/vla/policy/swap")  # noqa: E731
                      if e.get("path") == target and e.get("event") in ("loaded", "refused")]
        if not bg.wait_for(ok, 120):
            raise RuntimeError(f"the policy node gave no verdict on {target}")
        ev = ok()[-1]
        if ev["event"] == "refused":
            raise RuntimeError(f"the policy node refused {target}: {ev['reason']}")
        return ev  # installed at its next inference (the next round's first observation)

    def close(self) -> None:
        self.runner.stop(order=["sim_node", "exploration_node", "policy_node", "trajectory_logger"], timeout=300)
        self.monitor.close()


def run_improve(args) -> int:
    from tqdm import tqdm

    from vla_rl_ros.cli import _die, check_writable_dir, default_checkpoint, rl_summary
    from vla_rl_ros.core.collect import DirectCollectConfig, collect_direct
    from vla_rl_ros.core.policy.checkpoint import CheckpointError, read_config
    from vla_rl_ros.core.rl.config import RLConfig
    from vla_rl_ros.core.rl.trainer import train_rl
    from vla_rl_ros.core.sim.task_features import episode_privileged_features

    if args.rounds < 1 or args.episodes_per_round < 1:
        _die("--rounds and --episodes-per-round must be >= 1")
    if args.group_size < 1 or args.episodes_per_round % args.group_size:
        _die(f"--group-size must be >= 1 and divide --episodes-per-round ({args.episodes_per_round})")
    scenes_per_round = args.episodes_per_round // args.group_size
    ckpt = str(Path(args.init or default_checkpoint()).resolve())
    try:
        cfg = read_config(ckpt)
    except CheckpointError as e:
        _die(str(e))
    out = check_writable_dir(args.out)
    data = out / "data"
    if data.exists():
        _die(f"{data} exists: use a fresh --out for each improve run")
    version = int(cfg.get("version", 0))
    t_start = time.monotonic()
    print(f"improve: {args.rounds} rounds x {args.episodes_per_round} explored episodes from v{version} ({ckpt}); "
          f"σ {args.sigma} rad; {scenes_per_round} scenes x {args.group_size} rollouts per round; evaluation on {args.eval_episodes} seeds from {args.eval_seed}; "
          f"{'direct collection' if args.direct else 'collection through the ROS graph'}")
    ev, fails = _eval(ckpt, args)
    rows = [{"round": 0, "version": version, "checkpoint": ckpt, "collected_total": 0,
             "explored_success": None, "eval": ev, "failures": fails}]
    print(_table(rows))
    print(_failures_line(rows[0]), flush=True)
    graph = None
    if not args.direct:
        graph = _GraphCollector(ckpt, data, args, out / "graph_logs")
    try:
        for r in range(1, args.rounds + 1):
            total = r * args.episodes_per_round
            t0 = time.monotonic()
            bar = tqdm(total=args.episodes_per_round, unit="ep", desc=f"round {r}: collect", leave=False,
                       dynamic_ncols=True)
            if graph is not None:
                ended = graph.collect(total, r - 1, bar)
                explored = sum(bool(e.get("success")) for e in ended) / max(len(ended), 1)
            else:
                dc = DirectCollectConfig(seed=args.collect_seed + (r - 1) * scenes_per_round,
                                         seed_repeat=args.group_size,
                                         image_size=int(cfg["policy"]["image_size"]), policy=ckpt,
                                         sigma=(args.sigma,), gripper_sigma=args.gripper_sigma,
                                         explore_seed=args.seed, max_steps=args.max_steps)

                def prog(n, ok):
                    bar.n = n
                    bar.refresh()

                res = collect_direct(str(data), args.episodes_per_round, dc, workers=args.workers, progress=prog)
                explored = res["success"] / max(res["episodes"], 1)
            bar.close()
            t_collect = time.monotonic() - t0
            rl = RLConfig(data=[str(data)], init=ckpt, out=str(out / f"round_{r}"), epochs=args.epochs, lr=args.lr,
                          clip=args.clip, kl_coef=args.kl_coef, seed=args.seed + 1000 * r, threads=2,
                          baseline=args.baseline, advantage=args.advantage, gae_lambda=args.gae_lambda,
                          critic=args.critic, ratio=args.ratio, trainable=args.trainable)
            res = train_rl(rl, privileged=episode_privileged_features)
            print(rl_summary(res))
            swap = None
            if graph is not None:
                swap = graph.announce(res["checkpoint"])
                print(f"  hot swap: the running policy node validated v{res['version']} in {swap['load_ms']:.0f} ms")
            ckpt, version = res["checkpoint"], res["version"]
            ev, fails = _eval(ckpt, args)
            rows.append({"round": r, "version": version, "checkpoint": ckpt, "collected_total": total,
                         "explored_success": explored, "eval": ev, "failures": fails, "collect_seconds": t_collect,
                         "train": {k: res[k] for k in ("decisions", "train_seconds", "value_loss", "stopped_early",
                                                       "critic", "baseline", "logged_logp_gap_max", "init_log_ratio_max")},
                         "history": res["history"], "swap": swap})
            print(_table(rows))
            print(_failures_line(rows[0]))
            print(_failures_line(rows[-1]), flush=True)
            (out / "rounds.json").write_text(json.dumps(rows, indent=1))
            plot_rounds(rows, out / "improve.png")
    except RuntimeError as e:
        print(f"improve stopped: {e}", file=sys.stderr)
        return 1
    finally:
        if graph is not None:
            graph.close()
    b, a = rows[0]["eval"]["overall"], rows[-1]["eval"]["overall"]
    print(f"\nnoiseless success: {100 * b[0] / max(b[1], 1):.1f}% (v{rows[0]['version']}) -> "
          f"{100 * a[0] / max(a[1], 1):.1f}% (v{rows[-1]['version']}) with {rows[-1]['collected_total']} explored "
          f"episodes in {time.monotonic() - t_start:.0f}s; table {out / 'rounds.json'}, plot {out / 'improve.png'}")
    return 0

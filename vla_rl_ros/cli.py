"""``vla-rl-ros <verb>``: the command line.

Verbs: ``run <graph>`` (start a node graph as real ROS 2 processes), ``collect`` (sim + expert +
logger -> LeRobot dataset, with a progress bar and a success table), ``replay DIR`` (publish a
dataset back onto the topics), ``summary DIR`` (the success table of a dataset), ``graphs``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def _die(msg: str, code: int = 2) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(code)


def check_writable_dir(path: str) -> Path:
    """Create ``path`` if needed and prove we can write into it; a clear error otherwise."""
    p = Path(path).expanduser().resolve()
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / ".write_probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        _die(f"output folder {str(p)!r} is not writable: {e.strerror or e}")
    return p


# ----------------------------------------------------------------------------- tables
def success_table(summaries: list[dict]) -> str:
    """Success per task family (and overall) from ``episode_summaries`` rows."""
    fams: dict[str, list[dict]] = {}
    for s in summaries:
        fams.setdefault(str(s.get("family") or "?"), []).append(s)
    rows = [("family", "episodes", "success", "rate", "mean len", "mean return")]

    def row(name, items):
        n = len(items)
        k = sum(1 for s in items if s.get("success"))
        mean_len = sum(int(s.get("length", 0)) for s in items) / max(n, 1)
        mean_ret = sum(float(s.get("return", 0.0)) for s in items) / max(n, 1)
        return (name, str(n), str(k), f"{100.0 * k / max(n, 1):.1f}%", f"{mean_len:.1f}", f"{mean_ret:.2f}")

    for fam in sorted(fams):
        rows.append(row(fam, fams[fam]))
    rows.append(row("overall", summaries))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)


def family_of(task: str) -> str:
    from vla_rl_ros.core.sim.tasks import parse_instruction

    try:
        return parse_instruction(task).family
    except ValueError:
        return "?"


def dataset_summaries(root: str) -> list[dict]:
    from vla_rl_ros.core.data.reader import episode_summaries

    rows = episode_summaries(root)
    for r in rows:
        r.setdefault("family", family_of(str(r.get("task", ""))))
    return rows


# ----------------------------------------------------------------------------- monitor
class GraphMonitor:
    """Watches episode events, the logger's and the policy's status from this process."""

    def __init__(self, domain_id: int | None):
        from std_msgs.msg import String

        from vla_rl_ros.nodes.background import BackgroundNode
        from vla_rl_ros.nodes.common import EPISODE_TOPIC, LATCHED_QOS, LOGGER_STATUS_TOPIC

        self.bg = BackgroundNode("vla_rl_ros_cli", domain_id)
        # transient-local: events published before discovery completed (a fast first episode on a
        # loaded machine) are still delivered from the simulator's history
        self.bg.collect(String, EPISODE_TOPIC, LATCHED_QOS)
        self.bg.collect(String, LOGGER_STATUS_TOPIC, LATCHED_QOS)
        self.bg.collect(String, "/vla/policy/status", LATCHED_QOS)
        self._topics = (EPISODE_TOPIC, LOGGER_STATUS_TOPIC)

    @property
    def events(self) -> list[dict]:
        return self.bg.json_msgs(self._topics[0])

    @property
    def status(self) -> dict:
        return self.bg.latest_json(self._topics[1])

    @property
    def policy_status(self) -> dict:
        return self.bg.latest_json("/vla/policy/status")

    def ended(self) -> list[dict]:
        seen, out = set(), []
        for e in self.events:
            if e.get("event") == "end" and e.get("episode") not in seen:
                seen.add(e.get("episode"))
                out.append(e)
        return out

    def close(self):
        self.bg.close()


# ----------------------------------------------------------------------------- verbs
def cmd_graphs(args) -> int:
    from vla_rl_ros.graph import available_graphs, load_graph

    for name in available_graphs():
        g = load_graph(name)
        print(f"{name:10s} {g.description}")
        print(f"{'':10s} args: " + ", ".join(f"{k}={v!r}" for k, v in g.args.items()))
    return 0


def cmd_run(args) -> int:
    from vla_rl_ros.graph import GraphError, GraphRunner, load_graph, parse_overrides

    try:
        graph = load_graph(args.graph, parse_overrides(args.overrides))
    except GraphError as e:
        _die(str(e))
    print(f"starting graph {graph.name!r}: " + ", ".join(n.name for n in graph.nodes))
    runner = GraphRunner(graph, log_dir=args.log_dir, domain_id=args.domain_id).start()
    try:
        runner.wait()
    except KeyboardInterrupt:
        print("\nstopping ...")
    codes = runner.stop()
    bad = {n: c for n, c in codes.items() if c not in (0, -2, None)}
    for n, c in bad.items():
        print(f"node {n} exited with code {c}", file=sys.stderr)
        if args.log_dir:
            print(runner.tail(n), file=sys.stderr)
    return 1 if bad else 0


def cmd_collect(args) -> int:
    from tqdm import tqdm

    from vla_rl_ros.graph import GraphError, GraphRunner, load_graph

    if args.episodes <= 0:
        _die("--episodes must be >= 1")
    out = check_writable_dir(args.out)
    if args.family:
        from vla_rl_ros.core.sim.tasks import FAMILIES

        if args.family not in FAMILIES:
            _die(f"unknown task family {args.family!r}; valid: {', '.join(FAMILIES)}")
    if args.direct:
        return _collect_direct(args, out)
    if args.policy or args.seed_repeat != 1:
        _die("--policy and --seed-repeat need --direct (explored rollouts through the ROS graph: `vla-rl-ros improve`)")
    log_dir = Path(args.log_dir) if args.log_dir else out.parent / f"{out.name}_logs"
    overrides = {
        "out": str(out), "episodes": args.episodes, "seed": args.seed, "family": args.family or "",
        "control_rate": args.control_rate, "real_time_factor": args.speed,
        "image_width": args.image_size, "image_height": args.image_size,
        "expert_noise": args.noise, "max_steps": args.max_steps, "renderer": args.renderer,
    }
    try:
        graph = load_graph("collect", overrides)
    except GraphError as e:
        _die(str(e))
    before = 0
    if (out / "meta" / "info.json").exists():
        before = len(dataset_summaries(str(out)))
        print(f"appending to existing dataset at {out} ({before} episodes)")
    monitor = GraphMonitor(args.domain_id)
    runner = GraphRunner(graph, log_dir=str(log_dir), domain_id=args.domain_id).start()
    t0 = time.monotonic()
    ok = False
    bar = tqdm(total=args.episodes, unit="ep", desc="collecting", dynamic_ncols=True)
    try:
        last_progress = time.monotonic()
        saved = 0
        shown = None
        while True:
            time.sleep(0.25)
            ended = monitor.ended()
            st = monitor.status
            new_saved = int(st.get("saved", 0))
            if new_saved != saved or len(ended) != bar.n:
                last_progress = time.monotonic()
            saved = new_saved
            succ = sum(1 for e in ended if e.get("success"))
            post = dict(ended=len(ended), success=f"{succ}/{len(ended)}", pending=st.get("pending", 0))
            if min(saved, args.episodes) != bar.n or post != shown:
                bar.n = min(saved, args.episodes)
                bar.set_postfix(post)
                shown = post
            dead = runner.failed_required() or {
                n: c for n, c in runner.dead().items() if c not in (0, None)
            }
            if dead:
                bar.close()
                for n, c in dead.items():
                    print(f"\nnode {n} exited with code {c}; last log lines:\n{runner.tail(n)}", file=sys.stderr)
                break
            if saved >= args.episodes:
                ok = True
                break
            if time.monotonic() - last_progress > args.stall_timeout:
                bar.close()
                print(f"\nno progress for {args.stall_timeout:.0f}s; node logs in {log_dir}", file=sys.stderr)
                for n in runner.procs:
                    print(f"--- {n}\n{runner.tail(n, 8)}", file=sys.stderr)
                break
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the graph (completed episodes are kept)", file=sys.stderr)
    finally:
        bar.close()
        runner.stop(order=["sim_node", "expert_node", "trajectory_logger"], timeout=300)
        monitor.close()
    elapsed = time.monotonic() - t0
    with open(log_dir / "episode_events.jsonl", "w") as f:  # what the simulator reported
        for e in monitor.ended():
            f.write(json.dumps(e) + "\n")
    rows = dataset_summaries(str(out))
    new_rows = rows[before:]
    print(f"\ndataset: {out}  ({len(rows)} episodes, {sum(int(r['length']) for r in rows)} frames)")
    print(f"this run: {len(new_rows)} episodes in {elapsed:.1f}s ({60.0 * len(new_rows) / max(elapsed, 1e-9):.1f} episodes/min)\n")
    if new_rows:
        print(success_table(new_rows))
    return 0 if ok and len(new_rows) >= args.episodes else 1


def _collect_direct(args, out: Path) -> int:
    from tqdm import tqdm

    from vla_rl_ros.core.collect import DirectCollectConfig, collect_direct

    before = len(dataset_summaries(str(out))) if (out / "meta" / "info.json").exists() else 0
    if before:
        print(f"appending to existing dataset at {out} ({before} episodes)")
    policy = ""
    if args.policy:  # explored rollouts of a checkpoint instead of expert demonstrations
        from vla_rl_ros.core.policy.checkpoint import CheckpointError, read_config

        try:
            pcfg = read_config(args.policy)
        except CheckpointError as e:
            _die(str(e))
        policy = str(Path(args.policy).resolve())
        if args.image_size != int(pcfg["policy"]["image_size"]):
            _die(f"--image-size {args.image_size} but {args.policy} was trained on {pcfg['policy']['image_size']} px")
    if args.seed_repeat < 1:
        _die("--seed-repeat must be >= 1")
    cfg = DirectCollectConfig(
        seed=args.seed, family=args.family or None, noise=args.noise, image_size=args.image_size,
        control_rate=args.control_rate, max_steps=args.max_steps, renderer=args.renderer,
        policy=policy, sigma=(args.sigma,), gripper_sigma=args.gripper_sigma, explore_seed=args.explore_seed,
        seed_repeat=args.seed_repeat,
    )
    bar = tqdm(total=args.episodes, unit="ep", desc="collecting (direct)", dynamic_ncols=True)

    def progress(n, ok):
        bar.n = n
        bar.set_postfix(success=f"{ok}/{n}")
        bar.refresh()

    try:
        res = collect_direct(str(out), args.episodes, cfg, workers=args.workers, progress=progress)
    except KeyboardInterrupt:
        print("\ninterrupted (queued episodes are kept)", file=sys.stderr)
        return 130
    finally:
        bar.close()
    rows = dataset_summaries(str(out))
    new_rows = rows[before:]
    print(f"\ndataset: {out}  ({len(rows)} episodes, {sum(int(r['length']) for r in rows)} frames)")
    print(f"this run: {len(new_rows)} episodes in {res['seconds']:.1f}s "
          f"({60.0 * len(new_rows) / max(res['seconds'], 1e-9):.1f} episodes/min, {args.workers} workers)\n")
    if new_rows:
        print(success_table(new_rows))
    return 0 if len(new_rows) >= args.episodes and not res["failed"] else 1


def cmd_summary(args) -> int:
    if not (Path(args.data) / "meta" / "info.json").exists():
        _die(f"{args.data!r} is not a LeRobot dataset (no meta/info.json)")
    rows = dataset_summaries(args.data)
    print(f"{args.data}: {len(rows)} episodes")
    print(success_table(rows))
    return 0


def cmd_replay(args) -> int:
    from vla_rl_ros.graph import GraphRunner, load_graph

    if not (Path(args.data) / "meta" / "info.json").exists():
        _die(f"{args.data!r} is not a LeRobot dataset (no meta/info.json)")
    rows = dataset_summaries(args.data)
    print(f"replaying {args.data}: {len(rows)} episodes")
    graph = load_graph(
        "replay",
        {"data": str(Path(args.data).resolve()), "speed": args.speed, "episodes": args.episodes or "",
         "publish_actions": args.publish_actions, "loop": False},
    )
    monitor = GraphMonitor(args.domain_id)
    runner = GraphRunner(graph, log_dir=args.log_dir, domain_id=args.domain_id).start()
    code = 1
    try:
        while True:
            time.sleep(0.25)
            ev = [e for e in monitor.events if e.get("event") == "finished"]
            if ev:
                print(f"replay finished: {ev[-1].get('frames')} frames published")
                code = 0
                break
            if runner.dead():
                print(f"replay_node exited: {runner.dead()}", file=sys.stderr)
                if args.log_dir:
                    print(runner.tail("replay_node"), file=sys.stderr)
                break
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop()
        monitor.close()
    return code


def cmd_train_bc(args) -> int:
    from vla_rl_ros.core.policy.bc import BCArgs, load_episodes, train_bc

    for d in args.data:
        if not (Path(d) / "meta" / "info.json").exists():
            _die(f"{d!r} is not a LeRobot dataset (no meta/info.json)")
    check_writable_dir(args.out)
    if args.resume and not (Path(args.resume) / "config.json").exists():
        _die(f"--resume {args.resume!r}: no checkpoint there (config.json missing)")
    if args.init and not (Path(args.init) / "config.json").exists():
        _die(f"--init {args.init!r}: no checkpoint there (config.json missing)")
    if args.init and args.resume:
        _die("--init and --resume are exclusive (resume continues a run; init starts a new one from weights)")
    from vla_rl_ros.core.sim.task_features import aux_targets

    episodes, cams, joints = load_episodes(args.data, success_only=not args.all_episodes, label=args.label,
                                           aux_targets=aux_targets)
    n_frames = sum(len(e.state) for e in episodes)
    if not episodes:
        _die("no (successful) episodes in the given datasets")
    print(f"training on {len(episodes)} episodes / {n_frames} frames from {len(args.data)} dataset(s); cameras {cams}")
    bc = BCArgs(data=list(args.data), out=args.out, steps=args.steps, batch_size=args.batch_size,
                lr=args.lr, seed=args.seed, threads=args.threads, horizon=args.horizon,
                d_model=args.d_model, keypoints=args.keypoints, resume=args.resume or "", version=args.version,
                init=args.init or "", aux_weight=args.aux_weight)
    result = train_bc(bc, episodes, cams, joints)
    print(f"checkpoint: {result['checkpoint']}")
    print(f"final validation L1: {result['final_val_loss']:.4f}; {result['train_seconds']:.0f}s; "
          f"ONNX parity max |diff| {result.get('onnx_parity_max_abs', float('nan')):.2e}")
    print(f"loss curve: {Path(args.out) / 'loss.png'}")
    return 0


def cmd_train_rl(args) -> int:
    from vla_rl_ros.core.policy.checkpoint import CheckpointError
    from vla_rl_ros.core.rl.config import RLConfig
    from vla_rl_ros.core.rl.trainer import train_rl

    init = args.init or default_checkpoint()
    rl = RLConfig(data=list(args.data), episodes=args.episodes, init=init, out=args.out, epochs=args.epochs,
                  batch_size=args.batch_size,
                  baseline=args.baseline, advantage=args.advantage, gae_lambda=args.gae_lambda, critic=args.critic,
                  ratio=args.ratio, trainable=args.trainable, lr=args.lr, clip=args.clip, kl_coef=args.kl_coef,
                  target_kl=args.target_kl, gamma=args.gamma,
                  seed=args.seed, threads=args.threads, version=args.version)
    try:
        rl.validate()
    except ValueError as e:
        _die(str(e))
    for d in args.data:
        if not (Path(d) / "meta" / "info.json").exists():
            _die(f"{d!r} is not a LeRobot dataset (no meta/info.json)")
    check_writable_dir(args.out)
    from vla_rl_ros.core.sim.task_features import episode_privileged_features

    try:
        res = train_rl(rl, privileged=episode_privileged_features)
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        _die(str(e))
    print(rl_summary(res))
    if args.announce:
        announce_weights(res["checkpoint"], args.domain_id)
    return 0


def rl_summary(res: dict) -> str:
    h = res["history"][-1] if res["history"] else {}
    return (f"checkpoint v{res['version']}: {res['checkpoint']}\n"
            f"{res['decisions']} decisions from {res['episodes']} episodes (success {res['episode_success_rate']:.0%}); "
            f"{len(res['history'])} epochs{' (stopped early: KL to behaviour)' if res['stopped_early'] else ''}; "
            f"ESS {h.get('ess', float('nan')):.2f}, clip fraction {h.get('clip_fraction', float('nan')):.2f}, "
            f"KL to behaviour {h.get('kl_behaviour', float('nan')):.3f}, value loss {res['value_loss']:.3f} (baseline: {res.get('baseline', 'value_mlp')}); "
            f"{res['train_seconds']:.0f}s; plots {Path(res['checkpoint']).parent / 'rl.png'}")


def announce_weights(path: str, domain_id=None, timeout: float = 30.0) -> dict:
    """Publish ``path`` on /vla/policy/weights and wait for the policy node's verdict."""
    from std_msgs.msg import String

    from vla_rl_ros.nodes.background import BackgroundNode
    from vla_rl_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS

    bg = BackgroundNode(f"announce_{os.getpid()}", domain_id)
    try:
        bg.collect(String, "/vla/policy/swap", LATCHED_QOS)
        pub = bg.node.create_publisher(String, "/vla/policy/weights", RELIABLE_QOS)
        bg.wait_for(lambda: pub.get_subscription_count() > 0, 10)
        if pub.get_subscription_count() == 0:
            print("no policy_node is listening on /vla/policy/weights", file=sys.stderr)
            return {}
        target = str(Path(path).resolve())
        pub.publish(String(data=json.dumps({"path": target})))
        verdict = lambda: [e for e in bg.json_msgs("/vla/policy/swap")  # noqa: E731
                           if e.get("path") == target and e.get("event") in ("swapped", "refused")]
        bg.wait_for(verdict, timeout)
        ev = verdict()
        if not ev:
            print(f"no verdict from the policy node within {timeout:.0f}s", file=sys.stderr)
            return {}
        e = ev[-1]
        if e["event"] == "swapped":
            print(f"policy node now runs v{e['version']} (was v{e['previous_version']}); load {e['load_ms']:.0f} ms, "
                  f"swap {e['swap_us']:.0f} us")
        else:
            print(f"policy node REFUSED {target}: {e['reason']}", file=sys.stderr)
        return e
    finally:
        bg.close()


def cmd_rollback(args) -> int:
    from std_srvs.srv import Trigger

    from vla_rl_ros.nodes.background import BackgroundNode

    bg = BackgroundNode(f"rollback_{os.getpid()}", args.domain_id)
    try:
        cli = bg.node.create_client(Trigger, "/vla/policy/rollback")
        if not cli.wait_for_service(timeout_sec=10):
            _die("no policy_node offers /vla/policy/rollback")
        fut = cli.call_async(Trigger.Request())
        if not bg.wait_for(fut.done, 20):
            _die("rollback request timed out")
        res = fut.result()
        print(res.message)
        return 0 if res.success else 1
    finally:
        bg.close()


def cmd_improve(args) -> int:
    from vla_rl_ros.improve import run_improve

    return run_improve(args)


def _print_eval(results, elapsed: float, label: str, plot: str = "") -> None:
    rows = [{"family": r.family, "success": r.success, "length": r.steps, "return": r.ret} for r in results]
    print(f"\n{label}: {len(results)} episodes in {elapsed:.0f}s")
    print(success_table(rows))
    if any(r.failure for r in results):
        from vla_rl_ros.core.sim.diagnose import failure_table, plot_failures

        print("\nwhy episodes failed (simulator state; vla_rl_ros/core/sim/diagnose.py):")
        print(failure_table(results))
        if plot:
            plot_failures(results, plot)
            print(f"plot: {plot}")


def cmd_evaluate(args) -> int:
    from vla_rl_ros.core.policy.checkpoint import CheckpointError

    ckpt = args.policy or default_checkpoint()
    seeds = list(range(args.seed, args.seed + args.episodes))
    if (args.diagnose or args.diagnose_plot) and not args.direct:
        _die("--diagnose needs --direct (it reads the simulator's state in-process)")
    if args.diagnose_plot:
        args.diagnose = True
    if args.direct:
        from tqdm import tqdm

        from vla_rl_ros.core.policy.evaluate import evaluate
        from vla_rl_ros.core.policy.runtime import Observation, PolicyRuntime
        from vla_rl_ros.core.robot import PANDA
        from vla_rl_ros.core.sim.world import PandaWorld, SimConfig

        try:
            rt = PolicyRuntime(ckpt, backend=args.backend, joint_names=PANDA.joint_names, threads=args.threads)
        except (CheckpointError, FileNotFoundError) as e:
            _die(str(e))
        if args.workers > 1:
            from vla_rl_ros.core.policy.evaluate import evaluate_parallel

            print(f"evaluating {rt.describe()} directly (no ROS, {args.workers} processes) on seeds "
                  f"{seeds[0]}..{seeds[-1]}")
            bar = tqdm(total=len(seeds), unit="ep", desc="evaluate", dynamic_ncols=True)

            def prog_p(res, dt):
                bar.n = len(res)
                bar.set_postfix(success=f"{sum(r.success for r in res)}/{len(res)}")
                bar.refresh()

            t0 = time.time()
            backend = "onnxruntime" if args.backend == "auto" else args.backend
            results = evaluate_parallel(ckpt, seeds, workers=args.workers, family=args.family or None,
                                        replan_every=args.replan_every, backend=backend,
                                        max_steps=args.max_steps, renderer=args.renderer, progress=prog_p,
                                        diagnose=args.diagnose)
            bar.close()
            _print_eval(results, time.time() - t0, "direct evaluation", args.diagnose_plot)
            if args.json:
                Path(args.json).write_text(json.dumps([r.__dict__ for r in results], indent=1))
            return 0
        print(f"evaluating {rt.describe()} directly (no ROS) on seeds {seeds[0]}..{seeds[-1]}")
        world = PandaWorld(SimConfig(image_width=rt.cfg.image_size, image_height=rt.cfg.image_size,
                                     cameras=rt.cameras, max_steps=args.max_steps, renderer=args.renderer))
        bar = tqdm(total=len(seeds), unit="ep", desc="evaluate", dynamic_ncols=True)

        def prog(res, dt):
            bar.update(1)
            bar.set_postfix(success=f"{sum(r.success for r in res)}/{len(res)}")

        t0 = time.time()
        act = lambda o: rt.infer(Observation(o["images"], o["state"], o["instruction"]))  # noqa: E731
        results = evaluate(world, act, seeds, family=args.family or None, replan_every=args.replan_every,
                           progress=prog, diagnose=args.diagnose)
        bar.close()
        world.close()
        _print_eval(results, time.time() - t0, "direct evaluation", args.diagnose_plot)
        if args.json:
            Path(args.json).write_text(json.dumps([r.__dict__ for r in results], indent=1))
        return 0
    return _evaluate_ros(args, ckpt, seeds)


def default_checkpoint() -> str:
    from vla_rl_ros.nodes.policy_node import DEFAULT_CHECKPOINT

    return DEFAULT_CHECKPOINT


def _evaluate_ros(args, ckpt: str, seeds: list[int]) -> int:
    from tqdm import tqdm

    from vla_rl_ros.core.policy.checkpoint import CheckpointError, read_config
    from vla_rl_ros.graph import GraphRunner, load_graph

    try:
        cfg = read_config(ckpt)
    except CheckpointError as e:
        _die(str(e))
    size = int(cfg["policy"]["image_size"])
    graph = load_graph("policy_sim", {
        "checkpoint": str(Path(ckpt).resolve()), "backend": args.backend, "episodes": len(seeds),
        "seed": seeds[0], "family": args.family or "", "real_time_factor": args.speed,
        "image_width": size, "image_height": size, "max_steps": args.max_steps,
        "replan_every": args.replan_every, "threads": args.threads, "renderer": args.renderer,
    })
    log_dir = args.log_dir or tempfile.mkdtemp(prefix="vla_eval_logs_")
    monitor = GraphMonitor(args.domain_id)
    runner = GraphRunner(graph, log_dir=log_dir, domain_id=args.domain_id).start()
    print(f"evaluating {ckpt} through the ROS graph (sim_node + policy_node, x{args.speed}); logs in {log_dir}")
    bar = tqdm(total=len(seeds), unit="ep", desc="evaluate", dynamic_ncols=True)
    t0 = time.monotonic()
    ok = False
    try:
        last, last_t = 0, time.monotonic()
        while True:
            time.sleep(0.25)
            ended = monitor.ended()
            if len(ended) != last:
                last, last_t = len(ended), time.monotonic()
            if bar.n != len(ended):
                bar.n = len(ended)
                bar.set_postfix(success=f"{sum(e.get('success', False) for e in ended)}/{len(ended)}")
            if len(ended) >= len(seeds):
                ok = True
                break
            dead = {n: c for n, c in runner.dead().items()}
            if dead:
                for n, c in dead.items():
                    print(f"\nnode {n} exited with code {c}:\n{runner.tail(n)}", file=sys.stderr)
                break
            if time.monotonic() - last_t > args.stall_timeout:
                print(f"\nno episode finished for {args.stall_timeout:.0f}s; logs in {log_dir}", file=sys.stderr)
                break
    except KeyboardInterrupt:
        pass
    finally:
        bar.close()
        pstat = dict(monitor.policy_status)
        runner.stop()
        monitor.close()
    ended = monitor.ended()
    rows = [{"family": e.get("family"), "success": e.get("success"), "length": e.get("steps", 0),
             "return": e.get("return", 0.0)} for e in ended]
    print(f"\nROS-graph evaluation: {len(rows)} episodes in {time.monotonic() - t0:.0f}s")
    if rows:
        print(success_table(rows))
    ages: dict[int, int] = {}
    for e in ended:
        for k, v in (e.get("chunk_age") or {}).items():
            ages[int(k)] = ages.get(int(k), 0) + int(v)
    if ages:
        total = sum(ages.values())
        late = sum(v for k, v in ages.items() if k < 0 or k >= args.replan_every)
        print(f"control ticks: {total}, {late} ({100 * late / total:.1f}%) ran without a chunk from the "
              f"expected observation (arm held or older chunk) -- 0 means the policy kept up with the loop")
    if pstat:
        print(f"policy: {pstat.get('backend')} v{pstat.get('version')}, {pstat.get('chunks')} chunks; "
              f"stamp->chunk latency p50 {pstat.get('latency_p50_ms', float('nan')):.1f} ms, "
              f"p99 {pstat.get('latency_p99_ms', float('nan')):.1f} ms; inference p50 "
              f"{pstat.get('infer_p50_ms', float('nan')):.1f} ms; rejected inputs {pstat.get('rejected_input')}")
    if args.json:
        Path(args.json).write_text(json.dumps({"episodes": ended, "policy_status": pstat}, indent=1))
    return 0 if ok else 1


def advantage_opts(p: argparse.ArgumentParser) -> None:
    """train-rl's advantage options, shared by ``train-rl`` and ``improve``."""
    p.add_argument("--advantage", choices=("mc", "gae"), default="mc",
                   help="mc: Monte-Carlo return minus the baseline; gae: TD(λ) on the critic (per-step credit)")
    p.add_argument("--gae-lambda", type=float, default=0.9)
    p.add_argument("--critic", choices=("auto", "privileged", "features"), default="auto",
                   help="value net inputs: privileged simulator state when logged (auto) or the frozen features")
    p.add_argument("--ratio", choices=("chunk", "dim"), default="chunk",
                   help="likelihood ratio per decision (chunk: product over executed tokens and joints) or per "
                        "executed (token, joint) factor, each clipped on its own (dim)")
    p.add_argument("--trainable", choices=("head", "out"), default="head",
                   help="what the update changes: the whole action head, or only its linear read-out")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vla-rl-ros", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="verb", required=True)

    def ros_opts(p):
        p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID for the graph")
        p.add_argument("--log-dir", default=None, help="write each node's output here")

    p = sub.add_parser("graphs", help="list the node graphs")
    p.set_defaults(fn=cmd_graphs)

    p = sub.add_parser("run", help="start a node graph (like ros2 launch) until Ctrl-C")
    p.add_argument("graph")
    p.add_argument("overrides", nargs="*", help="graph arguments as key=value")
    ros_opts(p)
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("collect", help="collect expert episodes in sim through the ROS graph")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--family", default="", help="one task family (default: all, by seed)")
    p.add_argument("--control-rate", type=float, default=10.0)
    p.add_argument("--speed", type=float, default=1.0, help="real-time factor of the simulation")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--noise", type=float, default=0.0, help="expert action noise std (rad)")
    p.add_argument("--max-steps", type=int, default=120)
    p.add_argument("--renderer", default="tiny", choices=["auto", "egl", "tiny"],
                   help="tiny (default) renders identically everywhere; egl is faster at 224 px")
    p.add_argument("--stall-timeout", type=float, default=120.0)
    p.add_argument("--direct", action="store_true",
                   help="bulk mode: the same episode loop and frame layout without ROS, in --workers processes")
    p.add_argument("--workers", type=int, default=2, help="worker processes for --direct")
    p.add_argument("--policy", default="", help="--direct: explored rollouts of this checkpoint instead of the expert")
    p.add_argument("--sigma", type=float, default=0.02, help="--policy: exploration σ of the arm joints (rad)")
    p.add_argument("--gripper-sigma", type=float, default=0.0, help="--policy: exploration σ of the gripper (m)")
    p.add_argument("--explore-seed", type=int, default=0, help="--policy: seed of the exploration noise")
    p.add_argument("--seed-repeat", type=int, default=1,
                   help="roll each scene (seed) out this many times in a row (groups for train-rl's baseline)")
    ros_opts(p)
    p.set_defaults(fn=cmd_collect)

    p = sub.add_parser("replay", help="publish a recorded dataset onto the graph's topics")
    p.add_argument("data")
    p.add_argument("--speed", type=float, default=1.0)
    p.add_argument("--episodes", default="", help="comma-separated episode indices (default all)")
    p.add_argument("--publish-actions", action="store_true", help="also command the controller")
    ros_opts(p)
    p.set_defaults(fn=cmd_replay)

    p = sub.add_parser("train-bc", help="behaviour cloning on LeRobot datasets")
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--horizon", type=int, default=8)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--resume", default="", help="checkpoint directory to continue from")
    p.add_argument("--init", default="", help="start from this checkpoint's weights (new optimiser and schedule)")
    p.add_argument("--aux-weight", type=float, default=0.5,
                   help="weight of the auxiliary grounding loss on datasets with observation.environment_state (0: off)")
    p.add_argument("--all-episodes", action="store_true", help="also imitate failed episodes (default: successes only)")
    p.add_argument("--keypoints", type=int, default=16, help="spatial-softmax keypoint tokens (0: none)")
    p.add_argument("--label", default="auto", choices=["auto", "action", "mean"],
                   help="imitate the executed action, rl.action_mean, or auto: the mean where no "
                        "exploration noise was logged (clean expert intention), else the action")
    p.set_defaults(fn=cmd_train_bc)

    p = sub.add_parser("evaluate", help="success rate of a checkpoint in the simulator")
    p.add_argument("--policy", default="", help="checkpoint directory (default: the shipped one)")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=1000, help="first evaluation seed")
    p.add_argument("--family", default="")
    p.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "torch", "tensorrt"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--replan-every", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=120)
    p.add_argument("--speed", type=float, default=2.0, help="real-time factor (ROS-graph mode)")
    p.add_argument("--direct", action="store_true", help="evaluate without ROS (same loop, one process)")
    p.add_argument("--workers", type=int, default=1, help="processes for --direct (episodes are independent)")
    p.add_argument("--renderer", default="tiny", choices=["auto", "egl", "tiny"])
    p.add_argument("--json", default="", help="write per-episode results here")
    p.add_argument("--diagnose", action="store_true",
                   help="with --direct: say why each failed episode failed (no grasp, missed grasp by how "
                        "much, wrong cube, dropped, off pad, ...) from the simulator's state")
    p.add_argument("--diagnose-plot", default="", help="with --diagnose: PNG of the failure classes and grasp offsets")
    p.add_argument("--stall-timeout", type=float, default=120.0)
    ros_opts(p)
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser("train-rl", help="offline likelihood-ratio RL of the action head on logged episodes")
    p.add_argument("--data", nargs="+", required=True, help="LeRobot datasets logged with exploration")
    p.add_argument("--episodes", default="",
                   help="train on these episodes of each dataset only: '0:250', '0,3,7', '500:' (default: all)")
    p.add_argument("--init", default="", help="checkpoint to start from (default: the shipped one)")
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--clip", type=float, default=0.2)
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--target-kl", type=float, default=0.5)
    p.add_argument("--gamma", type=float, default=0.95)
    p.add_argument("--baseline", choices=("auto", "group", "value"), default="auto",
                   help="advantage baseline: leave-one-out mean of rollouts from the same scene (group; "
                        "auto uses it where scenes repeat) or the value MLP on the frozen features (value)")
    advantage_opts(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--version", type=int, default=0, help="version of the result (default: init's + 1)")
    p.add_argument("--announce", action="store_true",
                   help="announce the new weights on /vla/policy/weights (hot swap into a running policy_node)")
    ros_opts(p)
    p.set_defaults(fn=cmd_train_rl)

    p = sub.add_parser("rollback", help="make a running policy_node go back to its previous weights")
    ros_opts(p)
    p.set_defaults(fn=cmd_rollback)

    p = sub.add_parser("improve", help="rounds of collect (with exploration) -> train-rl -> hot swap -> evaluate")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--episodes-per-round", type=int, default=60)
    p.add_argument("--init", default="", help="checkpoint to start from (default: the shipped one)")
    p.add_argument("--out", default="runs/improve")
    p.add_argument("--eval-episodes", type=int, default=100)
    p.add_argument("--eval-seed", type=int, default=1000)
    p.add_argument("--collect-seed", type=int, default=200000, help="first collection seed (disjoint from eval)")
    p.add_argument("--sigma", type=float, default=0.02, help="exploration σ of the arm joints (rad)")
    p.add_argument("--gripper-sigma", type=float, default=0.0,
                   help="exploration σ of the gripper (m); 0: not explored, the gripper executes μ")
    p.add_argument("--group-size", type=int, default=5,
                   help="rollouts per scene (seed) in a row, each with its own noise: train-rl then uses "
                        "the leave-one-out mean of the scene's other rollouts as baseline")
    p.add_argument("--baseline", choices=("auto", "group", "value"), default="auto")
    advantage_opts(p)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--clip", type=float, default=0.2, help="PPO ratio clip of train-rl")
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0, help="training seed (exploration noise + RL update)")
    p.add_argument("--speed", type=float, default=3.0, help="real-time factor of the simulated collection")
    p.add_argument("--workers", type=int, default=2, help="processes for evaluation (and --direct collection)")
    p.add_argument("--direct", action="store_true",
                   help="collect without ROS (same loop and frames, parallel); the hot swap then "
                        "happens between rounds in the worker processes, not in a running policy_node")
    p.add_argument("--max-steps", type=int, default=120, help="episode length limit (collection and evaluation)")
    ros_opts(p)
    p.set_defaults(fn=cmd_improve)

    p = sub.add_parser("summary", help="success per task family of a dataset")
    p.add_argument("data")
    p.set_defaults(fn=cmd_summary)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.fn(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())

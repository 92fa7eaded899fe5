"""Mutation check: does each named test fail when the code it guards is broken?

    python scripts/mutations.py [--only NAME ...] [--list] [--keep]

For every entry of :data:`MUTATIONS` — (name, file, old text, new text, pytest node id) — the
repository is copied to a temporary directory (tracked and untracked files, without .git, .venv
and caches), ``old`` is replaced by ``new`` in ``file`` (it must occur exactly once, or the entry
is reported as stale), and the test runs there with ``PYTHONPATH`` pointing at the copy. A
mutation is *caught* when the test fails. Prints a table mutation → test → caught?, and exits
non-zero if a mutation survived or an entry is stale. The original tree is never modified.

To add a mutation, append a :class:`Mutation` to :data:`MUTATIONS`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".git", ".venv", "__pycache__", ".pytest_cache", "runs", "*.egg-info", ".ruff_cache")


@dataclass(frozen=True)
class Mutation:
    name: str  # what breaks
    file: str  # path relative to the repository root
    old: str  # text replaced (must occur exactly once)
    new: str
    test: str  # pytest node id that must fail


MUTATIONS: list[Mutation] = [
    Mutation(
        "estimator bias x1.05 (advantage scaled in the policy loss)",
        "vla_rl_ros/core/rl/objective.py",
        "    adv = advantages.detach()\n",
        "    adv = 1.05 * advantages.detach()\n",
        "tests/core/test_rl.py::test_estimator_is_unbiased_as_train_rl_runs_it_and_a_5pct_bias_would_fail",
    ),
    Mutation(
        "truncation removed from the logged likelihood",
        "vla_rl_ros/core/rl/exploration.py",
        "    lp = -0.5 * z**2 - np.log(sigma) - LOG_SQRT_2PI - _log_mass_np((lo - mu) / sigma, (hi - mu) / sigma)\n",
        "    lp = -0.5 * z**2 - np.log(sigma) - LOG_SQRT_2PI\n",
        "tests/core/test_rl.py::test_every_logged_log_likelihood_is_recomputed_row_by_row_including_lagging_chunks",
    ),
    Mutation(
        "language input dropped from the ONNX export (the exported graph sees zeros)",
        "vla_rl_ros/core/policy/backends.py",
        "            model, args, str(tmp), input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,\n",
        "            type('NoLang', (torch.nn.Module,), {'forward': lambda self, i, s, l: model(i, s, torch.zeros_like(l))})(),"
        " args, str(tmp), input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,\n",
        "tests/core/test_policy.py::test_shipped_onnx_matches_its_weights_and_follows_the_instruction",
    ),
    Mutation(
        "first-action jump guard removed",
        "vla_rl_ros/core/policy/runtime.py",
        "    if jump > guard.max_first_jump:\n",
        "    if False:\n",
        "tests/core/test_policy.py::test_output_guard_refuses_a_first_jump_and_clips_to_joint_limits",
    ),
    Mutation(
        "finite-output check removed",
        "vla_rl_ros/core/policy/runtime.py",
        "        if not np.all(np.isfinite(out)):\n",
        "        if False:\n",
        "tests/core/test_policy.py::test_runtime_refuses_non_finite_output",
    ),
    Mutation(
        "coherent noise scored as white noise in the update (rho ignored)",
        "vla_rl_ros/core/rl/objective.py",
        "    if rho is not None and bool((rho > 0).any()):\n",
        "    if False:\n",
        "tests/core/test_rl.py::test_coherent_noise_estimator_is_unbiased_and_a_white_likelihood_is_not",
    ),
    Mutation(
        "discrete gripper left out of the update's likelihood",
        "vla_rl_ros/core/rl/objective.py",
        "    if grip_tau is not None and bool((grip_tau > 0).any()):\n",
        "    if False:\n",
        "tests/core/test_rl.py::test_discrete_gripper_exploration_and_its_unbiased_gradient",
    ),
    Mutation(
        "temporal ensemble averages nothing (the newest chunk passes through)",
        "vla_rl_ros/core/control.py",
        "        return total / weight\n",
        "        return chunk\n",
        "tests/core/test_control.py::test_a_ensembled_plan_cancels_per_frame_noise_in_closed_loop",
    ),
    Mutation(
        "the policy node sends the plain chunk (no temporal ensemble in the graph)",
        "vla_rl_ros/nodes/policy_node.py",
        "                chunk = self.ensembler.add(chunk, tick)\n",
        "                self.ensembler.add(chunk, tick)\n",
        "tests/ros/test_evaluate.py::test_graph_and_direct_evaluation_agree",
    ),
    Mutation(
        "weights from outside the allowed directories accepted",
        "vla_rl_ros/core/policy/trust.py",
        "        if not any(real == d or real.is_relative_to(d) for d in self.allowed_dirs):\n",
        "        if False:\n",
        "tests/core/test_trust.py::test_the_swapper_refuses_untrusted_weights_and_keeps_running",
    ),
    Mutation(
        "world-model advantage sign flipped (candidates' mean minus the executed chunk's Q)",
        "vla_rl_ros/core/wm/scoring.py",
        "        adv[sl] = torch.where(valid, qe - base, torch.zeros(B))\n",
        "        adv[sl] = torch.where(valid, base - qe, torch.zeros(B))\n",
        "tests/core/test_world_model.py::test_a_stand_in_world_model_drives_train_rl_through_the_interface",
    ),
    Mutation(
        "world-model halt ignored (branches beyond the threshold still scored)",
        "vla_rl_ros/core/wm/scoring.py",
        "        halted |= u > wm.halt_threshold\n",
        "        halted |= u > float('inf')\n",
        "tests/core/test_world_model.py::test_a_stand_in_world_model_drives_train_rl_through_the_interface",
    ),
    Mutation(
        "a restarted trainer reuses round 1 (no resume)",
        "vla_rl_ros/nodes/trainer_node.py",
        "        self.round, newest, removed = resume_point(self.out_root)\n",
        "        self.round, newest, removed = 0, None, []\n",
        "tests/ros/test_trainer_kill.py::test_trainer_killed_mid_update_announces_nothing_and_resumes",
    ),
    Mutation(
        "safety layer stops clipping targets to the position limits",
        "vla_rl_ros/core/safety.py",
        "        clipped = np.clip(x, self.lo, self.hi)\n",
        "        clipped = x.copy()\n",
        "tests/core/test_safety.py::test_fuzz_random_and_adversarial_chunks_never_leave_the_limits",
    ),
    Mutation(
        "safety node ignores the e-stop",
        "vla_rl_ros/nodes/safety_node.py",
        "        if self.layer.estop(bool(msg.data)):\n",
        "        if False:\n",
        "tests/ros/test_robot_graph.py::test_robot_graph_on_a_stand_in_controller[ur5e]",
    ),
    Mutation(
        "safety layer's watchdog ignores stale inputs",
        "vla_rl_ros/core/safety.py",
        "            if age is None or age > limit:\n",
        "            if False:\n",
        "tests/ros/test_robot_graph.py::test_robot_graph_on_a_stand_in_controller[so100]",
    ),
]


def copy_tree(dst: Path) -> Path:
    """The working tree (what git would see, minus ignored build/venv folders) under ``dst``."""
    shutil.copytree(ROOT, dst, ignore=IGNORE, symlinks=True)
    return dst


def apply(m: Mutation, root: Path) -> str | None:
    """Patch ``root``; None on success, else why the entry is stale."""
    path = root / m.file
    if not path.is_file():
        return f"{m.file} not found"
    text = path.read_text()
    n = text.count(m.old)
    if n != 1:
        return f"old text occurs {n} times in {m.file}"
    path.write_text(text.replace(m.old, m.new))
    return None


def run_test(m: Mutation, root: Path, timeout: float) -> tuple[int, float, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    t0 = time.monotonic()
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", m.test],
                           cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
        code, out = r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired:
        code, out = -1, "timeout"
    return code, time.monotonic() - t0, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", default=None, help="run the mutations whose name contains one of these")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--baseline", action="store_true", help="also run each test on the unmutated copy (must pass)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copies (printed)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per test run")
    args = ap.parse_args()
    todo = [m for m in MUTATIONS if not args.only or any(o in m.name for o in args.only)]
    if args.list:
        for m in todo:
            print(f"{m.name}: {m.file} -> {m.test}")
        return 0
    rows, bad = [], False
    for m in todo:
        tmp = Path(tempfile.mkdtemp(prefix="mutation_"))
        root = copy_tree(tmp / "repo")
        if args.baseline:
            code, secs, out = run_test(m, root, args.timeout)
            if code != 0:
                rows.append((m.name, m.test, f"BASELINE FAILED (rc {code})", secs))
                print(out[-2000:], file=sys.stderr)
                bad = True
                continue
        stale = apply(m, root)
        if stale:
            rows.append((m.name, m.test, f"STALE: {stale}", 0.0))
            bad = True
        else:
            code, secs, out = run_test(m, root, args.timeout)
            caught = code not in (0, 5)  # 5: no test collected (a wrong node id) is not a catch
            if code == 5:
                verdict = "NO TEST (node id?)"
            elif code == -1:
                verdict = "timeout"
            else:
                verdict = "failed (caught)" if caught else "PASSED (mutation survived)"
            bad |= not caught or code == -1
            why = next((ln[2:].strip() for ln in out.splitlines() if ln.startswith("E ")), "")
            if caught and why:
                verdict += f": {why[:90]}"
            rows.append((m.name, m.test, verdict, secs))
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"{rows[-1][0]}: {rows[-1][2]} ({rows[-1][3]:.0f} s)", flush=True)
    w1 = max(len(r[0]) for r in rows) if rows else 8
    w2 = max(len(r[1]) for r in rows) if rows else 4
    print(f"\n{'mutation':<{w1}}  {'test':<{w2}}  result")
    for name, test, verdict, _ in rows:
        print(f"{name:<{w1}}  {test:<{w2}}  {verdict}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

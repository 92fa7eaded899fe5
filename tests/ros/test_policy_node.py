"""policy_node as a real process: chunks stamped with their observation, bad input never acted on."""

import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vla_rl_ros.graph import NodeSpec

#: the hot-swap test's run covers at least this many control ticks (15 s at 20 Hz)
MIN_TICKS = 300


@pytest.fixture
def small_ckpt(tmp_path):
    from tests.core.test_policy import small_model
    from vla_rl_ros.core.policy.checkpoint import save_checkpoint
    from vla_rl_ros.core.policy.text import InstructionEncoder

    table = {"pick up the red cube": InstructionEncoder({"pick up the red cube": np.ones(384)}).encode("pick up the red cube").tolist()}
    return save_checkpoint(small_model(), tmp_path / "ckpt", version=7, instructions=table)


def test_policy_node_answers_observations_and_refuses_bad_input(small_ckpt, probe, start_nodes):
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from vla_rl_ros.core.robot import PANDA
    from vla_rl_ros.nodes.common import (
        LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS, duration_to_seconds, image_to_msg, joint_state_msg,
        ns_to_stamp, stamp_to_ns,
    )

    probe.collect(JointTrajectory, "/vla/action_chunk", RELIABLE_QOS)
    probe.collect(JointTrajectory, "/joint_trajectory_controller/joint_trajectory", RELIABLE_QOS)
    probe.collect(String, "/vla/policy/status", LATCHED_QOS)
    runner = start_nodes(NodeSpec("policy_node", "policy_node",
                                  {"checkpoint": str(small_ckpt), "backend": "torch", "control_rate": 10.0}, required=True))
    pub_img = probe.node.create_publisher(Image, "/camera/image_raw", SENSOR_QOS)
    pub_js = probe.node.create_publisher(JointState, "/joint_states", RELIABLE_QOS)
    pub_ins = probe.node.create_publisher(String, "/vla/instruction", LATCHED_QOS)
    assert probe.wait_for(lambda: probe.msgs("/vla/policy/status"), 90), runner.tail("policy_node")
    status = lambda: probe.latest_json("/vla/policy/status")  # noqa: E731
    pub_ins.publish(String(data="pick up the red cube"))
    assert probe.wait_for(lambda: status().get("instruction") == "pick up the red cube", 20)

    rng = np.random.default_rng(0)

    def send(img_hw=(32, 32), state=None, n=10):
        stamps = []
        for _ in range(n):
            ns = time.time_ns()
            img = rng.integers(0, 255, (*img_hw, 3), dtype=np.uint8)
            q = PANDA.home if state is None else state
            msg = joint_state_msg(q, None, ns_to_stamp(ns))
            pub_js.publish(msg)
            pub_img.publish(image_to_msg(img, ns_to_stamp(ns)))
            stamps.append(ns)
            time.sleep(0.1)
        return set(stamps)

    def answered():
        return {stamp_to_ns(m.header.stamp) for _, m in probe.msgs("/vla/action_chunk")}

    good = send()
    assert probe.wait_for(lambda: len(answered() & good) >= 8, 20)
    chunks = probe.msgs("/vla/action_chunk")
    got = {stamp_to_ns(m.header.stamp) for _, m in chunks}
    assert len(got & good) >= 8  # (nearly) every observation answered, with its own stamp
    m = chunks[-1][1]
    assert len(m.points) == 4 and list(m.joint_names) == list(PANDA.joint_names)
    assert [round(duration_to_seconds(p.time_from_start), 3) for p in m.points] == [0.1, 0.2, 0.3, 0.4]
    assert m.header.frame_id == "policy_version=7"
    assert len(probe.msgs("/joint_trajectory_controller/joint_trajectory")) == len(chunks)  # deploy mode

    n_before = len(probe.msgs("/vla/action_chunk"))
    wrong_size = send(img_hw=(48, 48), n=5)
    nan_state = send(state=np.full(8, np.nan), n=5)
    pub_ins.publish(String(data="  "))
    assert probe.wait_for(lambda: status().get("instruction") == "", 20)
    empty_instr = send(n=5)
    # exact: 5 wrong-size images + 5 NaN states + 1 empty instruction (the 5 observations sent
    # without an instruction are not acted on, and not counted as bad input)
    assert probe.wait_for(lambda: status()["rejected_input"] >= 11, 20), status()
    # and it recovers once input is good again (which also shows the bad input was all processed)
    pub_ins.publish(String(data="pick up the red cube"))
    assert probe.wait_for(lambda: status().get("instruction") == "pick up the red cube", 20)
    again = send(n=5)
    assert probe.wait_for(lambda: len(answered() & again) >= 4, 20)
    assert not (answered() & (wrong_size | nan_state | empty_instr))
    assert len(probe.msgs("/vla/action_chunk")) == n_before + len(answered() & again)
    # a status published after the last chunk: its counters cover every message sent above
    assert probe.wait_for(lambda: status()["chunks"] >= len(probe.msgs("/vla/action_chunk")), 10)
    assert status()["rejected_input"] == 11 and status()["version"] == 7, status()
    assert not runner.dead()
    log = runner.tail("policy_node", 60)
    assert "expects (32, 32, 3)" in log or "is 48x48" in log


@pytest.mark.timeout(420)
def test_hot_swap_under_a_running_20hz_loop_refuses_corrupt_and_rolls_back(tmp_path, probe, start_nodes):
    """sim_node + policy_node at 20 Hz: a good checkpoint (shipped without model.onnx, so the
    node exports it while serving) is swapped in between two inferences, a corrupt one and one
    whose outputs are not finite (valid manifest) announced mid-run are refused while the previous
    version keeps commanding the arm, and the rollback service brings the earlier version back.
    Over the whole run (the valid swap's load and export included) the controller never runs out
    of chunk (/sim/status, core/control.py: TickMonitor)."""

    import torch
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String
    from std_srvs.srv import Trigger
    from trajectory_msgs.msg import JointTrajectory

    from tests.core.test_policy import _overflowing_ckpt, instruction_table, small_model
    from vla_rl_ros.core.policy.checkpoint import save_checkpoint
    from vla_rl_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS, SIM_STATUS_TOPIC, policy_version_of

    # every instruction the sim can issue is in the table: no sentence-encoder load at the start
    base = save_checkpoint(small_model(), tmp_path / "v7", version=7, instructions=instruction_table())
    v8 = small_model(seed=1)
    with torch.no_grad():  # weights never seen before: the node's ONNX cache misses and it exports
        v8.head.out.bias.add_(torch.from_numpy(np.random.default_rng().normal(0, 1e-6, v8.head.out.bias.shape)).float())
    good = save_checkpoint(v8, tmp_path / "v8", version=8)
    corrupt = tmp_path / "v9_corrupt"
    shutil.copytree(save_checkpoint(small_model(seed=2), tmp_path / "v9", version=9), corrupt)
    with open(corrupt / "model.safetensors", "r+b") as f:
        f.seek(300)
        f.write(b"\xff" * 16)
    overflow = _overflowing_ckpt(tmp_path, "v10_overflow", version=10)

    cmd = "/joint_trajectory_controller/joint_trajectory"
    probe.collect(JointTrajectory, cmd, RELIABLE_QOS)
    probe.collect(JointState, "/joint_trajectory_controller/reference", RELIABLE_QOS)
    probe.collect(String, "/vla/policy/swap", LATCHED_QOS)
    probe.collect(String, SIM_STATUS_TOPIC, LATCHED_QOS)
    runner = start_nodes(
        NodeSpec("sim_node", "sim_node", {"control_rate": 20.0, "image_width": 32, "image_height": 32,
                                          "episodes": 0, "max_steps": 100000, "seed": 3, "family": "pick",
                                          "renderer": "tiny",  # as the graphs: EGL here takes 52 ms a frame
                                          "wait_for_publisher": "/vla/policy/status"}),
        NodeSpec("policy_node", "policy_node", {"checkpoint": str(base), "backend": "onnxruntime",
                                                "control_rate": 20.0}, required=True))  # default 0.5 rad jump guard
    pub_w = probe.node.create_publisher(String, "/vla/policy/weights", RELIABLE_QOS)
    versions = lambda: [policy_version_of(m) for _, m in probe.msgs(cmd)]  # noqa: E731
    swaps = lambda kind: [e for e in probe.json_msgs("/vla/policy/swap") if e["event"] == kind]  # noqa: E731
    assert probe.wait_for(lambda: len(versions()) >= 40, 120), runner.tail("policy_node")

    pub_w.publish(String(data=json.dumps({"path": str(good)})))
    # the export runs in a child process (seconds to tens of seconds on a loaded machine)
    assert probe.wait_for(lambda: versions()[-1] == 8, 180), runner.tail("policy_node")
    n_swap = len(versions())
    t_corrupt = time.monotonic()
    pub_w.publish(String(data=str(corrupt)))
    pub_w.publish(String(data=str(overflow)))
    assert probe.wait_for(lambda: len(swaps("refused")) >= 2, 60), probe.json_msgs("/vla/policy/swap")
    n_refused = len(versions())
    assert probe.wait_for(lambda: len(versions()) >= n_refused + 40, 60)  # keeps commanding, ~2 s more
    after = versions()[n_swap:]
    assert set(after) == {8}, sorted(set(after))  # neither refused version produced a command
    r_corrupt, r_overflow = swaps("refused")[-2:]
    assert "sha256" in r_corrupt["reason"] and r_corrupt["active_version"] == 8, r_corrupt
    assert "non-finite actions on a probe input" in r_overflow["reason"] and r_overflow["active_version"] == 8
    swapped = swaps("swapped")
    assert swapped and swapped[-1]["version"] == 8 and swapped[-1]["swap_us"] < 50_000
    log = runner.tail("policy_node", 80)
    assert "REFUSED checkpoint" in log and "v8 keeps running" in log
    # the arm never held while the refused checkpoints were loaded and checked (off the control path)
    refs = [(t, m.header.frame_id) for t, m in probe.msgs("/joint_trajectory_controller/reference")]
    t_refused = next(t for t, m in reversed(probe.msgs("/vla/policy/swap")) if json.loads(m.data)["event"] == "refused")
    around = [r for t, r in refs if t_corrupt <= t <= t_refused + 0.5 and r.endswith("hold")]
    assert not around, (around, probe.json_msgs("/vla/policy/swap"))

    cli = probe.node.create_client(Trigger, "/vla/policy/rollback")
    assert cli.wait_for_service(timeout_sec=10)
    fut = cli.call_async(Trigger.Request())
    assert probe.wait_for(fut.done, 20) and fut.result().success, fut.result()
    n_rb = len(versions())
    assert probe.wait_for(lambda: len(versions()) >= n_rb + 10 and versions()[-1] == 7, 30)
    assert not runner.dead()
    # the whole run, the valid swap's load and export included, and at least MIN_TICKS ticks (how
    # many the phases above took depends on how fast the export ran): a status covering them all
    refs_topic = "/joint_trajectory_controller/reference"
    assert probe.wait_for(lambda: len(probe.msgs(refs_topic)) > MIN_TICKS, 60)
    n_ticks = len(probe.msgs(refs_topic))
    assert probe.wait_for(lambda: (probe.latest_json(SIM_STATUS_TOPIC) or {}).get("ticks", 0) >= n_ticks, 10)
    st = probe.latest_json(SIM_STATUS_TOPIC)
    print(f"\nhot-swap run: {st['ticks']} ticks, {st['late']} late, longest late run {st['longest_late_run']}, "
          f"chunk age p50 {st['age_p50']} p99 {st['age_p99']} max {st['age_max']}, no chunk {st['no_chunk']}", st)
    assert st["replan_every"] == 1 and st["ticks"] > MIN_TICKS, st
    # late ticks (a chunk >= 1 tick old) are a timing figure (bench/hot_swap.py): at 20 Hz the sim's
    # tick takes ~35 ms of the 50 ms period here, so one busy moment makes a tick run one point
    # later. A stall is what must never happen: the arm running out of chunk and holding
    assert st["age_max"] < 4, st  # 4: the chunk's horizon
    # no tick without a chunk after the first one arrived (the episode's first ticks may precede it)
    refs = [m.header.frame_id for _, m in probe.msgs("/joint_trajectory_controller/reference")]
    first = next(i for i, r in enumerate(refs) if r != "hold")
    assert not [r for r in refs[first:] if r.endswith("hold")] and st["no_chunk"] == first, (first, st)


def test_policy_node_guards_in_latest_mode(tmp_path, probe, start_nodes):
    """The node wires every guard, with exact counts (two cameras, ``sync: latest``, the default
    0.5 rad first-jump guard): a policy 0.6 rad off the arm is never sent (one rejected output per
    observation); malformed weight announcements are refused without touching the running
    version; after a swap to a policy 0.3 rad off, chunks flow; an image whose newest joint state
    is older than max_state_age, an observation missing a camera and images in a wrong encoding
    are never acted on."""
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from tests.core.test_policy import SMALL
    from vla_rl_ros.core.policy.checkpoint import save_checkpoint
    from vla_rl_ros.core.policy.model import Normalization, PolicyConfig, VLAPolicy
    from vla_rl_ros.core.robot import PANDA
    from vla_rl_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS, image_to_msg, joint_state_msg, ns_to_stamp, stamp_to_ns

    def shifted(name, d0, version):  # chunk = state + d0 on joint 0 (head output scaled by 1e-4)
        cfg = PolicyConfig(**dict(SMALL, cameras=("front", "wrist")))
        norm = Normalization(PANDA.home.tolist(), [0.5] * 8, [d0] + [0.0] * 7, [1e-4] * 8)
        torch.manual_seed(0)
        return save_checkpoint(VLAPolicy(cfg, norm).eval(), tmp_path / name, version=version)

    import torch

    far, near = shifted("far", 0.6, 1), shifted("near", 0.3, 2)
    max_state_age = 1.0  # s; far above the joint-state stream's period (0.05 s) and its delivery delay
    stale_lag = 5.0  # s; a "stale" joint state is stamped this far before the images
    probe.collect(JointTrajectory, "/vla/action_chunk", RELIABLE_QOS)
    probe.collect(String, "/vla/policy/status", LATCHED_QOS)
    probe.collect(String, "/vla/policy/swap", LATCHED_QOS)
    runner = start_nodes(NodeSpec("policy_node", "policy_node", {
        "checkpoint": str(far), "backend": "torch", "control_rate": 10.0, "sync": "latest",
        "max_state_age": max_state_age, "publish_to_controller": False}, required=True))
    pub_img = {c: probe.node.create_publisher(Image, t, SENSOR_QOS)
               for c, t in (("front", "/camera/image_raw"), ("wrist", "/camera/wrist/image_raw"))}
    pub_js = probe.node.create_publisher(JointState, "/joint_states", RELIABLE_QOS)
    pub_ins = probe.node.create_publisher(String, "/vla/instruction", LATCHED_QOS)
    pub_w = probe.node.create_publisher(String, "/vla/policy/weights", RELIABLE_QOS)
    status = lambda: probe.latest_json("/vla/policy/status") or {}  # noqa: E731
    assert probe.wait_for(lambda: status(), 90), runner.tail("policy_node")
    # nothing is sent before the node's subscriptions are matched (best-effort images published
    # earlier are simply lost)
    pubs = [*pub_img.values(), pub_js, pub_ins, pub_w]
    assert probe.wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs), 30)
    pub_ins.publish(String(data="pick up the red cube"))
    assert probe.wait_for(lambda: status().get("instruction") == "pick up the red cube", 20)
    rng = np.random.default_rng(0)

    # joint states stream at 20 Hz like a robot's, stamped `lag` before their publication time;
    # in `latest` mode each image pairs with the newest one the node has received
    stream = {"lag": 0.0, "stop": False, "since": time.time_ns()}
    lock = threading.Lock()

    def stream_states():
        while not stream["stop"]:
            with lock:  # the stamp and the lag it was made with are read together
                pub_js.publish(joint_state_msg(PANDA.home, None, ns_to_stamp(time.time_ns() - int(stream["lag"] * 1e9))))
            time.sleep(0.05)

    def set_lag(lag):
        with lock:
            stream["lag"], stream["since"] = lag, time.time_ns()

    streamer = threading.Thread(target=stream_states, daemon=True)
    streamer.start()

    def send_one(cams=("front", "wrist"), encoding="rgb8"):
        ns = time.time_ns()
        for c in cams:
            m = image_to_msg(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), ns_to_stamp(ns))
            m.encoding = encoding
            pub_img[c].publish(m)
        return ns

    def answered():
        return {stamp_to_ns(m.header.stamp) for _, m in probe.msgs("/vla/action_chunk")}

    def next_status():  # the first status the node publishes after this call (once a second)
        k = len(probe.msgs("/vla/policy/status"))
        assert probe.wait_for(lambda: len(probe.msgs("/vla/policy/status")) > k, 10)
        return status()

    def send_until(event, n, timeout=20, **kw):  # one observation at a time, each awaited
        sent = set()
        for i in range(n):
            sent.add(send_one(**kw))
            assert probe.wait_for(lambda: event(i + 1, sent), timeout), (i, status(), runner.tail("policy_node"))
        return sent

    try:
        # handshake: observations until one is refused, proving each path (state, both cameras)
        # is matched on the node's side too; counts below are relative to it
        for _ in range(10):
            send_one()
            if probe.wait_for(lambda: status().get("rejected_output", 0) >= 1, 3):
                break
        base = next_status()
        r_out, r_in = base["rejected_output"], base["rejected_input"]
        assert r_out >= 1 and not answered(), base

        # the first jump guard: every observation answered by one refusal, nothing published
        jumped = send_until(lambda i, s: status().get("rejected_output", 0) >= r_out + i, 5)
        assert next_status()["rejected_output"] == r_out + 5 and not answered() & jumped
        # the watchdog: observations keep arriving, every chunk is refused, nothing asked for a
        # hold -> the status says stalled (default watchdog_s 2 s)
        t0 = time.monotonic()
        while not status().get("stalled") and time.monotonic() - t0 < 20:
            send_one()
            time.sleep(0.2)
        st = status()
        assert st.get("stalled") is True and st["since_command_s"] > 2.0 and st["hold"] is None, st
        r_out = next_status()["rejected_output"] - 5  # (the refusals above; the checks below count from here)
        # malformed announcements (two broken JSON objects; text not starting with "{" is a bare
        # path, here to nothing): refused with the reason, the running version untouched
        for bad in ('{"path": ', '{"nopath": 1}', '["x"]'):
            pub_w.publish(String(data=bad))
        assert probe.wait_for(lambda: sum(e["event"] == "refused" for e in probe.json_msgs("/vla/policy/swap")) >= 3, 20)
        refused = sorted((e for e in probe.json_msgs("/vla/policy/swap") if e["event"] == "refused"),
                         key=lambda e: e["path"] == '["x"]')
        assert len(refused) == 3 and all(e["active_version"] == 1 and e["reason"] for e in refused), refused
        assert all("malformed announcement" in e["reason"] for e in refused[:2]), refused
        assert refused[2]["path"] == '["x"]' and "malformed" not in refused[2]["reason"], refused
        pub_w.publish(String(data=json.dumps({"path": str(near)})))
        assert probe.wait_for(lambda: any(e["event"] == "loaded" for e in probe.json_msgs("/vla/policy/swap")), 60), (
            probe.json_msgs("/vla/policy/swap"), runner.tail("policy_node", 40))
        # (installed between two inferences: the next observation is answered by v2)
        good = send_until(lambda i, s: len(answered() & s) >= i, 5)
        chunks = [m for _, m in probe.msgs("/vla/action_chunk") if stamp_to_ns(m.header.stamp) in good]
        assert len(chunks) == 5 and all(m.header.frame_id == "policy_version=2" for m in chunks)
        assert all(abs(m.points[0].positions[0] - (PANDA.home[0] + 0.3)) < 1e-3 for m in chunks)
        assert status()["rejected_output"] == r_out + 5
        assert next_status()["stalled"] is False  # commanding again
        # weights outside the allowed directories (default: the starting checkpoint's folder and
        # ./runs), directly or through a symlink planted inside: refused before anything is read
        n_ref = sum(e["event"] == "refused" for e in probe.json_msgs("/vla/policy/swap"))
        elsewhere = Path(tempfile.mkdtemp(prefix="untrusted_"))
        try:
            outside = save_checkpoint(VLAPolicy(PolicyConfig(**dict(SMALL, cameras=("front", "wrist"))),
                                                Normalization(PANDA.home.tolist(), [0.5] * 8, [0.0] * 8,
                                                              [1e-4] * 8)).eval(), elsewhere / "v9", version=9)
            (tmp_path / "planted").symlink_to(outside)
            for bad in (str(outside), str(tmp_path / "planted"), "/etc", "/nonexistent/checkpoint"):
                pub_w.publish(String(data=bad))
            refused_now = lambda: [e for e in probe.json_msgs("/vla/policy/swap") if e["event"] == "refused"][n_ref:]  # noqa: E731
            assert probe.wait_for(lambda: len(refused_now()) >= 4, 30), probe.json_msgs("/vla/policy/swap")
            why = {e["path"]: e["reason"] for e in refused_now()}
            assert all("outside the allowed weights directories" in why[p] for p in (str(outside), str(tmp_path / "planted"), "/etc")), why
            assert "does not exist" in why["/nonexistent/checkpoint"], why
            assert all(e["active_version"] == 2 for e in refused_now()), refused_now()
        finally:
            shutil.rmtree(elsewhere, ignore_errors=True)

        n = len(probe.msgs("/vla/action_chunk"))
        # stale: the newest joint state is either a stale one (stale_lag old) or the last fresh one,
        # stamped before set_lag and so more than max_state_age older than images sent after the wait
        set_lag(stale_lag)
        time.sleep(max_state_age + 0.2)
        stale = {send_one() for _ in range(5) if time.sleep(0.1) is None}
        set_lag(0.0)
        one_cam = {send_one(cams=("front",)) for _ in range(5) if time.sleep(0.1) is None}  # no wrist image
        bad_enc = {send_one(encoding="mono8") for _ in range(3) if time.sleep(0.1) is None}
        assert probe.wait_for(lambda: status().get("rejected_input", 0) >= r_in + 6, 20), status()
        # recovery, and proof that everything above was processed before it (each camera topic is
        # one in-order queue of the node)
        again = send_until(lambda i, s: len(answered() & s) >= i, 5)
        assert not answered() & (stale | one_cam | bad_enc)
        assert len(probe.msgs("/vla/action_chunk")) - n == 5
        assert probe.wait_for(lambda: status()["chunks"] >= len(probe.msgs("/vla/action_chunk")), 10)
        final = status()
        assert final["chunks"] == len(probe.msgs("/vla/action_chunk")), final
        assert final["rejected_input"] == r_in + 6, final  # 3 observations x 2 cameras in mono8
        assert final["rejected_output"] == r_out + 5 and final["version"] == 2, final
        log = runner.tail("policy_node", 200)
        assert "from the current state (> 0.5)" in log and "away from the image: not acting" in log
        assert not runner.dead()
    finally:
        stream["stop"] = True
        streamer.join(2)


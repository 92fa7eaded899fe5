"""policy_node: runs the VLA on camera images + joint states + instruction, publishes chunks.

Observations are paired by stamp (``sync: exact``, as the sim publishes them) or take the
newest joint state for each image (``sync: latest``, for a real camera + robot). Every
``replan_every``-th observation is handed to an inference thread (a one-slot mailbox: a newer
observation replaces one still waiting), so the executor never blocks and the next chunk is
computed while the current one is still being executed (asynchronous chunking). The chunk μ is
published on ``/vla/action_chunk`` stamped with its observation's stamp, and — in deploy mode —
on the controller topic. Latency (observation stamp -> chunk published) is reported on
``/vla/policy/status`` every second.

Hot swap: a new checkpoint announced on ``/vla/policy/weights`` (std_msgs/String: a path, or
JSON ``{"path": ...}``) or set as the ``checkpoint`` parameter at run time is loaded and validated in a
background thread (checksums, layout, finite probe outputs — ``core/policy/runtime.py``) and
installed by the inference thread between two inferences; the previous version is kept for
``/vla/policy/rollback`` (std_srvs/Trigger, ``vla-rl-ros rollback``). A refused checkpoint is
logged with its reason and the running version keeps running. Every swap, refusal and rollback
is published on ``/vla/policy/swap`` (JSON) and every chunk carries the version that made it.

Language: a new instruction is resolved on a dedicated language thread, never on the inference
thread — the sentence encoder is loaded at start-up, so a sentence the policy has never seen is
grounded in milliseconds (``core/policy/grounding.py``: which of the checkpoint's skills
it asks for, or none). Until it is resolved, and while it is not understood (``hold_unclear``,
default), the node publishes no chunk: the arm holds. ``/vla/policy/status`` says what the
policy believes it is doing: ``understood_as``, ``understood``, ``confidence``, ``language_reason``.

Nothing built from bad input is published: wrong image size/encoding, missing camera, NaN in the
state, empty instruction, non-finite outputs and a first action too far from the current state
are logged and dropped; the node keeps running.

``checkpoint`` may also be a LeRobot policy directory (``save_pretrained``; ``backend: lerobot``,
or ``auto``): ``core/policy/lerobot_backend.py`` maps the cameras, state and instruction onto its
input features and its action chunk onto the trajectory; the status's ``language`` says whether
it reads the instruction (``none``: it does not; there is no grounding to refuse one).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import deque

import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from vla_rl_ros.core.control import ChunkEnsembler, CommandWatchdog
from vla_rl_ros.core.policy.grounding import NONE
from vla_rl_ros.core.policy.runtime import (
    ChunkRejected,
    HotSwapper,
    NotUnderstood,
    Observation,
    ObservationError,
    OutputGuard,
    PolicyRuntime,
    SwapEvent,
    guard_chunk,
)
from vla_rl_ros.core.policy.factory import open_runtime
from vla_rl_ros.core.policy.trust import WeightsTrust, default_allowed_dirs, trusted_loader
from vla_rl_ros.core.node_config import PolicyNodeConfig
from vla_rl_ros.core.paths import DEFAULT_CHECKPOINT as _DEFAULT_CHECKPOINT
from vla_rl_ros.core.paths import checkpoint_or_default
from vla_rl_ros.core.camera import decode_image, fit_image
from vla_rl_ros.core.robot import PANDA
from vla_rl_ros.core.robot_profile import joint_rename
from vla_rl_ros.core.topics import SAFETY_STATUS_TOPIC
from vla_rl_ros.nodes.common import (
    ACTION_CHUNK_TOPIC,
    INSTRUCTION_TOPIC,
    JOINT_STATES_TOPIC,
    LATCHED_QOS,
    RELIABLE_QOS,
    SENSOR_QOS,
    Diagnostics,
    MessageError,
    camera_topic,
    chunk_msg,
    declare_config,
    freeze_startup_heap,
    joint_state_to_array,
    json_msg,
    msg_to_image,
    ns_to_stamp,
    spin_node,
    stamp_to_ns,
)

DEFAULT_CHECKPOINT = _DEFAULT_CHECKPOINT  # kept importable from here; defined in core/paths.py
MAX_INSTRUCTION_CHARS = 500  # longer "instructions" are refused at the boundary


#: at most one "input missing" warning per this many seconds
MISSING_INPUT_LOG_S = 5.0
#: the joint states' name in ``missing_inputs`` / ``input_age_s`` (cameras go by their names)
JOINT_STATES = "joint_states"


class PolicyNode(LifecycleNode):
    """A managed (lifecycle) node: ``configure`` loads the checkpoint and warms it up (encoder,
    probe inference), ``activate`` lets it command, ``deactivate`` holds (no chunk leaves),
    ``cleanup`` releases everything. With ``managed: false`` (the default) it goes through
    configure and activate by itself at start-up, and a failure to configure ends the process
    with the reason, as before; ``ros2 lifecycle set /policy_node deactivate`` holds either way."""

    def __init__(self):
        super().__init__("policy_node")
        c = self.config = declare_config(self, PolicyNodeConfig)
        self._active = False  # lifecycle: chunks leave the node only while active
        self._configure_error: Exception | None = None
        self._setup_handles: dict[str, list] = {}
        if c.managed:
            self.get_logger().info("managed node: waiting for configure (ros2 lifecycle set /policy_node configure)")
            return
        self.trigger_configure()
        if self._configure_error is not None:
            raise self._configure_error
        self.trigger_activate()

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        before = self._handles()
        try:
            self._setup()
        except Exception as e:  # noqa: BLE001 - reported (and raised by an unmanaged node)
            self._configure_error = e
            self.get_logger().error(f"configure failed: {type(e).__name__}: {e}")
            self._setup_handles = self._new_handles(before)
            self._teardown()
            return TransitionCallbackReturn.FAILURE
        self._configure_error = None
        self._setup_handles = self._new_handles(before)
        freeze_startup_heap()  # the checkpoint and encoder just loaded (a managed node configures late)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._ensemble_reset = True  # a held arm may have moved: ensembling starts over
        self._active = True
        self.get_logger().info("active: commanding")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        with self._cv:
            self._slot = None  # an observation waiting for inference is not acted on
        self.get_logger().info("inactive: holding (no chunk is sent)")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def _handles(self) -> dict[str, list]:
        return {"subscription": list(self.subscriptions), "publisher": list(self.publishers),
                "timer": list(self.timers), "service": list(self.services)}

    def _new_handles(self, before: dict[str, list]) -> dict[str, list]:
        now = self._handles()
        return {k: [h for h in now[k] if all(h is not b for b in before[k])] for k in now}

    def _teardown(self) -> None:
        """Undo :meth:`_setup`: threads stopped, its topics, timers and services destroyed."""
        self._active = False
        self._stop_threads()
        if getattr(self, "_params_cb", None) is not None:
            self.remove_on_set_parameters_callback(self._params_cb)
            self._params_cb = None
        for kind, handles in self._setup_handles.items():
            destroy = getattr(self, f"destroy_{kind}")
            for h in handles:
                destroy(h)
        self._setup_handles = {}

    def _setup(self) -> None:
        """configure: load and warm up the checkpoint, create the node's topics and threads."""
        c = self.config
        self.control_rate = c.control_rate
        self.replan_every = c.replan_every
        self.sync = c.sync
        self.max_state_age = c.max_state_age
        self.max_first_jump = c.max_first_jump
        self.to_controller = c.publish_to_controller
        # robot joint name -> the checkpoint's (a profile's policy_joints, inverted); a profile whose
        # joints do not map onto the checkpoint's is refused here, before anything runs
        self.rename = joint_rename(c.robot_profile, PANDA.joint_names)
        self.guard = OutputGuard(PANDA.lower, PANDA.upper, self.max_first_jump)
        # temporal ensembling (inference thread only); reset at each episode's instruction and swap
        self.ensembler = ChunkEnsembler(c.ensemble_decay, c.ensemble_max_lag) if c.temporal_ensemble else None
        self.ensemble_by_stamps = c.ensemble_ticks == "stamps"
        self._ensemble_reset = False
        self._ensemble_version = None
        self.episode_obs = 0  # complete observations since the last instruction message
        # a node that stops commanding while its inputs are fresh says so (status + error line)
        self.watchdog = CommandWatchdog(c.watchdog_s, fresh_s=max(1.0, c.watchdog_s / 2))

        start = checkpoint_or_default(c.checkpoint)
        runtime = open_runtime(start, backend=c.backend,
                               joint_names=PANDA.joint_names, threads=c.threads, hold_unclear=c.hold_unclear)
        # which checkpoints the weights topic (anyone on the DDS domain) may make this node load
        self.trust = WeightsTrust.build(c.allowed_weights_dirs or default_allowed_dirs(start), c.weights_key_file)
        self.get_logger().info(f"hot swap accepts {self.trust.describe()}")
        self.swapper = HotSwapper(runtime, on_event=self._on_swap_event,
                                  loader=trusted_loader(self.trust))
        self.cameras = list(self.runtime.cameras)
        # when each input last arrived well-formed (monotonic s): a camera or the joint states
        # falling silent is reported (status, hold reason), not just visible as missing chunks
        self.input_timeout_s = c.input_timeout_s
        self.last_input: dict[str, float | None] = {**{cam: None for cam in self.cameras}, JOINT_STATES: None}
        self.started = time.monotonic()
        self._last_missing_log = 0.0
        size = self.runtime.cfg.image_size
        self.image_hw = (size, size)
        self.get_logger().info(f"loaded {self.runtime.describe()}; cameras {self.cameras} {size}x{size}")
        # the sentence encoder loads now, before anything is published (the simulator waits for
        # this node's status publisher): loading it later, while the graph runs, held the
        # interpreter for seconds and starved the inference thread (chunk ages up to 21 ticks)
        # (on a helper thread, waited for while the node is not asked to stop: a SIGTERM during
        # the seconds of loading ends the node at once instead of after the load)
        loader = threading.Thread(target=self._preload_encoder, name="encoder-load", daemon=True)
        loader.start()
        while loader.is_alive() and self.context.ok():
            loader.join(0.05)

        self.pub_mean = self.create_publisher(JointTrajectory, ACTION_CHUNK_TOPIC, RELIABLE_QOS)
        self.pub_cmd = (
            self.create_publisher(JointTrajectory, c.controller_topic, RELIABLE_QOS)
            if self.to_controller else None
        )
        self.pub_status = self.create_publisher(String, "vla/policy/status", LATCHED_QOS)
        self.pub_swap = self.create_publisher(String, "vla/policy/swap", LATCHED_QOS)
        self.create_subscription(String, "vla/policy/weights", self._on_weights, RELIABLE_QOS)
        # robot graphs: swaps wait until the safety layer says it is not commanding the arm
        self.swap_only_when_holding = c.swap_only_when_holding
        self._arm_commanded: bool | None = None  # None: no safety status yet (a swap waits)
        if c.swap_only_when_holding:
            self.create_subscription(String, SAFETY_STATUS_TOPIC, self._on_safety_status, LATCHED_QOS)
        self.create_service(Trigger, "vla/policy/rollback", self._on_rollback)
        self._params_cb = self.add_on_set_parameters_callback(self._on_params)
        self.fit_images = c.fit_images
        self.camera_slop = c.camera_slop
        self.latest_images: dict[str, tuple[int, np.ndarray]] = {}  # sync latest: camera -> (stamp, image)
        self._paired_ns: int | None = None  # the pacing camera's last frame that formed an observation
        self._unpaired: dict | None = None  # its frame waiting for the others: camera -> gap (s)
        if c.image_topics and len(c.image_topics) != len(self.cameras):
            raise ValueError(f"image_topics names {len(c.image_topics)} topics for the checkpoint's "
                             f"{len(self.cameras)} cameras {self.cameras}")
        msg_type = CompressedImage if c.image_transport == "compressed" else Image
        for i, cam in enumerate(self.cameras):
            topic = (c.image_topics[i] if c.image_topics else "") or camera_topic(cam, i)
            self.create_subscription(msg_type, topic, lambda m, c=cam: self._on_image(c, m), SENSOR_QOS)
        self.create_subscription(JointState, JOINT_STATES_TOPIC, self._on_state, RELIABLE_QOS)
        self.create_subscription(String, INSTRUCTION_TOPIC, self._on_instruction, LATCHED_QOS)

        self.instruction = ""
        self.understood: dict[str, object] = {}  # instruction -> Understanding (language thread)
        self._lang_q: queue.Queue = queue.Queue()
        self.pending: dict[int, dict] = {}
        self.latest_state: tuple[int, np.ndarray] | None = None
        self.obs_count = 0
        self.counters = {"chunks": 0, "rejected_input": 0, "rejected_output": 0, "dropped_obs": 0,
                         "held_unclear": 0}
        self.latencies = deque(maxlen=2000)
        self.infer_ms = deque(maxlen=2000)
        self._slot: tuple | None = None
        self._cv = threading.Condition()
        self._stop = False
        self._last_err = 0.0
        self.worker = threading.Thread(target=self._work, name="inference", daemon=True)
        self.worker.start()
        self.language = threading.Thread(target=self._language, name="language", daemon=True)
        self.language.start()
        self.create_timer(1.0, self._publish_status)
        self.diagnostics = Diagnostics(self, "vla_rl_ros policy")
        if c.instruction.strip():  # the instruction as a parameter: the same path as the topic
            self._on_instruction(String(data=c.instruction))

    @property
    def runtime(self) -> PolicyRuntime:  # the version currently producing chunks
        return self.swapper._active

    # ------------------------------------------------------------------ hot swap
    def _on_safety_status(self, msg: String) -> None:
        try:
            self._arm_commanded = bool(json.loads(msg.data).get("commanding"))
        except (ValueError, AttributeError):
            self._arm_commanded = None

    def _may_swap(self) -> bool:
        return not self.swap_only_when_holding or self._arm_commanded is False

    def _on_weights(self, msg: String) -> None:
        text = msg.data.strip()
        path = text
        if text.startswith("{"):
            try:
                path = str(json.loads(text)["path"])
            except (ValueError, KeyError, TypeError) as e:
                self.get_logger().error(f"refused weights announcement {text[:200]!r}: {e}")
                self._publish_swap(SwapEvent("refused", text[:200], reason=f"malformed announcement: {e}"))
                return
        self.get_logger().info(f"new weights announced: {path}")
        self.swapper.request(path)

    def _on_params(self, params) -> SetParametersResult:
        for prm in params:
            if prm.name == "checkpoint" and str(prm.value).strip():
                self.swapper.request(str(prm.value))
            if prm.name == "instruction" and str(prm.value).strip():
                self._on_instruction(String(data=str(prm.value)))  # the same path as the topic
        return SetParametersResult(successful=True)

    def _on_rollback(self, request, response):
        try:
            prev = self.swapper.rollback()
        except LookupError as e:
            response.success, response.message = False, str(e)
            return response
        response.success = True
        response.message = f"rolling back from v{self.runtime.version} to v{prev.version} ({prev.path})"
        self.get_logger().warning(response.message)
        return response

    def _on_swap_event(self, ev: SwapEvent) -> None:  # loader or inference thread
        if ev.event == "refused":
            self.get_logger().error(f"REFUSED checkpoint {ev.path}: {ev.reason}; "
                                    f"v{ev.previous_version} keeps running")
        elif ev.event in ("swapped", "rollback"):
            self.get_logger().info(f"{ev.event}: v{ev.previous_version} -> v{ev.version} ({ev.path}); "
                                   f"swap {ev.swap_us:.0f} us, announce->active {ev.announce_to_swap_ms:.0f} ms")
        self._publish_swap(ev)

    def _publish_swap(self, ev: SwapEvent) -> None:
        d = dict(ev.__dict__)
        d["active_version"] = self.runtime.version
        self.pub_swap.publish(json_msg(d))

    # ------------------------------------------------------------------ inputs
    def _complain(self, text: str) -> None:
        now = time.monotonic()
        if now - self._last_err > 1.0:  # at most one line a second per node
            self.get_logger().error(text)
            self._last_err = now

    def _on_instruction(self, msg: String) -> None:
        text = msg.data.strip()
        if not text:
            self.counters["rejected_input"] += 1
            self._complain("empty instruction received: not acting until a valid one arrives")
            self.instruction = ""
            return
        if len(text) > MAX_INSTRUCTION_CHARS:
            self.counters["rejected_input"] += 1
            self._complain(f"instruction of {len(text)} characters refused (limit {MAX_INSTRUCTION_CHARS})")
            return
        self.episode_obs = 0  # the simulator (and a robot's reset) sends the instruction at each episode start
        self._ensemble_reset = True
        if text != self.instruction:
            self.instruction = text
            self.pending.clear()
            self.obs_count = 0
            now = self.runtime.understand_now(text)  # a template or a table entry: no encoder needed
            if now is not None:
                self.understood[text] = now
            else:
                self._lang_q.put(text)  # resolved on the language thread; until then: hold
            self.get_logger().info(f"instruction: {text!r}")

    def _preload_encoder(self) -> None:
        try:
            self.runtime.text.preload()
        except Exception as e:  # noqa: BLE001 (no encoder: the precomputed table still serves)
            self.get_logger().warning(f"sentence encoder not loaded ({e}): only the checkpoint's own "
                                      "instructions can be followed")

    # ------------------------------------------------------------------ language thread
    def _language(self) -> None:
        """Resolve instructions that need the sentence encoder (loaded at start-up), one at a
        time, newest first: neither the executor nor the inference thread ever waits for it."""
        while not self._stop:
            try:
                text = self._lang_q.get(timeout=0.5)
            except queue.Empty:
                continue
            while not self._lang_q.empty():  # only the newest instruction matters
                text = self._lang_q.get_nowait()
            runtime = self.runtime
            try:
                u = runtime.understand(text)
                if u.understood or not runtime.hold_unclear:
                    runtime.embed(text)  # cached: the inference thread never encodes
            except NotUnderstood:
                pass
            except ObservationError as e:
                self.counters["rejected_input"] += 1
                self._complain(f"instruction {text!r} cannot be encoded: {e}")
                continue
            if len(self.understood) > 1000:  # a client cycling through sentences
                self.understood.clear()
            self.understood[text] = u
            if u.understood:
                self.get_logger().info(f"instruction {text!r} understood as {u.skill!r} (p={u.confidence:.2f})")
            else:
                act = "holding" if runtime.hold_unclear else f"acting on the best guess {u.best!r}"
                self.get_logger().warning(f"instruction {text!r} NOT understood: {u.reason}; {act}")

    def _usable(self, text: str) -> bool:
        u = self.understood.get(text)
        if u is None:
            return False  # not resolved yet (a few ms): hold
        if self._holds_on(u):
            self.counters["held_unclear"] += 1
            return False
        return True

    def _holds_on(self, u) -> bool:
        """An instruction understood as ``u`` makes the node hold (not understood, and holding on
        unclear instructions or no guess at all)."""
        return not u.understood and (self.runtime.hold_unclear or u.best == NONE)

    def _on_state(self, msg: JointState) -> None:
        if self.rename:
            msg.name = [self.rename.get(n, n) for n in msg.name]
        try:
            q = joint_state_to_array(msg)
        except MessageError as e:
            self.counters["rejected_input"] += 1
            self._complain(f"rejected joint state: {e}")
            return
        self.last_input[JOINT_STATES] = time.monotonic()
        ns = stamp_to_ns(msg.header.stamp)
        self.latest_state = (ns, q)
        if self.sync == "exact":
            self.pending.setdefault(ns, {})["state"] = q
            self._try(ns)

    def _on_image(self, cam: str, msg) -> None:
        try:
            if isinstance(msg, CompressedImage):
                try:
                    img = decode_image(bytes(msg.data))
                except ValueError as e:
                    raise MessageError(str(e)) from None
            else:
                img = msg_to_image(msg, None if self.fit_images else self.image_hw)
            if self.fit_images:
                img = fit_image(img, self.image_hw)
            elif img.shape[:2] != tuple(self.image_hw):
                raise MessageError(f"image is {img.shape[1]}x{img.shape[0]}, expected "
                                   f"{self.image_hw[1]}x{self.image_hw[0]} (fit_images crops and resizes)")
        except MessageError as e:
            self.counters["rejected_input"] += 1
            self._complain(f"rejected image on camera {cam}: {e}")
            return
        self.last_input[cam] = time.monotonic()
        # the watchdog counts images, not only complete observations: images that never pair with
        # a joint state (sync exact with unmatched stamps, a state too far from the image) must
        # show as a stall instead of a silent node
        self.watchdog.observed(self.last_input[cam])
        ns = stamp_to_ns(msg.header.stamp)
        if self.sync == "latest" and len(self.cameras) > 1:  # cameras with their own clocks and rates
            self.latest_images[cam] = (ns, img)
            paced = self._pair_cameras(cam)
            if paced is None:
                return
            ns, images = paced
            slot = self.pending.setdefault(ns, {})
            slot["images"] = images
        else:
            slot = self.pending.setdefault(ns, {})
            slot.setdefault("images", {})[cam] = img
        if self.sync == "latest" and self.latest_state is not None:
            age = abs(ns - self.latest_state[0]) * 1e-9
            if age > self.max_state_age:
                self._complain(f"joint state is {age:.2f}s away from the image: not acting")
                return
            slot["state"] = self.latest_state[1]
        self._try(ns)

    def _pair_cameras(self, cam: str) -> tuple[int, dict] | None:
        """sync latest, several cameras: the first camera paces. Its newest frame pairs, once, with
        the others' newest frames when every one lies within ``camera_slop`` of it (whatever order
        they arrive in); a pacing frame replaced before it paired is reported with the gaps."""
        pacer = self.cameras[0]
        front = self.latest_images.get(pacer)
        if front is None or front[0] == self._paired_ns:
            return None
        gaps = {}
        for c in self.cameras[1:]:
            got = self.latest_images.get(c)
            gaps[c] = None if got is None else abs(got[0] - front[0]) * 1e-9
        if all(g is not None and g <= self.camera_slop for g in gaps.values()):
            self._paired_ns, self._unpaired = front[0], None
            return front[0], {c: self.latest_images[c][1] for c in self.cameras}
        if cam == pacer:  # a new pacing frame: the one before it, if it never paired, is reported
            if self._unpaired is not None:
                far = ", ".join(f"camera {c}: {'no frame' if g is None else f'{g:.3f} s away'}"
                                for c, g in self._unpaired.items() if g is None or g > self.camera_slop)
                self._complain(f"{far} from camera {pacer}'s frame (camera_slop {self.camera_slop:g} s): not acting")
            self._unpaired = gaps
        elif self._unpaired is not None:  # keep the smallest gap seen for the waiting frame
            self._unpaired = {c: (g if self._unpaired.get(c) is None or (g is not None and g < self._unpaired[c])
                                  else self._unpaired[c]) for c, g in gaps.items()}
        return None

    def _try(self, ns: int) -> None:
        slot = self.pending.get(ns)
        if not slot or "state" not in slot or len(slot.get("images", {})) < len(self.cameras):
            return
        for k in [k for k in self.pending if k <= ns]:
            del self.pending[k]
        while len(self.pending) > 50:  # stale partial observations
            del self.pending[min(self.pending)]
        tick, self.episode_obs = self.episode_obs, self.episode_obs + 1
        self.watchdog.observed(time.monotonic())
        if not self._active:  # lifecycle inactive: hold
            return
        if not self.instruction or not self._usable(self.instruction):
            return
        count, self.obs_count = self.obs_count, self.obs_count + 1
        if count % self.replan_every:
            return
        obs = Observation(slot["images"], slot["state"], self.instruction)
        if self.ensemble_by_stamps:
            tick = round(ns * 1e-9 * self.control_rate)
        with self._cv:
            if self._slot is not None:
                self.counters["dropped_obs"] += 1
            self._slot = (ns, obs, tick)
            self._cv.notify()

    # ------------------------------------------------------------------ inference thread
    def _work(self) -> None:
        while True:
            with self._cv:
                while self._slot is None and not self._stop:
                    self._cv.wait(timeout=0.5)
                if self._stop:
                    return
                ns, obs, tick = self._slot
                self._slot = None
                reset, self._ensemble_reset = self._ensemble_reset, False
            # between two inferences: install a validated candidate (on a robot graph only while held)
            runtime = self.swapper.active(install=self._may_swap())
            t0 = time.perf_counter()
            try:
                chunk = runtime.infer(obs)
            except ObservationError as e:
                self.counters["rejected_input"] += 1
                self._complain(f"not acting on this observation: {e}")
                continue
            except Exception as e:  # a backend failure must not kill the node
                self.counters["rejected_output"] += 1
                self._complain(f"inference failed: {type(e).__name__}: {e}")
                continue
            self.infer_ms.append((time.perf_counter() - t0) * 1e3)
            try:
                chunk = guard_chunk(chunk, obs.state, self.guard)  # joint limits, first-action jump
            except ChunkRejected as e:
                self.counters["rejected_output"] += 1
                self._complain(f"{e}: not sent")
                continue
            if self.ensembler is not None:
                if reset or runtime.version != self._ensemble_version:
                    self.ensembler.reset()
                    self._ensemble_version = runtime.version
                chunk = self.ensembler.add(chunk, tick, obs.state)
            if not self._active:  # deactivated while this chunk was computed: it is not sent
                continue
            msg = chunk_msg(chunk, ns_to_stamp(ns), self.control_rate, policy_version=runtime.version)
            self.pub_mean.publish(msg)
            if self.pub_cmd is not None:
                self.pub_cmd.publish(msg)
            self.counters["chunks"] += 1
            self.watchdog.commanded(time.monotonic())
            self.latencies.append((self.get_clock().now().nanoseconds - ns) * 1e-6)

    def _publish_status(self) -> None:
        lat = np.array(self.latencies) if self.latencies else np.array([np.nan])
        inf = np.array(self.infer_ms) if self.infer_ms else np.array([np.nan])
        status = dict(self.counters)
        status.update(
            version=self.runtime.version, backend=self.runtime.backend.describe(), instruction=self.instruction,
            policy_format=self.runtime.format, language=self.runtime.language,
            **self._language_status(),
            latency_p50_ms=float(np.percentile(lat, 50)), latency_p99_ms=float(np.percentile(lat, 99)),
            infer_p50_ms=float(np.percentile(inf, 50)), infer_p99_ms=float(np.percentile(inf, 99)),
            ensemble_restarts=self.ensembler.restarts if self.ensembler is not None else 0,
            swap_waiting_for_hold=self.swapper.pending() and not self._may_swap(),
            lifecycle="active" if self._active else "inactive",
        )
        now = time.monotonic()
        ages = {k: (None if t is None else round(now - t, 3)) for k, t in self.last_input.items()}
        missing = self._missing_inputs(now)
        dog = self.watchdog.check(now, self._hold_reason())
        status.update(stalled=dog["stalled"], since_command_s=dog["since_command_s"], hold=dog["hold"],
                      input_age_s=ages, missing_inputs=missing)
        if missing and self.instruction and now - self._last_missing_log > MISSING_INPUT_LOG_S:
            # its own rate limit: a silent camera must not crowd out the other error lines
            self.get_logger().warning(f"no {', '.join(missing)} for more than {self.input_timeout_s:g} s: the arm holds")
            self._last_missing_log = now
        if dog["stalled"]:
            self._complain(f"STALLED: observations keep arriving but no chunk was sent for "
                           f"{dog['since_command_s']:.1f} s (rejected input {self.counters['rejected_input']}, "
                           f"rejected output {self.counters['rejected_output']}, dropped {self.counters['dropped_obs']})")
        self.pub_status.publish(json_msg(status))
        level = "error" if dog["stalled"] else "warn" if (missing or dog["hold"]) else "ok"
        self.diagnostics.publish(level, "stalled" if dog["stalled"] else (dog["hold"] or "commanding"),
                                 {k: v for k, v in status.items() if not isinstance(v, (dict, list))})

    def _hold_reason(self) -> str | None:
        """Why the node deliberately sends nothing now, or None (it should be commanding)."""
        if not self._active:
            return "inactive (lifecycle)"
        if not self.instruction:
            return "no instruction"
        u = self.understood.get(self.instruction)
        if u is None:
            return "resolving the instruction"
        if self._holds_on(u):
            return f"instruction not understood: {u.reason}"
        missing = self._missing_inputs(time.monotonic())
        if missing:
            return f"no {', '.join(missing)} for more than {self.input_timeout_s:g} s"
        return None

    def _missing_inputs(self, now: float) -> list[str]:
        """Inputs not received well-formed within ``input_timeout_s`` (never received counts once the
        node has run that long)."""
        since = lambda t: now - (self.started if t is None else t)  # noqa: E731
        return [k for k, t in self.last_input.items() if since(t) > self.input_timeout_s]

    def _language_status(self) -> dict:
        u = self.understood.get(self.instruction)
        if u is None:
            return {"understood": None, "understood_as": None, "confidence": None,
                    "language_reason": "resolving" if self.instruction else "no instruction"}
        return {"understood": u.understood, "understood_as": u.skill or u.best, "confidence": u.confidence,
                "language_reason": u.reason}

    def shutdown(self) -> None:
        self._active = False
        self._stop_threads()

    def _stop_threads(self) -> None:
        if not hasattr(self, "worker"):  # never configured
            return
        with self._cv:
            self._stop = True
            self._cv.notify()
        self.worker.join(timeout=2.0)
        self.language.join(timeout=1.0)


def main(args=None) -> int:
    return spin_node(PolicyNode, args)


if __name__ == "__main__":
    raise SystemExit(main())

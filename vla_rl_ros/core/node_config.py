"""The parameters of every node, one frozen dataclass per node (no rclpy).

``nodes/common.declare_config(node, Cls)`` declares each field as a ROS parameter with its default
and help, and builds the dataclass back from the values the graph YAML (``config/graphs``) or
``--ros-args`` gave; ``validate()`` refuses bad values before the node opens anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vla_rl_ros.core.config import opt, require
from vla_rl_ros.core.control import DECAY_HELP, ENSEMBLE_DECAY, ENSEMBLE_HELP, TEMPORAL_ENSEMBLE
from vla_rl_ros.core.safety import SafetyConfig
from vla_rl_ros.core.topics import ACTION_CHUNK_TOPIC, CONTROLLER_TOPIC, JOINT_STATES_TOPIC

RENDERERS = ("auto", "egl", "tiny")
BACKENDS = ("auto", "onnxruntime", "torch", "tensorrt", "cudagraph", "lerobot")

#: exploration σ of the arm joints (rad) wherever it is not given: the measured default
DEFAULT_SIGMA = 0.02
#: std of the scripted expert's action noise (rad) wherever it is not given
DEFAULT_EXPERT_NOISE = 0.0


@dataclass(frozen=True)
class SimNodeConfig:
    control_rate: float = opt(10.0, "control ticks per simulated second (Hz)")
    real_time_factor: float = opt(1.0, "simulated seconds per wall-clock second")
    cameras: tuple[str, ...] = opt(("front",), "camera names (the first publishes /camera/image_raw)")
    image_width: int = opt(96, "camera image width (px)")
    image_height: int = opt(96, "camera image height (px)")
    renderer: str = opt("auto", "auto: EGL when it loads, else tiny (the graphs and the CLI pass tiny: identical "
                                "images everywhere); egl is faster at 224 px", choices=RENDERERS)
    max_steps: int = opt(120, "episode length limit (control ticks)")
    family: str = opt("", "one task family (empty: drawn from the seed)")
    seed: int = opt(0, "seed of the first episode (episode n uses seed + n // seed_repeat)")
    seed_repeat: int = opt(1, "roll each scene out this many times in a row (groups for the RL baseline)")
    episodes: int = opt(0, "episodes to run (0: forever)")
    auto_reset: bool = opt(True, "start the next episode when one ends")
    end_on_success: bool = opt(True, "an episode ends when its task succeeds (false: only max_steps ends it, so a "
                                     "demo or a test keeps one scene and one instruction)")
    reset_pause: float = opt(0.5, "pause between two episodes (s)")
    start_delay: float = opt(1.0, "delay before the first episode (s)")
    wait_for_publisher: str = opt("", "the first episode waits for publishers on these topics (comma-separated)")
    wait_timeout: float = opt(120.0, "start anyway after this long without them (s)")
    instruction_lead: float = opt(0.3, "time between an episode's instruction and its first observation (s)")
    paused: bool = opt(False, "no new episode starts (the running one finishes); settable at run time")
    controller_topic: str = opt(CONTROLLER_TOPIC, "topic of the executed chunks")
    replan_every: int = opt(1, "the policy's replanning period in ticks: a tick on a chunk this old or older is late")
    lockstep: bool = opt(False, "each tick waits for the chunk due from the policy (comparisons with the direct loop; "
                                "never on a robot)")
    lockstep_timeout: float = opt(30.0, "lockstep: longest wait for a due chunk before the tick runs late (s)")

    def validate(self) -> None:
        require(self.replan_every >= 1, "replan_every must be >= 1")
        require(self.lockstep_timeout > 0, "lockstep_timeout must be > 0")
        require(self.control_rate > 0 and self.real_time_factor > 0, "control_rate and real_time_factor must be > 0")
        require(self.image_width > 0 and self.image_height > 0, "image_width and image_height must be > 0")
        require(self.max_steps > 0, "max_steps must be > 0")
        require(self.seed_repeat >= 1, "seed_repeat must be >= 1")
        require(self.episodes >= 0, "episodes must be >= 0 (0: forever)")
        require(len(self.cameras) >= 1, "cameras: at least one camera")


@dataclass(frozen=True)
class PolicyNodeConfig:
    checkpoint: str = opt("", "checkpoint directory (empty: the shipped one); set at run time: hot swap")
    backend: str = opt("auto", "inference backend", choices=BACKENDS)
    managed: bool = opt(False, "lifecycle node driven from outside (ros2 lifecycle set /policy_node configure, "
                               "activate, ...); false: it configures and activates itself at start-up")
    threads: int = opt(1, "inference threads")
    control_rate: float = opt(10.0, "control rate the chunk's time stamps assume (Hz)")
    replan_every: int = opt(1, "infer on every n-th observation")
    sync: str = opt("exact", "pair images and joint states by stamp (exact) or take the newest state (latest)",
                    choices=("exact", "latest"))
    max_state_age: float = opt(0.25, "sync latest: largest image-to-state time difference (s)")
    camera_slop: float = opt(0.05, "sync latest, several cameras: the first camera paces the observations and the "
                                   "others' newest frames must be within this of its stamp (s; approximate-time "
                                   "pairing of cameras that are not triggered together)")
    max_first_jump: float = opt(0.5, "largest first-action distance from the current state (rad)")
    publish_to_controller: bool = opt(True, "deploy mode: also publish μ on the controller topic")
    controller_topic: str = opt(CONTROLLER_TOPIC, "topic of the executed chunks")
    hold_unclear: bool = opt(True, "hold (publish nothing) while the instruction is not understood "
                                   "(nonsense, an object the scene cannot contain); false: act on the best guess")
    temporal_ensemble: bool = opt(TEMPORAL_ENSEMBLE, ENSEMBLE_HELP)
    ensemble_decay: float = opt(ENSEMBLE_DECAY, DECAY_HELP)
    allowed_weights_dirs: tuple[str, ...] = opt((), "directories the weights topic and the checkpoint parameter may load "
                                                    "from (symlinks resolved; core/policy/trust.py); empty: the "
                                                    "starting checkpoint's directory and ./runs")
    weights_key_file: str = opt("", "HMAC key file: when set, only checkpoints signed with it (manifest.sig, "
                                    "`vla-rl-ros sign`) are loaded")
    input_timeout_s: float = opt(1.0, "an input (a camera, the joint states) silent for this long is reported missing on "
                                      "the status (missing_inputs, input_age_s) and as the reason the arm holds (s)")
    watchdog_s: float = opt(2.0, "report a stall (status 'stalled', an error line) when no chunk was sent for this "
                                 "long while observations keep arriving and nothing asked the policy to hold (s)")
    ensemble_ticks: str = opt("stamps", "how the ticks between two chunks are counted: stamps (observation stamps x "
                                        "control_rate: a real arm) or observations (one per control tick since the "
                                        "episode's instruction: the simulator, whose stamps follow its real-time "
                                        "factor)", choices=("stamps", "observations"))
    ensemble_max_lag: float = opt(0.0, "temporal ensembling restarts from the newest chunk when its first target is "
                                       "farther than this from the measured state (rad; an arm held or slowed by "
                                       "the safety layer, a dry run: the robot graph sets it); 0: never")
    swap_only_when_holding: bool = opt(False, "install a validated new version only while the safety layer is not "
                                              "commanding the arm (/vla/safety/status), so the behaviour never "
                                              "changes mid-motion (the robot graph sets it)")
    instruction: str = opt("", "the instruction to follow, as a parameter (at start-up or set at run time: `ros2 param "
                               "set /policy_node instruction '...'`); the latched /vla/instruction topic does the same")
    image_topics: tuple[str, ...] = opt((), "image topic per camera of the checkpoint, in its order (a robot's "
                                            "camera driver); empty (or an empty entry): /camera/image_raw, /camera/<camera>/image_raw")
    image_transport: str = opt("raw", "raw: sensor_msgs/Image; compressed: sensor_msgs/CompressedImage (JPEG/PNG) on "
                                      "the image topics", choices=("raw", "compressed"))
    fit_images: bool = opt(False, "crop frames of another size to the checkpoint's aspect ratio around their centre "
                                  "and resize them (a real camera); false: such a frame is refused")
    robot_profile: str = opt("", "robot profile (config/robots) whose joint names the joint states use: mapped onto "
                                 "the checkpoint's through its policy_joints (an FR3 running a Panda-trained "
                                 "policy); empty: the joint states carry the checkpoint's names")

    def validate(self) -> None:
        require(self.threads >= 1, "threads must be >= 1")
        require(self.control_rate > 0, "control_rate must be > 0")
        require(self.replan_every >= 1, "replan_every must be >= 1")
        require(math.isfinite(self.ensemble_decay), "ensemble_decay must be finite")
        require(self.watchdog_s > 0, "watchdog_s must be > 0")
        require(self.camera_slop >= 0, "camera_slop must be >= 0")
        require(self.input_timeout_s > 0, "input_timeout_s must be > 0")


@dataclass(frozen=True)
class ExplorationNodeConfig:
    mode: str = opt("explore", "explore: a = μ + ε; deploy: μ passes through", choices=("explore", "deploy"))
    sigma: tuple[float, ...] = opt((DEFAULT_SIGMA,), "exploration σ: one value for the arm joints or one per joint")
    gripper_sigma: float = opt(0.0, "exploration σ of the gripper (m); 0: the gripper executes μ")
    token_scale: tuple[float, ...] = opt((1.0,), "σ multiplier per token index (last repeats)")
    schedule: tuple[float, ...] = opt((1.0,), "σ multiplier per round (last repeats)")
    round_index: int = opt(0, "round of the schedule; settable at run time")
    seed: int = opt(0, "seed of the exploration noise")
    control_rate: float = opt(10.0, "control rate of the chunks' time stamps (Hz)")
    controller_topic: str = opt(CONTROLLER_TOPIC, "topic of the executed chunks")

    def validate(self) -> None:
        require(self.round_index >= 0, "round_index must be >= 0")
        require(self.control_rate > 0, "control_rate must be > 0")


@dataclass(frozen=True)
class LoggerConfig:
    out: str = opt("", "output dataset folder (LeRobot v3)", required=True)
    repo_id: str = opt("local/vla_rl_ros", "dataset repo id")
    control_rate: float = opt(10.0, "frames per second of the dataset")
    cameras: tuple[str, ...] = opt(("front",), "camera names to record")
    image_width: int = opt(96, "image width (px)")
    image_height: int = opt(96, "image height (px)")
    end_grace: float = opt(0.5, "wait this long after an episode's end for late messages (s)")
    environment_state: bool = opt(False, "record privileged object + grasp-point positions (sim only)")
    controller_topic: str = opt(CONTROLLER_TOPIC, "topic of the executed chunks (empty: none, the robot graph: its "
                                                  "controller takes the safety layer's trajectories)")
    pairing: str = opt("stamps", "stamps: every piece of a frame carries the observation's stamp (the simulator); "
                                 "ticks: a frame every control tick from the newest joint state and images (a real "
                                 "robot, whose camera and arm stamp independently), its action the policy's target "
                                 "for that tick, its reward the operator's label at the end", choices=("stamps", "ticks"))
    max_input_age: float = opt(0.3, "pairing ticks: a tick whose newest joint state or image is older than this is "
                                    "left out (counted as dropped) (s)")
    robot_profile: str = opt("", "robot profile whose joint names the joint states use (mapped onto the dataset's "
                                 "through its policy_joints); empty: the dataset's names")
    bag_dir: str = opt("", "also write each saved episode as a rosbag2 (MCAP) <bag_dir>/episode_<index> on the "
                           "graph's topics (core/bags.py); empty: none")

    def validate(self) -> None:
        require(bool(self.out), "out (output dataset folder) is required")
        require(self.control_rate > 0, "control_rate must be > 0")
        require(self.max_input_age > 0, "max_input_age must be > 0")


@dataclass(frozen=True)
class ExpertNodeConfig:
    control_rate: float = opt(10.0, "control rate (Hz)")
    horizon: int = opt(4, "expert chunk length (tokens)")
    expert_noise: float = opt(DEFAULT_EXPERT_NOISE, "std of the expert's action noise (rad)")
    seed: int = opt(0, "seed of the expert's noise")
    controller_topic: str = opt(CONTROLLER_TOPIC, "topic of the executed chunks")

    def validate(self) -> None:
        require(self.expert_noise >= 0, "expert_noise must be >= 0")
        require(self.horizon >= 1, "horizon must be >= 1")


@dataclass(frozen=True)
class ReplayNodeConfig:
    data: str = opt("", "LeRobot dataset folder to publish", required=True)
    real_time_factor: float = opt(1.0, "playback speed (1: the recorded rate)")
    episode_ids: str = opt("", "episodes to publish: '0,3,5:9' (empty: all)")
    publish_actions: bool = opt(False, "also command the controller with the recorded actions")
    loop: bool = opt(False, "start again after the last episode")

    def validate(self) -> None:
        require(bool(self.data), "data (dataset folder) is required")
        require(self.real_time_factor > 0, "real_time_factor must be > 0")


@dataclass(frozen=True)
class CameraNodeConfig:
    source: str = opt("0", "device index, video file or image folder")
    rate: float = opt(30.0, "frames per second")
    image_width: int = opt(96, "image width (px; 0 keeps the source's)")
    image_height: int = opt(96, "image height (px; 0 keeps the source's)")
    retry_period: float = opt(2.0, "retry opening a lost source after this long (s)")
    frame_id: str = opt("camera", "header frame id")
    topic: str = opt("camera/image_raw", "image topic (relative: inside the graph's namespace)")
    loop_file: bool = opt(True, "restart a video file at its end")

    def validate(self) -> None:
        require(self.rate > 0, "rate must be > 0")
        require(self.image_width >= 0 and self.image_height >= 0, "image_width and image_height must be >= 0")


@dataclass(frozen=True)
class TrainerNodeConfig:
    """trainer_node's own parameters; it also declares every field of ``core/rl/config.RLConfig``
    except :data:`TRAINER_SETS_RL_FIELDS` (the RL update's hyper-parameters, same defaults)."""

    data: tuple[str, ...] = opt((), "LeRobot datasets to train on")
    init: str = opt("", "checkpoint of the first round (default: the shipped one); then each result")
    out_root: str = opt("runs/trainer", "round n writes <out_root>/round_<n>")
    seed: int = opt(0, "round n's RL update uses seed + n")
    weights_key_file: str = opt("", "HMAC key file: sign each new checkpoint (manifest.sig) before announcing it")

    def validate(self) -> None:
        pass  # an empty data list is reported per request, the node stays up


#: RLConfig fields trainer_node sets per round instead of declaring them as parameters
TRAINER_SETS_RL_FIELDS = ("data", "episodes", "init", "out", "seed", "version", "export_onnx")


@dataclass(frozen=True)
class SafetyNodeConfig(SafetyConfig):
    profile: str = opt("panda", "robot profile: a name in config/robots (panda, fr3, ur5e, so100) or a .yaml path")
    dry_run: bool = opt(True, "start disabled: commands are computed and reported, none is sent until "
                              "/vla/safety/enable (the default on robot graphs)")
    chunk_topic: str = opt(ACTION_CHUNK_TOPIC, "the policy's chunks (JointTrajectory, the checkpoint's joint names)")
    joint_states_topic: str = opt(JOINT_STATES_TOPIC, "measured joint states")
    image_topic: str = opt("camera/image_raw", "watched camera topic (stale images hold the arm; empty: not watched)")
    controller_topic: str = opt("", "the arm controller's trajectory topic (empty: the profile's)")
    watchdog_rate: float = opt(50.0, "watchdog checks per second")
    use_robot_description: bool = opt(True, "take position and velocity limits from /robot_description when it is "
                                             "published (the stricter of it and the profile)")

    def validate(self) -> None:
        super().validate()
        require(self.watchdog_rate > 0, "watchdog_rate must be > 0")


@dataclass(frozen=True)
class MockArmNodeConfig:
    profile: str = opt("panda", "robot profile whose controller the stand-in arm plays (config/robots)")
    rate: float = opt(100.0, "joint state rate and interpolation step (Hz)")
    publish_states: bool = opt(True, "publish /joint_states (settable at run time: false makes them stale)")
    estop_grace_s: float = opt(0.2, "a motion command later than this after an e-stop counts as a violation")
    stale_grace_s: float = opt(0.3, "a motion command later than this into paused joint states counts as a violation")
    blocked: bool = opt(False, "the arm accepts trajectories but does not move (an obstacle, a faulted drive; settable "
                               "at run time)")
    stamp_offset_s: float = opt(0.0, "add this to the joint states' stamps (a robot computer whose clock is off; "
                                     "settable at run time)")

    def validate(self) -> None:
        require(self.rate > 0, "rate must be > 0")
        require(self.estop_grace_s >= 0 and self.stale_grace_s >= 0, "grace periods must be >= 0")


@dataclass(frozen=True)
class EpisodeManagerConfig:
    instruction: str = opt("", "the instruction of every episode (published on the latched instruction topic at start)")
    max_duration_s: float = opt(0.0, "an episode nobody labelled ends as a failure after this long (s); 0: never")
    keyboard: bool = opt(True, "read s / y / n / r (+ Enter) from the terminal when it is one")
    first_episode: int = opt(0, "index of the first episode (continue a dataset's numbering)")

    def validate(self) -> None:
        require(self.max_duration_s >= 0, "max_duration_s must be >= 0")

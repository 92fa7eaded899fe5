"""Topic names of the graph (defaults; the nodes take the controller topic as a parameter).
No rclpy: configs and ROS-free tools read them too. ``nodes/common.py`` documents the contract."""

CONTROLLER_TOPIC = "joint_trajectory_controller/joint_trajectory"
REFERENCE_TOPIC = "joint_trajectory_controller/reference"
ACTION_CHUNK_TOPIC = "vla/action_chunk"
JOINT_STATES_TOPIC = "joint_states"
INSTRUCTION_TOPIC = "vla/instruction"
REWARD_TOPIC = "vla/reward"
EPISODE_TOPIC = "vla/episode"
OBJECT_POSES_TOPIC = "sim/object_poses"
SIGMA_TOPIC = "vla/exploration/sigma"  # σ rows (positions) of an explored chunk, same stamp as μ
LOGGER_STATUS_TOPIC = "vla/logger/status"
POLICY_STATUS_TOPIC = "vla/policy/status"
POLICY_SWAP_TOPIC = "vla/policy/swap"
POLICY_WEIGHTS_TOPIC = "vla/policy/weights"
POLICY_ROLLBACK_SERVICE = "vla/policy/rollback"
EXPLORATION_STATUS_TOPIC = "vla/exploration/status"
SIM_STATUS_TOPIC = "sim/status"  # JSON, latched, 1 Hz: late ticks and chunk age over the run (sim_node)
SAFETY_ENABLE_SERVICE = "vla/safety/enable"  # std_srvs/SetBool
SAFETY_HOLD_SERVICE = "vla/safety/hold"  # std_srvs/Trigger
SAFETY_MOVE_TO_START_SERVICE = "vla/safety/move_to_start"  # std_srvs/Trigger
SAFETY_ESTOP_TOPIC = "vla/safety/estop"  # std_msgs/Bool, latched
SAFETY_STATUS_TOPIC = "vla/safety/status"  # JSON, latched
SAFETY_DRY_RUN_TOPIC = "vla/safety/dry_run"  # the command a dry run would have sent
MOCK_ARM_STATUS_TOPIC = "mock_arm/status"  # JSON (mock_arm_node: the stand-in ros2_control arm)

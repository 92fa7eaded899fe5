"""exploration_node: μ in, executed chunk out — Gaussian exploration inside the joint limits.

Subscribes to the policy's mean chunk on ``/vla/action_chunk``. In ``deploy`` mode it passes μ
to the controller topic untouched. In ``explore`` mode it draws a = μ + ε per token and joint
from the Gaussian *truncated* to the joint limits (``core/rl/exploration.py``: exact density,
no clipping), publishes the executed chunk on the controller topic and σ (one row per token,
in ``positions``) on ``/vla/exploration/sigma`` — all three messages share the header stamp
(the chunk's identity), so the trajectory logger pairs μ, σ and a and logs the exact
per-step log-likelihood of the token that was actually executed.

Parameters: ``mode`` (explore | deploy), ``sigma`` (list: one value for the arm joints or one
per joint), ``gripper_sigma``, ``token_scale`` (σ multiplier per token index), ``schedule`` (σ
multiplier per round) with ``round_index``, ``seed``, ``controller_topic``. ``mode`` and
``round_index`` may be changed at run time (parameter set); bad messages are refused with a log
line and nothing is published for them.
"""

from __future__ import annotations

import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from vla_rl_ros.core.node_config import ExplorationNodeConfig
from vla_rl_ros.core.rl.exploration import ExplorationConfig, Explorer
from vla_rl_ros.core.robot import PANDA
from vla_rl_ros.nodes.common import (
    ACTION_CHUNK_TOPIC,
    LATCHED_QOS,
    RELIABLE_QOS,
    SIGMA_TOPIC,
    MessageError,
    chunk_from_msg,
    chunk_msg,
    declare_config,
    json_msg,
    policy_version_of,
    spin_node,
)


class ExplorationNode(Node):
    def __init__(self):
        super().__init__("exploration_node")
        c = self.config = declare_config(self, ExplorationNodeConfig)
        self.control_rate = c.control_rate
        cfg = ExplorationConfig(sigma=list(c.sigma), gripper_sigma=c.gripper_sigma,
                                token_scale=list(c.token_scale), schedule=list(c.schedule))
        cfg.sigma_matrix(8, PANDA.dof)  # validate now: a bad σ is a startup error, not a runtime one
        mode = c.mode
        self.explorer = Explorer(PANDA.lower, PANDA.upper, cfg, seed=c.seed, mode=mode, round_index=c.round_index)
        self.pub_cmd = self.create_publisher(JointTrajectory, c.controller_topic, RELIABLE_QOS)
        self.pub_sigma = self.create_publisher(JointTrajectory, SIGMA_TOPIC, RELIABLE_QOS)
        self.pub_status = self.create_publisher(String, "vla/exploration/status", LATCHED_QOS)
        self.create_subscription(JointTrajectory, ACTION_CHUNK_TOPIC, self._on_mean, RELIABLE_QOS)
        self.add_on_set_parameters_callback(self._on_params)
        self.counters = {"chunks": 0, "rejected": 0}
        self.create_timer(1.0, self._status)
        self.get_logger().info(f"exploration in {mode} mode, sigma {cfg.sigma}, token_scale {cfg.token_scale}")

    def _on_params(self, params) -> SetParametersResult:
        for prm in params:
            if prm.name == "mode":
                if prm.value not in ("explore", "deploy"):
                    return SetParametersResult(successful=False, reason="mode must be explore or deploy")
                self.explorer.mode = str(prm.value)
                self.get_logger().info(f"mode -> {prm.value}")
            elif prm.name == "round_index":
                self.explorer.round_index = int(prm.value)
        return SetParametersResult(successful=True)

    def _on_mean(self, msg: JointTrajectory) -> None:
        try:
            mu = chunk_from_msg(msg, PANDA)
            executed, sigma = self.explorer.perturb(mu)
            version = policy_version_of(msg)
            out = chunk_msg(executed, msg.header.stamp, self.control_rate, policy_version=version)
            sig = None if sigma is None else chunk_msg(sigma, msg.header.stamp, self.control_rate,
                                                       policy_version=version)
        except (MessageError, ValueError) as e:
            self.counters["rejected"] += 1
            self.get_logger().error(f"refused mean chunk: {e}")
            return
        if sig is not None:
            self.pub_sigma.publish(sig)  # before the command: the logger has σ when a arrives
        self.pub_cmd.publish(out)
        self.counters["chunks"] += 1

    def _status(self) -> None:
        self.pub_status.publish(json_msg({"mode": self.explorer.mode, "round_index": self.explorer.round_index,
                                          **self.counters}))


def main(args=None) -> int:
    return spin_node(ExplorationNode, args)


if __name__ == "__main__":
    raise SystemExit(main())

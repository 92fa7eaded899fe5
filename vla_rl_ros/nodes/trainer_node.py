"""trainer_node: runs the offline RL update on request and announces the new weights.

``/vla/trainer/train`` (std_srvs/Trigger) starts ``train_rl`` (``core/rl/trainer.py``) in a
background thread on the datasets in ``data`` from the newest checkpoint it knows (``init`` at
first, then each result); the result is written atomically as ``<out_root>/round_<n>/checkpoint``
(temp dir + rename, checksummed manifest) and announced on ``/vla/policy/weights`` — the policy
node validates it and swaps it in. Progress and per-epoch statistics (ESS, clip fraction, KL to
behaviour, value loss) are published on ``/vla/trainer/status`` (JSON). A second request while
training is refused; a failed update is reported and announces nothing. Restarted (after a crash
or ``kill -9`` mid-update), it resumes from the newest complete round in ``out_root`` and numbers
the next round after the highest existing folder (``core/rl/resume.py``).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import Trigger

from vla_rl_ros.core.node_config import TRAINER_SETS_RL_FIELDS, TrainerNodeConfig
from vla_rl_ros.core.paths import checkpoint_or_default
from vla_rl_ros.core.policy.trust import read_key, sign_checkpoint
from vla_rl_ros.core.rl.config import RLConfig
from vla_rl_ros.core.rl.resume import resume_point
from vla_rl_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS, declare_config, json_msg, spin_node


class TrainerNode(Node):
    def __init__(self):
        super().__init__("trainer_node")
        c = self.config = declare_config(self, TrainerNodeConfig)
        # the RL update's hyper-parameters: every RLConfig field, same defaults as train-rl
        self.rl = declare_config(self, RLConfig, exclude=TRAINER_SETS_RL_FIELDS, validate=False)
        self.data = list(c.data)
        self.current = checkpoint_or_default(c.init)
        self.out_root = Path(c.out_root)
        self.seed = c.seed
        self.key = read_key(c.weights_key_file) if c.weights_key_file else None  # a bad key file: fail at start
        self.pub_weights = self.create_publisher(String, "vla/policy/weights", RELIABLE_QOS)
        self.pub_status = self.create_publisher(String, "vla/trainer/status", LATCHED_QOS)
        self.create_service(Trigger, "vla/trainer/train", self._on_train)
        # a restart (after a crash or kill -9 mid-update) resumes from the newest complete round
        # and never reuses a round folder; half-written checkpoints were never announced
        self.round, newest, removed = resume_point(self.out_root)
        if newest is not None:
            self.current = newest
        if self.round:
            self.get_logger().info(f"resuming after round {self.round} from {self.current}"
                                   + (f"; removed {len(removed)} unfinished checkpoint folder(s)" if removed else ""))
        self._busy = threading.Lock()
        self._status({"state": "idle", "current": self.current, "round": self.round})

    def _status(self, d: dict) -> None:
        self.pub_status.publish(json_msg(dict(d, stamp=time.time())))

    def _on_train(self, request, response):
        if not self.data:
            response.success, response.message = False, "no datasets configured (parameter 'data')"
            return response
        if not self._busy.acquire(blocking=False):
            response.success, response.message = False, "already training"
            return response
        self.round += 1
        out = self.out_root / f"round_{self.round}"
        threading.Thread(target=self._train, args=(out,), daemon=True).start()
        response.success, response.message = True, f"training round {self.round} from {self.current} -> {out}"
        return response

    def _train(self, out: Path) -> None:
        from vla_rl_ros.core.rl.trainer import train_rl
        from vla_rl_ros.core.sim.task_features import episode_privileged_features

        try:
            self._status({"state": "training", "round": self.round, "init": self.current})
            rl = dataclasses.replace(self.rl, data=tuple(self.data), init=self.current, out=str(out),
                                     seed=self.seed + self.round).validate()
            res = train_rl(rl, progress=False, privileged=episode_privileged_features)
            if self.key is not None:  # signed before anyone can be told about it
                sign_checkpoint(res["checkpoint"], self.key)
            self.current = res["checkpoint"]
            self.pub_weights.publish(String(data=json.dumps({"path": res["checkpoint"], "version": res["version"]})))
            self.get_logger().info(f"round {self.round}: v{res['version']} written and announced ({res['checkpoint']})")
            self._status({"state": "done", "round": self.round, "checkpoint": res["checkpoint"],
                          "version": res["version"], "history": res["history"]})
        except Exception as e:  # report, announce nothing, stay up for the next request
            self.get_logger().error(f"training round {self.round} failed: {type(e).__name__}: {e}")
            self._status({"state": "failed", "round": self.round, "reason": f"{type(e).__name__}: {e}"})
        finally:
            self._busy.release()


def main(args=None) -> int:
    return spin_node(TrainerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())

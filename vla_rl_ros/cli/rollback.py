"""``vla-rl-ros rollback``: make a running policy_node go back to its previous weights."""

from __future__ import annotations

from vla_rl_ros.cli.common import RosOptions, build_or_die, die
from vla_rl_ros.core.config import add_fields

HELP = "make a running policy_node go back to its previous weights"


def add_arguments(p) -> None:
    add_fields(p, RosOptions)


def main(args) -> int:
    from vla_rl_ros.rosio import request_rollback

    opts = build_or_die(RosOptions, args)
    ok, message = request_rollback(opts.domain_id)
    if not ok and message.startswith(("no policy_node", "rollback request timed out")):
        die(message)
    print(message)
    return 0 if ok else 1

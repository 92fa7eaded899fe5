"""``python -m vla_rl_ros.cli``: the same as ``vla-rl-ros``."""

from vla_rl_ros.cli import main

raise SystemExit(main())

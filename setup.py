"""ament_python package setup: one console script per node plus the `vla-rl-ros` CLI."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "vla_rl_ros"
NODES = ["sim_node", "expert_node", "trajectory_logger", "replay_node", "camera_node", "policy_node", "exploration_node", "trainer_node", "safety_node", "mock_arm_node", "episode_manager"]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["tests", "tests.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/config/graphs", glob("config/graphs/*.yaml")),
    ],
    package_data={PACKAGE: ["config/*.yaml", "config/graphs/*.yaml"]},
    include_package_data=True,
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="vla_rl_ros developers",
    description="pi0-like VLA policies on ROS 2: deploy, collect, replay, RL post-training.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [f"{n} = {PACKAGE}.nodes.{n}:main" for n in NODES]
        + ["vla-rl-ros = vla_rl_ros.cli:main"],
    },
)

"""One source of truth for configuration: every config field reaches the command line and the node
parameters with the same default and a help line; graph YAML uses the field names; the package has
no import cycle and the ROS-free verbs never import rclpy."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from vla_rl_ros.cli import VERBS, build_parser
from vla_rl_ros.cli.collect import CollectConfig
from vla_rl_ros.cli.common import RosOptions
from vla_rl_ros.cli.compare import CompareConfig
from vla_rl_ros.cli.evaluate import EvaluateConfig
from vla_rl_ros.cli.export_bag import ExportBagConfig
from vla_rl_ros.cli.import_bag import ImportBagConfig
from vla_rl_ros.cli.replay import ReplayConfig
from vla_rl_ros.cli.sign import SignConfig
from vla_rl_ros.cli.train_rl import TrainRLOptions
from vla_rl_ros.core import node_config as nc
from vla_rl_ros.core.collect import DirectCollectConfig
from vla_rl_ros.core.data.view import ViewConfig
from vla_rl_ros.core.config import ConfigError, build, from_params, param_defaults
from vla_rl_ros.core.improve import RL_FIELDS_SET_BY_IMPROVE, ImproveConfig
from vla_rl_ros.core.policy.bc_config import BCConfig
from vla_rl_ros.core.policy.grounding_config import GroundingConfig
from vla_rl_ros.core.rl.config import RLConfig
from vla_rl_ros.core.wm.config import WMConfig

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "vla_rl_ros"

#: verb -> the config dataclasses its options come from (and the fields it sets itself)
VERB_CONFIGS = {
    "collect": [(CollectConfig, ())],
    "evaluate": [(EvaluateConfig, ())],
    "compare": [(CompareConfig, ())],
    "replay": [(ReplayConfig, ())],
    "train-bc": [(BCConfig, ())],
    "train-grounding": [(GroundingConfig, ())],
    "train-rl": [(RLConfig, ()), (TrainRLOptions, ())],
    "train-wm": [(WMConfig, ())],
    "improve": [(ImproveConfig, ()), (RLConfig, RL_FIELDS_SET_BY_IMPROVE)],
    "rollback": [(RosOptions, ())],
    "sign": [(SignConfig, ())],
    "run": [(RosOptions, ())],
    "view": [(ViewConfig, ())],
    "import-bag": [(ImportBagConfig, ())],
    "export-bag": [(ExportBagConfig, ())],
}

#: node executable -> its parameters' dataclass (and extra dataclasses it declares)
NODE_CONFIGS = {
    "sim_node": [(nc.SimNodeConfig, ())],
    "policy_node": [(nc.PolicyNodeConfig, ())],
    "exploration_node": [(nc.ExplorationNodeConfig, ())],
    "trajectory_logger": [(nc.LoggerConfig, ())],
    "expert_node": [(nc.ExpertNodeConfig, ())],
    "replay_node": [(nc.ReplayNodeConfig, ())],
    "camera_node": [(nc.CameraNodeConfig, ())],
    "trainer_node": [(nc.TrainerNodeConfig, ()), (RLConfig, nc.TRAINER_SETS_RL_FIELDS)],
    "safety_node": [(nc.SafetyNodeConfig, ())],
    "mock_arm_node": [(nc.MockArmNodeConfig, ())],
    "episode_manager": [(nc.EpisodeManagerConfig, ())],
}

ALL_CONFIGS = sorted({c for v in list(VERB_CONFIGS.values()) + list(NODE_CONFIGS.values()) for c, _ in v}
                     | {DirectCollectConfig}, key=lambda c: c.__name__)


def _default(f):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _subparser(verb: str):
    ap = build_parser()
    sub = next(a for a in ap._actions if a.__class__.__name__ == "_SubParsersAction")
    return sub.choices[verb]


@pytest.mark.parametrize("cls", ALL_CONFIGS, ids=lambda c: c.__name__)
def test_every_field_is_frozen_and_has_a_help_line(cls):
    assert cls.__dataclass_params__.frozen
    for f in dataclasses.fields(cls):
        text = f.metadata.get("help", "")
        assert text.strip() and "\n" not in text, f"{cls.__name__}.{f.name} has no one-line help"


@pytest.mark.parametrize("verb", sorted(VERB_CONFIGS))
def test_every_field_reaches_the_command_line_with_its_default(verb):
    p = _subparser(verb)
    actions = {a.dest: a for a in p._actions}
    for cls, skip in VERB_CONFIGS[verb]:
        for f in dataclasses.fields(cls):
            if f.name in skip or not f.metadata.get("cli", True):
                continue
            assert f.name in actions, f"{verb}: {cls.__name__}.{f.name} has no option"
            a = actions[f.name]
            if a.required or not a.option_strings:
                continue  # no default on the command line: the value must be given
            assert a.default == _default(f), f"{verb} {a.option_strings}: {a.default!r} != {_default(f)!r}"
            expected = "--" + f.name.replace("_", "-")
            assert a.option_strings[0] == expected
    # and nothing on the command line that is not a field
    fields = {f.name for cls, _ in VERB_CONFIGS[verb] for f in dataclasses.fields(cls)}
    extra = {a.dest for a in p._actions if a.dest not in ("help",)} - fields - {"graph", "overrides"}
    assert not extra, f"{verb}: options without a config field: {extra}"


def test_every_verb_is_covered():
    assert set(VERBS) - set(VERB_CONFIGS) == {"graphs", "summary"}  # no options but positional data


def test_parsed_defaults_build_the_dataclass_defaults():
    ns = build_parser().parse_args(["collect", "--out", "/tmp/x"])
    assert build(CollectConfig, ns) == CollectConfig(out="/tmp/x")
    ns = build_parser().parse_args(["improve"])
    assert build(ImproveConfig, ns) == ImproveConfig()
    ns = build_parser().parse_args(["improve", "--group-size", "3", "--episodes-per-round", "9", "--speed", "2"])
    assert build(ImproveConfig, ns).seed_repeat == 3 and build(ImproveConfig, ns).real_time_factor == 2.0


def test_one_default_per_setting():
    sigma = {CollectConfig().sigma, ImproveConfig().sigma, nc.ExplorationNodeConfig().sigma, DirectCollectConfig().sigma}
    assert sigma == {(0.02,)}
    assert {CollectConfig().expert_noise, nc.ExpertNodeConfig().expert_noise, DirectCollectConfig().expert_noise} == {0.0}
    # every graph passes the verbs' renderer; sim_node alone keeps its former default (auto)
    assert {CollectConfig().renderer, EvaluateConfig().renderer, DirectCollectConfig().renderer} == {"tiny"}
    assert {CollectConfig().rho, ImproveConfig().rho, DirectCollectConfig().rho} == {0.0}
    assert {CollectConfig().replan_every, ImproveConfig().replan_every, DirectCollectConfig().replan_every} == {1}
    # --ray [ADDRESS]: one field (core/parallel.ray_option), off by default, "local" when given alone
    ray = [dataclasses.fields(c)[[f.name for f in dataclasses.fields(c)].index("ray")]
           for c in (CollectConfig, EvaluateConfig, CompareConfig, ImproveConfig)]
    assert {(f.default, f.metadata["const"], f.metadata["help"]) for f in ray} == {(None, "local", ray[0].metadata["help"])}


def test_validate_runs_before_any_file_is_read(tmp_path):
    with pytest.raises(ConfigError, match="episodes"):
        build(CollectConfig, {"out": str(tmp_path / "never"), "episodes": 0})
    with pytest.raises(ConfigError, match="unknown task family 'juggle'"):
        build(CollectConfig, {"out": str(tmp_path / "never"), "family": "juggle"})
    with pytest.raises(ConfigError, match="divide"):
        build(ImproveConfig, {"episodes_per_round": 5, "seed_repeat": 2})
    with pytest.raises(ConfigError, match="renderer"):
        from_params(nc.SimNodeConfig, {"renderer": "vulkan"})
    with pytest.raises(ConfigError, match="seed_repeat"):
        from_params(nc.SimNodeConfig, {"seed_repeat": 0})
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("node", sorted(NODE_CONFIGS))
def test_node_declares_its_parameters_from_its_config(node):
    src = (PKG / "nodes" / f"{node}.py").read_text()
    cls = NODE_CONFIGS[node][0][0]
    assert f"declare_config(self, {cls.__name__}" in src
    assert "declare_parameter(" not in src, f"{node} declares a parameter by hand"


def test_declared_ros_parameters_have_the_field_defaults():
    """Each node config declared on a real rclpy node (in this process): same names and defaults."""
    rclpy = pytest.importorskip("rclpy")
    from vla_rl_ros.nodes.common import declare_config

    rclpy.init(args=[])
    try:
        for node_name, configs in NODE_CONFIGS.items():
            for cls, skip in configs:
                node = rclpy.create_node(f"cfg_{node_name}_{cls.__name__.lower()}")
                try:
                    validate = cls is not RLConfig and cls is not nc.LoggerConfig and cls is not nc.ReplayNodeConfig
                    built = declare_config(node, cls, exclude=skip, validate=validate)
                    for name, default in param_defaults(cls, skip):
                        assert node.get_parameter(name).value == default, f"{node_name}.{name}"
                    for f in dataclasses.fields(cls):
                        if f.name not in skip:
                            assert getattr(built, f.name) == _default(f), f"{node_name}.{f.name}"
                finally:
                    node.destroy_node()
    finally:
        rclpy.shutdown()


def test_graph_parameters_are_config_fields():
    from vla_rl_ros.graph import available_graphs, load_graph

    for name in available_graphs():
        for spec in load_graph(name).nodes:
            fields = {f.name for cls, skip in NODE_CONFIGS[spec.executable]
                      for f in dataclasses.fields(cls) if f.name not in skip}
            unknown = set(spec.parameters) - fields - {"use_sim_time"}  # rclpy declares it on every node
            assert not unknown, f"graph {name}: {spec.name} has no parameter(s) {unknown}"


# ----------------------------------------------------------------------------- layout
def _module_imports() -> dict[str, set[str]]:
    """Every vla_rl_ros module -> the vla_rl_ros modules it imports (at any level)."""
    mods = {}
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        mods[name] = p
    graph = {}
    for name, p in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                base = node.module
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    deps.add(sub if sub in mods else base)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def test_no_import_cycle_in_the_package():
    graph = _module_imports()
    assert "vla_rl_ros.cli.collect" in graph and graph["vla_rl_ros.cli.collect"]
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


ROS_FREE_VERBS = ["collect", "evaluate", "compare", "train-bc", "train-rl", "improve", "summary", "graphs", "view",
                  "import-bag", "export-bag"]


def _run(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          cwd=str(ROOT))


def test_ros_free_verbs_never_import_rclpy():
    mods = ", ".join(f"vla_rl_ros.cli.{VERBS[v]}" for v in ROS_FREE_VERBS)
    code = (f"import sys, importlib\nfor m in '{mods}'.split(', '): importlib.import_module(m)\n"
            "import vla_rl_ros.core.improve, vla_rl_ros.core.config, vla_rl_ros.core.node_config, vla_rl_ros.rosio\n"
            "from vla_rl_ros.cli import main\n"
            "for v in " + repr(list(VERBS)) + ":\n"
            "    try:\n        main([v, '--help'])\n    except SystemExit:\n        pass\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('rclpy', 'rcl_interfaces', 'std_msgs')]\n"
            "assert not bad, bad\nprint('OK')")
    r = _run(code)
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stderr[-2000:]


def test_direct_evaluation_runs_without_rclpy(tmp_path):
    """A ROS-free verb end to end (one short episode of the shipped checkpoint): rclpy never loaded."""
    code = ("import sys\nfrom vla_rl_ros.cli import main\n"
            f"rc = main(['evaluate', '--direct', '--episodes', '1', '--max-steps', '3', '--backend', 'onnxruntime', "
            f"'--json', {str(tmp_path / 'r.json')!r}])\n"
            "assert rc == 0\nassert 'rclpy' not in sys.modules\nprint('OK')")
    r = _run(code)
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stderr[-2000:]
    assert (tmp_path / "r.config.json").is_file()  # the resolved configuration next to the results

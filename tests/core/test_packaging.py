"""Packaging facts a ROS user checks first (issue 21, item 6): ``package.xml`` declares every ROS
package the code imports (and nothing it does not), every other third-party import is either a
pip requirement (and, where rosdep has a key for it, a ``package.xml`` dependency too), and ``setup.py`` installs a console
script for every node module. The imports are read from the source with ``ast`` (function-level
and import-gated ones included), so a new ``from foo_msgs.msg import …`` anywhere fails here until
``package.xml`` says so."""

from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ET
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "vla_rl_ros"

#: Python modules with a rosdep key: a ROS workspace gets them from rosdep, not pip
ROSDEP_KEYS = {"numpy": "python3-numpy", "yaml": "python3-yaml", "cv2": "python3-opencv",
               "matplotlib": "python3-matplotlib", "tqdm": "python3-tqdm", "scipy": "python3-scipy",
               "PIL": "python3-pil"}
#: import-gated modules that cannot be installed on this project's machines (their code path says so)
NOT_INSTALLABLE_HERE = {"tensorrt"}
#: pip packages installed by scripts/setup_env.sh outside the requirements files
INSTALLED_BY_SETUP = {"lerobot"}


def _imports(root: Path) -> set[str]:
    mods: set[str] = set()
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods.add(node.module.split(".")[0])
    return mods


def _is_ros(mod: str) -> bool:
    return mod in ("rclpy", "ament_index_python", "launch", "launch_ros", "builtin_interfaces") or \
        mod.endswith(("_msgs", "_srvs", "_interfaces"))


def _package_xml() -> dict[str, set[str]]:
    root = ET.parse(ROOT / "package.xml").getroot()
    out: dict[str, set[str]] = {}
    for el in root:
        if el.tag.endswith("depend"):
            out.setdefault(el.tag, set()).add(el.text.strip())
    return out


def _requirement_names() -> set[str]:
    names = set()
    for f in ("base.txt", "extras.txt", "test.txt"):
        for line in (ROOT / "requirements" / f).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                names.add(re.split(r"[<>=!~\[; ]", line)[0].lower().replace("_", "-"))
    return names


def test_package_xml_declares_exactly_the_ros_packages_the_code_uses():
    used = {m for m in _imports(PKG) if _is_ros(m)}
    declared = _package_xml().get("exec_depend", set())
    missing = sorted(used - declared)
    assert not missing, f"imported but not an <exec_depend> of package.xml: {missing}"
    ros_declared = {d for d in declared if not d.startswith("python3-")}
    unused = sorted(ros_declared - used)
    assert not unused, f"<exec_depend> of package.xml that nothing imports: {unused}"


def test_every_third_party_import_is_a_pinned_pip_requirement_and_a_rosdep_key_where_one_exists():
    mods = _imports(PKG) - set(sys.stdlib_module_names) - {"vla_rl_ros"}
    third = {m for m in mods if not _is_ros(m)}
    declared = _package_xml().get("exec_depend", set())
    dists = packages_distributions()
    reqs = _requirement_names() | INSTALLED_BY_SETUP
    problems = []
    for m in sorted(third - NOT_INSTALLABLE_HERE):
        if m in ROSDEP_KEYS and ROSDEP_KEYS[m] not in declared:
            problems.append(f"{m}: rosdep key {ROSDEP_KEYS[m]} missing from package.xml")
        names = {d.lower().replace("_", "-") for d in dists.get(m, [])}
        if not names:
            problems.append(f"{m}: imported but not installed in this environment")
        elif not names & reqs:
            problems.append(f"{m}: distribution {sorted(names)} is not in requirements/*.txt")
    assert not problems, "\n".join(problems)
    # the rosdep keys package.xml names are all used
    stale = sorted(k for m, k in ROSDEP_KEYS.items() if k in declared and m not in third)
    assert not stale, f"package.xml names rosdep keys nothing imports: {stale}"


def test_every_node_module_has_a_console_script():
    setup = (ROOT / "setup.py").read_text()
    listed = set(re.search(r"NODES = \[(.*?)\]", setup, re.S).group(1).replace('"', "").replace(" ", "").split(","))
    modules = {p.stem for p in (PKG / "nodes").glob("*.py")
               if "def main(" in p.read_text() and p.stem not in ("__init__",)}
    assert modules == listed, f"nodes with main() {sorted(modules)} vs setup.py NODES {sorted(listed)}"

import numpy as np
import pytest

from vla_rl_ros.core.robot import PANDA, JointLayoutError


def test_reorders_by_name_and_ignores_mimic_joint():
    names = list(reversed(PANDA.joint_names)) + ["panda_finger_joint2"]
    values = list(range(8))[::-1] + [99]
    np.testing.assert_allclose(PANDA.order(names, values), np.arange(8))


@pytest.mark.parametrize(
    "names,values,msg",
    [
        (list(PANDA.joint_names)[:-1], [0.0] * 7, "missing joints"),
        (list(PANDA.joint_names), [0.0] * 7, "8 joint names but 7 values"),
        (list(PANDA.joint_names) + ["elbow"], [0.0] * 9, None),
        (list(PANDA.joint_names[:7]) + ["panda_joint1"], [0.0] * 8, "duplicate"),
        (list(PANDA.joint_names), [float("nan")] + [0.0] * 7, "non-finite"),
    ],
)
def test_bad_layouts(names, values, msg):
    if msg is None:  # unknown extra joint: fine for state, refused for commands
        PANDA.order(names, values)
        with pytest.raises(JointLayoutError, match="unknown joints"):
            PANDA.order(names, values, allow_extra=False)
        return
    with pytest.raises(JointLayoutError, match=msg):
        PANDA.order(names, values)


def test_limits():
    assert PANDA.within_limits(PANDA.home)
    q = PANDA.home.copy()
    q[3] = 0.5
    assert not PANDA.within_limits(q)
    assert "panda_joint4" in PANDA.limit_violations(q)[0]

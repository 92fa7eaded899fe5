import numpy as np
import pytest

from vla_rl_ros.graph import NodeSpec

cv2 = pytest.importorskip("cv2")


def test_camera_node_publishes_video_file_at_rate(tmp_path, probe, start_nodes):
    from sensor_msgs.msg import Image

    from vla_rl_ros.nodes.common import SENSOR_QOS, msg_to_image, stamp_to_ns

    path = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (80, 60))
    for i in range(10):
        w.write(np.full((60, 80, 3), 20 * i, np.uint8))
    w.release()
    probe.collect(Image, "/camera/image_raw", SENSOR_QOS)
    runner = start_nodes(
        NodeSpec("camera_node", "camera_node", {"source": str(path), "rate": 20.0, "image_width": 40, "image_height": 30})
    )
    window = 80  # frames: 4 s at 20 Hz
    assert probe.wait_for(lambda: len(probe.msgs("/camera/image_raw")) >= window + 5, timeout=90), runner.tail("camera_node")
    msgs = probe.msgs("/camera/image_raw")[-window:]
    stamps = sorted(stamp_to_ns(m.header.stamp) for _, m in msgs)  # taken in the node's timer
    rate = (len(stamps) - 1) / ((stamps[-1] - stamps[0]) * 1e-9)
    # Upper, 21: the timer never fires early and skips the periods it misses, so only a late first
    # stamp (< one period) raises the rate, by at most 1/79. Lower, 16: a wrong period (10 Hz, the
    # file's own 10 fps) fails, while a loaded machine may skip up to one frame in five (and a
    # best-effort frame be lost).
    assert 16.0 < rate <= 21.0, rate
    img = msg_to_image(msgs[-1][1], (30, 40))
    assert img.shape == (30, 40, 3)
    assert len({int(msg_to_image(m, (30, 40)).mean()) for _, m in msgs}) > 3  # frames change


def test_camera_node_survives_a_missing_source(probe, start_nodes):
    runner = start_nodes(
        NodeSpec("camera_node", "camera_node", {"source": "/nonexistent/cam.mp4", "rate": 10.0, "retry_period": 0.5})
    )
    # three failed opens (retry_period 0.5 s), waited for in the node's log
    assert probe.wait_for(lambda: runner.tail("camera_node", 50).count("no such file") >= 3, 60), runner.tail("camera_node")
    assert not runner.dead(), runner.tail("camera_node")  # still running, retrying
    log = runner.tail("camera_node", 50)
    assert "no such file" in log and "retrying" in log
    assert log.count("no such file") >= 3  # it really retries

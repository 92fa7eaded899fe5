"""camera_node: OpenCV capture (device index, video file or stream URL) -> sensor_msgs/Image.

Publishes rgb8 frames at a fixed rate on ``/camera/image_raw`` (sensor-data QoS), resized to
``width`` x ``height`` (0 keeps the source size). A source that is missing or fails is reported
once per retry with the reason, and reopened every ``retry_period`` seconds — the node never
exits or crash-loops because a camera went away. Video files loop when ``loop_file`` is true.
"""

from __future__ import annotations

from rclpy.node import Node
from sensor_msgs.msg import Image

from vla_rl_ros.core.camera import CameraSource, CameraError
from vla_rl_ros.nodes.common import SENSOR_QOS, image_to_msg, spin_node


class CameraNode(Node):
    def __init__(self):
        super().__init__("camera_node")
        p = self.declare_parameter
        source = str(p("source", "0").value)
        self.rate = float(p("rate", 30.0).value)
        if self.rate <= 0:
            raise ValueError("rate must be > 0")
        width, height = int(p("width", 96).value), int(p("height", 96).value)
        self.retry_period = float(p("retry_period", 2.0).value)
        self.frame_id = str(p("frame_id", "camera").value)
        topic = str(p("topic", "/camera/image_raw").value)
        self.camera = CameraSource(
            source, width=width, height=height, loop_file=bool(p("loop_file", True).value)
        )
        self.pub = self.create_publisher(Image, topic, SENSOR_QOS)
        self.published = 0
        self.next_retry = 0.0
        self.create_timer(1.0 / self.rate, self._on_timer)
        self.get_logger().info(f"camera source {source!r} -> {topic} at {self.rate} Hz")

    def _on_timer(self) -> None:
        now = self.get_clock().now()
        if not self.camera.is_open:
            if now.nanoseconds * 1e-9 < self.next_retry:
                return
            self.next_retry = now.nanoseconds * 1e-9 + self.retry_period
            try:
                self.camera.open()
                self.get_logger().info(f"camera opened: {self.camera.describe()}")
            except CameraError as e:
                self.get_logger().error(f"{e}; retrying in {self.retry_period:.1f}s")
                return
        try:
            frame = self.camera.read()
        except CameraError as e:
            self.get_logger().error(f"{e}; reopening in {self.retry_period:.1f}s")
            self.camera.close()
            self.next_retry = now.nanoseconds * 1e-9 + self.retry_period
            return
        self.pub.publish(image_to_msg(frame, now.to_msg(), self.frame_id))
        self.published += 1

    def shutdown(self) -> None:
        self.camera.close()


def main(args=None) -> int:
    return spin_node(CameraNode, args)


if __name__ == "__main__":
    raise SystemExit(main())

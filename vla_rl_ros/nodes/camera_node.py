"""camera_node: OpenCV capture (device index, video file or stream URL) -> sensor_msgs/Image.

Publishes rgb8 frames at a fixed rate on ``/camera/image_raw`` (sensor-data QoS), resized to
``image_width`` x ``image_height`` (0 keeps the source size). A source that is missing or fails is reported
once per retry with the reason, and reopened every ``retry_period`` seconds — the node never
exits or crash-loops because a camera went away. Video files loop when ``loop_file`` is true.
"""

from __future__ import annotations

from rclpy.node import Node
from sensor_msgs.msg import Image

from vla_rl_ros.core.camera import CameraSource, CameraError
from vla_rl_ros.core.node_config import CameraNodeConfig
from vla_rl_ros.nodes.common import SENSOR_QOS, declare_config, image_to_msg, spin_node


class CameraNode(Node):
    def __init__(self):
        super().__init__("camera_node")
        c = self.config = declare_config(self, CameraNodeConfig)
        source = c.source
        self.rate = c.rate
        self.retry_period = c.retry_period
        self.frame_id = c.frame_id
        topic = c.topic
        self.camera = CameraSource(source, width=c.image_width, height=c.image_height, loop_file=c.loop_file)
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

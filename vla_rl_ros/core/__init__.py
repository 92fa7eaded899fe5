"""ROS-free core: pure Python / numpy / torch. Never import rclpy or *_msgs here."""

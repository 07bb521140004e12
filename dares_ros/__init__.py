"""The ROS 2 layer of dares: message conversions, the depth node and rosbag tools (rclpy only)."""

"""The ROS 2 layer of dares: message conversions, the depth node and rosbag tools (rclpy only)."""

import os

STARTED_BY = os.getppid()  # the process that started this one, read on import (a node's first step): whether it
# died while the node was still loading is graph.die_with_parent's question

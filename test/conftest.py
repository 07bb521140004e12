"""Test-wide settings: DDS on loopback only, the large-data Fast DDS profile, and a ROS domain of this test
session's own."""

import os

from dares_ros.graph import prepare_dds

prepare_dds(local_only=True)
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))

"""`dares` commands that need ROS, one module each as dares_core's (add_arguments, run; rclpy imported inside run),
registered through the `dares.commands` entry point."""

from . import bag, demo, prepare_bag

COMMANDS = [demo, bag, prepare_bag]

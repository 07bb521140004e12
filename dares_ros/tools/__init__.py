"""The tooling around the nodes: rosbag2 tools, `dares demo`, benchmarks, the soak test, running nodes as
processes, and the `dares` subcommands that need ROS. The runtime (nodes, conversions) is dares_ros itself."""

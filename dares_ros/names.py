"""Topic names shared by the node's outputs, the bag tools and the command line. Import-light (no rclpy), so
`dares --help` answers at once."""

RIG = "jhu_daVinci"  # the da Vinci topic prefix our bags use: /<rig>/left/image_raw, ...
OUTPUT_NAMESPACE = "/dares"  # where `bag infer` writes what the node publishes: /dares/depth/image, ...
SCALE_MODES = ("relative", "stereo", "fixed")  # how the node turns network depth into metres
FINE_TUNE_SOURCES = ("bag", "video")  # how `dares bench fine-tune` records the scope: prepare-bag or prepare-video
ODOMETRY_STATUS = "dares_odometry_node: odometry"  # the odometry node's diagnostic status name
DEPTH_STATUS = "dares_depth_node: depth"  # the depth node's (scale_m_per_unit, bad_inputs, ...)
NODE_TEMPORAL_SEEDS = (7, *range(141, 150))  # `dares bench node-temporal`: the demo's own scene and nine more

"""rosbag2 tools on the `rosbags` library, one module per job: io (files, QoS, info, repair, topic selection),
sequences (SCARED/synthetic sequences to bags), live (play, record), infer (offline inference), evaluate.

Bags are rosbag2 folders (metadata.yaml + MCAP by default) that `ros2 bag play` reads. Messages are built by
dares_ros.conversions (the node's own code) and serialised with rclpy's CDR, so bag and live graph carry
identical bytes. Default topics are da Vinci style: /<rig>/left/image_raw, /<rig>/left/camera_info, right
likewise, /<rig>/ground_truth/depth (32FC1 m), /<rig>/ground_truth/pose, and /tf_static (left -> right eye).
"""

from .evaluate import eval_bag
from .infer import infer_bag
from .io import (
    NODE_OUTPUT_QOS,
    START_NS,
    STREAM_QOS,
    TF_STATIC_QOS,
    TYPESTORE,
    BagWriter,
    Topics,
    bag_info,
    default_qos,
    message_class,
    msgtype_of,
    named_topic,
    open_reader,
    pick_topic,
    read_messages,
    repair_bag,
)
from .live import PlayStats, play_bag, record_bag
from .sequences import camera_infos, sequence_folders, write_sequence_bag

__all__ = [
    "NODE_OUTPUT_QOS", "START_NS", "STREAM_QOS", "TF_STATIC_QOS", "TYPESTORE", "BagWriter", "PlayStats", "Topics",
    "bag_info", "camera_infos", "default_qos", "eval_bag", "infer_bag", "message_class", "msgtype_of", "named_topic",
    "open_reader", "pick_topic", "play_bag", "read_messages", "record_bag", "repair_bag", "sequence_folders",
    "write_sequence_bag",
]

"""How our processes join the ROS graph: the shipped config files and the DDS settings set before rclpy.init."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

from dares_core.errors import DaresError

PACKAGE = "dares_ros"
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")  # Fast DDS 3.x, 2.x
SUBSCRIPTION_QOS = ("sensor_data", "reliable")  # the image-consuming nodes' `qos` parameter
INPUT_TRANSPORTS = ("raw", "compressed")  # their `input_transport`: Image on X, or CompressedImage on X/compressed
POSE_SOURCES = ("any", "odom", "camera_pose")  # the pose-consuming nodes' `pose_source`: which camera poses they take
FAST_DDS_2_DISTROS = ("humble", "jazzy")  # read only the older variable; newer ones warn that it is deprecated


def subscription_qos(name: str):
    """The QoS profile of a `qos` parameter: sensor_data (best effort, keep last 5) or reliable (keep last 5:
    every frame of a reliable publisher such as a bag replay, unless the node falls five behind)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    if name == "sensor_data":
        return qos_profile_sensor_data
    return QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)


def subscribe_poses(node, source: str, on_pose, qos) -> None:
    """The camera-pose subscriptions of a `pose_source` parameter: odom (nav_msgs/Odometry, dares_odometry_node's),
    camera_pose (geometry_msgs/PoseStamped: a robot's kinematics, a bag's ground truth) or any (both: two
    trajectories in frames of their own do not line up, so only one may be published); on_pose(header, pose) gets
    each."""
    from geometry_msgs.msg import PoseStamped
    from nav_msgs.msg import Odometry

    if source in ("any", "odom"):
        node.create_subscription(Odometry, "odom", lambda m: on_pose(m.header, m.pose.pose), qos)
    if source in ("any", "camera_pose"):
        node.create_subscription(PoseStamped, "camera_pose", lambda m: on_pose(m.header, m.pose), qos)


def config_file(name: str) -> Path:
    """A file of config/: from the source checkout when running from it; else from the package's share folder
    in the ament index (a colcon workspace or /opt/ros, as `ros2 pkg prefix dares_ros` finds it); else from
    sys.prefix/share/dares_ros (a pip install)."""
    for folder in _config_folders():
        if (folder / name).is_file():
            return folder / name
    raise DaresError(f"config/{name} is missing from this dares_ros install: reinstall the package")


def _config_folders():
    yield Path(__file__).resolve().parents[1] / "config"
    try:
        from ament_index_python.packages import get_package_share_directory

        yield Path(get_package_share_directory(PACKAGE)) / "config"
    except (ImportError, LookupError, OSError):  # no ament index here, or dares_ros not registered in it
        pass
    yield Path(sys.prefix) / "share" / PACKAGE / "config"


def prepare_dds(local_only: bool = False) -> str | None:
    """Call before rclpy.init. Uses config/fastdds_large_data.xml (a 64 MiB shared-memory segment, so full-size
    images and clouds reach same-machine subscribers whole) unless a Fast DDS profile is already set; with
    local_only, discovery stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST). Returns the profile
    it set, None when one was set already."""
    if local_only:
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    if any(os.environ.get(v) for v in PROFILE_VARIABLES):
        return None
    profile = str(config_file("fastdds_large_data.xml"))
    fast_dds_2 = os.environ.get("ROS_DISTRO") in FAST_DDS_2_DISTROS
    os.environ["FASTRTPS_DEFAULT_PROFILES_FILE" if fast_dds_2 else "FASTDDS_DEFAULT_PROFILES_FILE"] = profile
    return profile


def die_with_parent() -> None:
    """Have Linux send this process SIGTERM when its parent dies, however it died (SIGKILL too): a node started by
    launch, `ros2 run` or `dares demo` never outlives it. Elsewhere, nothing."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    from . import STARTED_BY

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != STARTED_BY:  # the parent died before the request took effect (a node imports for seconds)
        os.kill(os.getpid(), signal.SIGTERM)


def run_node(make_node, name: str, help_text: str, args=None) -> None:
    """main() of a dares node: --help prints help_text; a DaresError (a bad parameter, a corrupt checkpoint) is
    one fatal line and exit status 2; Ctrl-C and SIGTERM end it cleanly, at any moment, and so does its parent's
    death (die_with_parent)."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    argv = sys.argv if args is None else args
    own = argv[1:argv.index("--ros-args")] if "--ros-args" in argv else argv[1:]
    if "-h" in own or "--help" in own:
        with contextlib.suppress(BrokenPipeError):  # --help | head
            print(help_text)
        return
    profile = prepare_dds()
    rclpy.init(args=args)  # installs rclpy's SIGINT/SIGTERM handling, which the parent-death SIGTERM then meets
    die_with_parent()
    node = None
    try:
        try:
            executor = SingleThreadedExecutor()  # before the node: rclpy.spin() makes one, which fails after a signal
            node = make_node()
            if profile:
                node.get_logger().info(f"Fast DDS profile for full-size images: {profile} (set "
                                       "FASTDDS_DEFAULT_PROFILES_FILE to use yours)")
            executor.add_node(node)
            executor.spin()
        except DaresError as e:
            rclpy.logging.get_logger(name).fatal(str(e))
            sys.exit(2)
        except ExternalShutdownException:
            pass
        except Exception:
            if rclpy.ok():
                raise
            # Ctrl-C or SIGTERM: rclpy shuts the context down from its own thread, so whichever step was using it
            # (making the node, building spin's wait set) fails; that is the end that was asked for
    except KeyboardInterrupt:  # Ctrl-C, and a second one while the first is handled (a terminal's and launch's)
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # shutting down: a further Ctrl-C changes nothing
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()

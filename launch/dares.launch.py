"""Start the DARES depth node with config/dares.yaml.

    ros2 launch dares_ros dares.launch.py weights:=/path/depth_model.pth

Remap its inputs (left/image_rect, left/camera_info, right/...) with your camera's topics, or use
davinci.launch.py for dVRK stereo video.
"""

from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def generate_launch_description():
    default_params = PathJoinSubstitution([FindPackageShare("dares_ros"), "config", "dares.yaml"])
    profile = PathJoinSubstitution([FindPackageShare("dares_ros"), "config", "fastdds_large_data.xml"])
    fast_dds_2 = PythonExpression(["'", EnvironmentVariable("ROS_DISTRO", default_value=""),
                                   "' in ('humble', 'jazzy')"])
    return LaunchDescription([
        DeclareLaunchArgument("fastdds_profile", default_value=profile,
                              description="Fast DDS profile of the started nodes (large shared-memory segment)"),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("fastdds_profile"),
                               condition=UnlessCondition(fast_dds_2)),
        SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE", LaunchConfiguration("fastdds_profile"),
                               condition=IfCondition(fast_dds_2)),
        DeclareLaunchArgument("weights", description="depth checkpoint (DARES depth_model.pth, .safetensors, DAv2)"),
        DeclareLaunchArgument("params_file", default_value=default_params, description="node parameters"),
        DeclareLaunchArgument("device", default_value="cuda", description="cuda or cpu"),
        DeclareLaunchArgument("namespace", default_value="dares", description="namespace of the outputs"),
        Node(
            package="dares_ros",
            executable="dares_depth_node",
            name="dares_depth_node",
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("params_file"),
                        {"weights": LaunchConfiguration("weights"), "device": LaunchConfiguration("device")}],
            output="screen",
        ),
    ])

"""DARES depth on da Vinci (dVRK) stereo video, with optional rectification and RViz.

    ros2 launch dares_ros davinci.launch.py weights:=/path/depth_model.pth rig:=jhu_daVinci
    ros2 launch dares_ros davinci.launch.py weights:=... odometry:=true pose_weights:=/path/weights_folder \
        fusion:=true

odometry:=true adds dares_odometry_node (odom, path and TF from the pose network, in metres by the depth
node's stereo scale); fusion:=true adds dares_fusion_node (map/points, the surface fused over time; with
mesh:=true also map/mesh, its triangles) with poses from odom, or from a PoseStamped topic of yours (a
robot's camera pose from kinematics) with camera_pose:=/your/topic; mask:=/your/tool_mask (mono8 or 8UC1,
nonzero on instruments, stamped as the images) keeps moving instruments out of the map.

dVRK's gscam launch files publish /<rig>/left/image_raw, /<rig>/left/camera_info and the right
equivalents, unrectified. With rectify:=true (default) image_proc's rectify_node makes image_rect for
each eye from the calibrated camera_info; with rectify:=false the raw images go straight to the node
(monocular depth is fine, stereo scale needs a rectified pair). Their frame_id (/<rig>/left_frame) is not
an optical frame: set frame_id:=<rig>_left_optical if your TF tree has one.
"""

from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def generate_launch_description():
    rig = LaunchConfiguration("rig")
    rectify = LaunchConfiguration("rectify")
    mask = LaunchConfiguration("mask")
    params = PathJoinSubstitution([FindPackageShare("dares_ros"), "config", "dares.yaml"])
    rviz_config = PathJoinSubstitution([FindPackageShare("dares_ros"), "config", "dares.rviz"])

    def eye(side):
        return ["/", rig, f"/{side}"]

    rectifiers = [
        Node(package="image_proc", executable="rectify_node", name=f"rectify_{side}", condition=IfCondition(rectify),
             remappings=[("image", eye(side) + ["/image_raw"]), ("camera_info", eye(side) + ["/camera_info"]),
                         ("image_rect", eye(side) + ["/image_rect"])])
        for side in ("left", "right")
    ]

    def depth_node(image_suffix, condition):
        return Node(
            package="dares_ros", executable="dares_depth_node", name="dares_depth_node", namespace="dares",
            condition=condition, output="screen",
            parameters=[params, {"weights": LaunchConfiguration("weights"), "device": LaunchConfiguration("device"),
                                 "scale_mode": LaunchConfiguration("scale_mode"), "eyes": LaunchConfiguration("eyes"),
                                 "frame_id": LaunchConfiguration("frame_id")}],
            remappings=[("left/image_rect", eye("left") + [image_suffix]),
                        ("left/camera_info", eye("left") + ["/camera_info"]),
                        ("right/image_rect", eye("right") + [image_suffix]),
                        ("right/camera_info", eye("right") + ["/camera_info"])],
        )

    def left_image(rectified):
        return eye("left") + [PythonExpression(["'/image_rect' if '", rectified, "' == 'true' else '/image_raw'"])]

    odometry = Node(
        package="dares_ros", executable="dares_odometry_node", name="dares_odometry_node", namespace="dares",
        condition=IfCondition(LaunchConfiguration("odometry")), output="screen",
        parameters=[{"pose_weights": LaunchConfiguration("pose_weights"), "device": LaunchConfiguration("device")}],
        remappings=[("left/image_rect", left_image(rectify))],
    )
    fusion = Node(
        package="dares_ros", executable="dares_fusion_node", name="dares_fusion_node", namespace="dares",
        condition=IfCondition(LaunchConfiguration("fusion")), output="screen",
        parameters=[{"publish_mesh": ParameterValue(LaunchConfiguration("mesh"), value_type=bool),
                     "use_mask": ParameterValue(PythonExpression(["'", mask, "' != ''"]), value_type=bool)}],
        remappings=[("image", left_image(rectify)), ("camera_pose", LaunchConfiguration("camera_pose")),
                    ("mask", PythonExpression(["'", mask, "' or 'mask'"]))],
    )

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
        DeclareLaunchArgument("weights", description="depth checkpoint"),
        DeclareLaunchArgument("rig", default_value="jhu_daVinci", description="dVRK stereo rig name"),
        DeclareLaunchArgument("device", default_value="cuda"),
        DeclareLaunchArgument("scale_mode", default_value="stereo", description="relative, stereo or fixed"),
        DeclareLaunchArgument("eyes", default_value="left",
                              description="left, or both (right depth under /dares/right/)"),
        DeclareLaunchArgument("frame_id", default_value="", description="output frame_id override"),
        DeclareLaunchArgument("rectify", default_value="true", description="rectify image_raw with image_proc"),
        DeclareLaunchArgument("rviz", default_value="true", description="open RViz with config/dares.rviz"),
        DeclareLaunchArgument("odometry", default_value="false",
                              description="camera odometry from the pose network (needs pose_weights)"),
        DeclareLaunchArgument("pose_weights", default_value="",
                              description="pose network: pose_encoder.pth + pose.pth folder, a dares train run "
                                          "or a pose .safetensors"),
        DeclareLaunchArgument("fusion", default_value="false", description="fuse depth over time into map/points"),
        DeclareLaunchArgument("mesh", default_value="false",
                              description="with fusion: also map/mesh, the fused surface as an RViz triangle Marker"),
        DeclareLaunchArgument("camera_pose", default_value="/dares/camera_pose",
                              description="PoseStamped topic the fusion may use instead of odom (e.g. kinematics)"),
        DeclareLaunchArgument("mask", default_value="",
                              description="with fusion: a mask topic (mono8/8UC1, nonzero on instruments) whose "
                                          "pixels stay out of the map"),
        *rectifiers,
        depth_node("/image_rect", IfCondition(rectify)),
        depth_node("/image_raw", UnlessCondition(rectify)),
        odometry,
        fusion,
        Node(package="rviz2", executable="rviz2", name="rviz2", arguments=["-d", rviz_config],
             condition=IfCondition(LaunchConfiguration("rviz"))),
    ])

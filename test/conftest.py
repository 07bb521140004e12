"""Test-wide settings (DDS on loopback only, the large-data Fast DDS profile, a ROS domain of this test
session's own) and the shared fixtures."""

import os

import pytest
import torch
from helpers import TINY

from dares_core.data.synthetic import SynthConfig, generate, sequence_folder
from dares_core.model.depth_net import DaresDepthNet, DepthNetConfig
from dares_core.model.weights import save_depth_net
from dares_ros.graph import prepare_dds

prepare_dds(local_only=True)
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """(weights, sequence): a randomly initialised tiny DARES network saved as .safetensors, and a 3-frame
    64x48 synthetic keyframe folder (read only: tests write elsewhere)."""
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    weights = root / "tiny.safetensors"
    save_depth_net(DaresDepthNet(DepthNetConfig.dares("tiny", hf_config=TINY)), weights)
    scenes = generate(SynthConfig(width=64, height=48, frames=3, sequences=1), root / "scenes")
    return weights, scenes / sequence_folder(0)

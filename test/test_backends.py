"""Deployment backends: ONNX Runtime on the exported graph gives torch's depth, its graph is cached and rebuilt when
unreadable, a missing provider is named and the next one used, a backend whose output is not torch's is refused for
torch, and bf16 on a CPU that only emulates it is said."""

import torch
from helpers import TINY

from dares_core.backends import OnnxRuntimeNetwork, depth_graph, graph_key, parse_providers
from dares_core.inference import DepthPredictor
from dares_core.model.depth_net import DaresDepthNet, DepthNetConfig


def tiny_net(seed: int = 0) -> DaresDepthNet:
    torch.manual_seed(seed)
    net = DaresDepthNet(DepthNetConfig.dares("tiny", hf_config=TINY))
    with torch.no_grad():  # trained-looking adapters, so that two seeds give two networks
        for name, p in net.named_parameters():
            if "lora_B" in name or "head" in name:
                p.normal_(0, 0.05)
    return net.eval()


IMAGES = torch.randint(0, 256, (2, 56, 70, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def test_onnxruntime_gives_torchs_depth_from_a_graph_exported_once(tmp_path, monkeypatch):
    monkeypatch.setenv("DARES_CACHE", str(tmp_path / "cache"))
    said = []
    ours = DepthPredictor(tiny_net(), (56, 70), backend="onnxruntime", providers=("cpu",), batch_size=2,
                          say=said.append)
    assert ours.backend == "onnxruntime CPUExecutionProvider" and ours.backend_check < 1e-4
    assert any("exported the network to ONNX once" in line for line in said)
    reference = DepthPredictor(tiny_net(), (56, 70)).predict(IMAGES).depth
    depth = ours.predict(IMAGES).depth
    assert torch.allclose(depth, reference, rtol=1e-4, atol=0)
    said.clear()
    again = DepthPredictor(tiny_net(), (56, 70), backend="onnxruntime", providers=("cpu",), batch_size=2,
                           say=said.append)
    assert again.backend == ours.backend and not any("exported" in line for line in said)  # the cached graph
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 1


def test_an_unreadable_cached_graph_is_exported_again_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("DARES_CACHE", str(tmp_path))
    graph = depth_graph(tiny_net(), 56, 70)
    path = tmp_path / "onnx" / f"{graph_key(graph, 1, 'fp32')}.onnx"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a graph")
    said = []
    OnnxRuntimeNetwork(graph, 1, "fp32", ("cpu",), say=said.append)
    assert any(f"the cached ONNX graph {path} is unreadable" in line and "exported again" in line for line in said)
    assert path.stat().st_size > 1000


def test_a_missing_provider_is_named_and_the_next_one_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("DARES_CACHE", str(tmp_path))
    said = []
    network = OnnxRuntimeNetwork(depth_graph(tiny_net(), 56, 70), 1, "fp32", ("tensorrt", "cpu"), say=said.append)
    assert network.provider == "CPUExecutionProvider"
    assert [line for line in said if "provider (" in line] == [
        "onnxruntime: the tensorrt provider (TensorrtExecutionProvider) is not in this install; trying the next"]
    assert parse_providers("tensorrt, cpu") == ("tensorrt", "cpu")


def test_a_backend_whose_output_is_not_torchs_is_refused_for_torch(tmp_path, monkeypatch):
    """A wrong engine, as TensorRT upgrades have given peers' users: here the cache holds another network's graph
    under this one's key. The check at start catches it, says so in one line with the difference, and torch runs."""
    import shutil

    monkeypatch.setenv("DARES_CACHE", str(tmp_path))
    net, other = tiny_net(0).merge_lora(), tiny_net(1).merge_lora()  # the key is of the merged network
    wrong = OnnxRuntimeNetwork(depth_graph(other, 56, 70), 1, "fp32", ("cpu",), say=lambda line: None)
    shutil.copy(wrong.path, tmp_path / "onnx" / f"{graph_key(depth_graph(net, 56, 70), 1, 'fp32')}.onnx")
    said = []
    predictor = DepthPredictor(net, (56, 70), backend="onnxruntime", providers=("cpu",), say=said.append)
    assert predictor.backend == "torch" and predictor.backend_check > 1e-3
    assert any("onnxruntime CPUExecutionProvider refused" in line and "running on torch" in line for line in said)
    unchecked = DepthPredictor(tiny_net(0), (56, 70), backend="onnxruntime", providers=("cpu",), check=False,
                               say=said.append)
    assert unchecked.backend.startswith("onnxruntime")  # the check is what refuses it


def test_reduced_precision_on_cpu_providers_is_refused_not_mislabelled(tmp_path, monkeypatch):
    monkeypatch.setenv("DARES_CACHE", str(tmp_path))
    said = []
    predictor = DepthPredictor(tiny_net(), (56, 70), precision="fp16", backend="onnxruntime", providers=("cpu",),
                               say=said.append)
    assert predictor.backend == "torch"
    assert any("computes the graph in fp32, not fp16" in line for line in said)


def test_bf16_on_a_cpu_that_emulates_it_is_said_in_one_line(monkeypatch):
    import dares_core.inference as inference

    said = []
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: False)
    DepthPredictor(tiny_net(), (56, 70), precision="bf16", say=said.append)
    assert len(said) == 1 and "bf16 is emulated on this CPU" in said[0] and "slower than fp32" in said[0]
    said.clear()
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: True)
    DepthPredictor(tiny_net(), (56, 70), precision="bf16", say=said.append)
    assert not said


def test_infer_and_bag_infer_run_on_onnxruntime_with_torchs_depth(tiny_model, tmp_path, monkeypatch, capsys):
    """The deployment path's backend reaches the commands: `dares infer --backend onnxruntime` writes torch's depth
    files, saying which provider ran and how far it was from torch; `dares bag infer` likewise."""
    import numpy as np
    from sensor_msgs.msg import Image

    from dares_core.cli import main
    from dares_ros.conversions import read_depth_image
    from dares_ros.tools.bag import infer_bag, read_messages, write_sequence_bag

    monkeypatch.setenv("DARES_CACHE", str(tmp_path / "cache"))
    weights, seq = tiny_model
    frames = ["--weights", str(weights), "--input", str(seq / "image_02" / "data"), "--height", "28", "--width", "42"]
    assert main(["infer", *frames, "--out", str(tmp_path / "torch")]) == 0
    assert main(["infer", *frames, "--out", str(tmp_path / "onnx"), "--backend", "onnxruntime",
                 "--onnx-providers", "cpu"]) == 0
    assert "onnxruntime CPUExecutionProvider: checked against torch" in capsys.readouterr().err
    for name in ("0000000001", "0000000003"):
        np.testing.assert_allclose(np.load(tmp_path / "onnx" / f"{name}_depth.npy"),
                                   np.load(tmp_path / "torch" / f"{name}_depth.npy"), rtol=1e-4)
    bag = tmp_path / "in.bag"
    write_sequence_bag(seq, bag)
    for backend in ("torch", "onnxruntime"):
        infer_bag(bag, weights, tmp_path / f"{backend}.bag", input_size=(28, 42), backend=backend,
                  providers=("cpu",))
    depths = [[read_depth_image(m) for m in read_messages(tmp_path / f"{b}.bag", "/dares/depth/image", Image)]
              for b in ("torch", "onnxruntime")]
    assert len(depths[0]) == 3
    np.testing.assert_allclose(np.stack(depths[1]), np.stack(depths[0]), rtol=1e-4)


def test_the_pose_network_runs_on_onnxruntime_with_torchs_poses_and_a_wrong_graph_is_refused(tmp_path, monkeypatch):
    """The odometry node's network (and `dares infer --temporal`'s): PoseRunner on onnxruntime gives torch's
    relative poses; another pose network's graph under its key is refused for torch, in one line."""
    import shutil

    import numpy as np

    from dares_core.backends import Graph
    from dares_core.model.pose_net import PoseDecoder, ResnetEncoder
    from dares_core.pose import PoseNet, PoseRunner

    monkeypatch.setenv("DARES_CACHE", str(tmp_path))

    def pose_net(seed: int) -> PoseNet:
        torch.manual_seed(seed)
        encoder = ResnetEncoder(2, width=8)
        return PoseNet(encoder, PoseDecoder(encoder.num_ch_enc, hidden=16)).eval()

    pairs = torch.rand(3, 6, 64, 80, generator=torch.Generator().manual_seed(2))
    said = []
    torch_poses = PoseRunner(pose_net(0), (64, 80), torch.device("cpu"))(pairs)
    ours = PoseRunner(pose_net(0), (64, 80), torch.device("cpu"), "onnxruntime", ("cpu",), say=said.append)
    assert ours.backend == "onnxruntime CPUExecutionProvider" and ours.backend_check < 1e-3
    assert any("checked against torch" in line for line in said)
    np.testing.assert_allclose(ours(pairs), torch_poses, atol=1e-6)
    key = graph_key(Graph(pose_net(0), torch.rand(2, 6, 64, 80), ("pairs",), ("axisangle", "translation")), 1,
                    "fp32")
    shutil.copy(PoseRunner(pose_net(1), (64, 80), torch.device("cpu"), "onnxruntime", ("cpu",),
                           say=lambda line: None)._network.path, tmp_path / "onnx" / f"{key}.onnx")
    said.clear()
    refused = PoseRunner(pose_net(0), (64, 80), torch.device("cpu"), "onnxruntime", ("cpu",), say=said.append)
    assert refused.backend == "torch" and refused.backend_check > 1e-3
    assert any("refused" in line and "running on torch" in line for line in said)


def test_official_dares_weights_run_on_onnxruntime_with_torchs_depth(tmp_path, monkeypatch):
    """The official DARES checkpoint layout (depth_model.pth of ViT-S with Vector-LoRA), as users bring it."""
    from checkpoints import to_official_dares

    from dares_core.model.weights import load_depth_net

    monkeypatch.setenv("DARES_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    net = DaresDepthNet(DepthNetConfig.dares("vits"))
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    torch.save(to_official_dares(net.state_dict()), tmp_path / "depth_model.pth")
    said = []
    ours = DepthPredictor(load_depth_net(tmp_path / "depth_model.pth"), (56, 70), backend="onnxruntime",
                          providers=("cpu",), say=said.append)
    assert ours.backend == "onnxruntime CPUExecutionProvider", said
    reference = DepthPredictor(load_depth_net(tmp_path / "depth_model.pth"), (56, 70)).predict(IMAGES).depth
    assert torch.allclose(ours.predict(IMAGES).depth, reference, rtol=1e-3, atol=0)

"""Options and printing that several `dares` commands share: checked number types, the weights and network
options, the recording options of `prepare-*`, and the progress bar."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..names import BACKENDS, PRECISIONS


def number(kind: type, minimum: float = 0.0, inclusive: bool = False, maximum: float = math.inf):
    """An argparse type for a finite `kind` (int or float) above `minimum` (or equal, with inclusive) and at most
    `maximum`: 0, -5, nan, inf and sizes beyond any machine stop at parsing with one line naming the option."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive) or value > maximum:
            bound = f" and <= {maximum:g}" if math.isfinite(maximum) else ""
            raise argparse.ArgumentTypeError(f"{text} is out of range: give a number {'>=' if inclusive else '>'} "
                                             f"{minimum:g}{bound}")
        return value
    return parse


POSITIVE_INT, POSITIVE_FLOAT, NON_NEGATIVE_FLOAT = number(int), number(float), number(float, inclusive=True)
IMAGE_SIDE = number(int, maximum=4096)  # pixels of a network input or a generated image
SHARE = number(float, inclusive=True, maximum=0.95)  # a blending weight: 0 (off) to 0.95
SEED = number(int, inclusive=True, maximum=2**32 - 1)  # a random seed: 0 to 2^32-1, as numpy takes it
SCENE_SIDE = number(int, minimum=16, inclusive=True, maximum=4096)  # pixels of a generated scene (dares synth's)

FORCE_INTO_FOLDER = ("write into an --out that also holds files of other origin (they are kept); the command's own "
                     "earlier outputs there are replaced without it")


def progress_bar(total: int | None, desc: str):
    """The progress bar every long command shows (frames; total None when unknown)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", dynamic_ncols=True)


def add_weights_options(p, required: bool = True) -> None:
    """--weights and --base-weights, as every command that loads a depth network takes them."""
    p.add_argument("--weights", type=Path, required=required, default=None,
                   help="checkpoint: HF Depth-Anything-V2 folder, official DAv2 .pth, DARES depth_model.pth or dares "
                        ".safetensors")
    p.add_argument("--base-weights", type=Path, default=None,
                   help="Depth Anything V2 weights under an adapter-only .safetensors checkpoint")


def add_network_options(p, compute: bool = True) -> None:
    """Network input size (and with compute, --device and --precision)."""
    p.add_argument("--height", type=IMAGE_SIDE, default=None,
                   help="network input height (default: the size the checkpoint was trained at, else 256)")
    p.add_argument("--width", type=IMAGE_SIDE, default=None,
                   help="network input width (default: the size the checkpoint was trained at, else 320)")
    if compute:
        p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
        p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="compute precision")
        p.add_argument("--compile", action="store_true",
                       help="torch.compile the network first (faster per frame; ViT-S compiles in 30-40 s on a "
                            "2-core CPU)")
        add_backend_options(p)


def add_backend_options(p, default: str = "torch") -> None:
    """--backend and --onnx-providers: where the network runs (dares_core.backends)."""
    p.add_argument("--backend", choices=BACKENDS, default=default,
                   help="where the network runs: torch, or onnxruntime on the exported graph (cached; checked "
                        "against torch on a probe image at start, and refused for torch above the tolerance; default "
                        f"{default})")
    p.add_argument("--onnx-providers", default="tensorrt,cuda,cpu",
                   help="with --backend onnxruntime: its execution providers in the order to try them (default "
                        "tensorrt,cuda,cpu; a missing one is named and the next tried)")


def backend_options(args: argparse.Namespace) -> dict:
    """DepthPredictor's backend and providers from --backend and --onnx-providers."""
    from ..backends import parse_providers

    return {"backend": args.backend, "providers": parse_providers(args.onnx_providers)}


def add_input_size_options(p) -> None:
    """--input-height and --input-width of the network (ROS-side commands, whose --width/--height are the
    camera's); by default the size the checkpoint was trained at."""
    p.add_argument("--input-height", type=IMAGE_SIDE, default=None,
                   help="network input height (default: the checkpoint's training size, else 256)")
    p.add_argument("--input-width", type=IMAGE_SIDE, default=None,
                   help="network input width (default: the checkpoint's training size, else 320)")


def add_recording_options(p) -> None:
    """--out, --name, --min-motion, --block, --val-every and --force of `dares prepare-bag` and `prepare-video`."""
    p.add_argument("--out", type=Path, required=True, help="data root: the recording goes to OUT/NAME")
    p.add_argument("--name", default=None, help="the recording's folder name (default: the source's name)")
    p.add_argument("--min-motion", type=POSITIVE_FLOAT, default=2.0,
                   help="pixels of median image motion a frame needs since the last kept one (default 2)")
    p.add_argument("--block", type=POSITIVE_INT, default=50, help="frames per split block (default 50)")
    p.add_argument("--val-every", type=POSITIVE_INT, default=5,
                   help="every Nth block is validation (default 5: 20 %%)")
    p.add_argument("--force", action="store_true", help="prepare a recording of this name again")


def recording_options(args: argparse.Namespace):
    from ..data.recording import RecordingOptions

    return RecordingOptions(args.min_motion, args.block, args.val_every)


def print_recording(report, data: Path, note: str = "") -> None:
    """What `dares prepare-*` kept, and how to train on it."""
    print(report.summary() + note)
    print(f"train on it: dares train --data {data} --set split_dir={data / 'splits' / 'own'} --set "
          "intrinsics=calibration")

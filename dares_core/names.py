"""Choice lists the command line shows before anything heavy is imported (no torch), so `dares --help` and
argument errors answer at once; the modules that act on them import them from here."""

EXPORT_FORMATS = ("onnx", "pt2", "safetensors")
PRECISIONS = ("fp32", "fp16", "bf16")  # compute precision of inference, training and the node
ENCODERS = ("vits", "vitb", "vitl")  # Depth Anything V2 sizes a network can be built at with random weights
REPROJECTIONS = ("ms_ssim", "ssim", "l1")  # the photometric error of training
BACKENDS = ("torch", "onnxruntime")  # where the depth network runs (dares_core.backends)
STEREO_LAYOUTS = ("side-by-side", "over-under", "mono")  # how a video holds the eyes (dares prepare-video)
STEREO_MATCHERS = ("sparse", "sgbm")  # how the node's stereo scale matches a pair (stereo_scale.LiveStereoScale)
INTRINSICS = ("official", "calibration")  # the K training warps with: SCARED's (DARES), or each sequence's own
# the depth stabiliser's defaults (dares_core.temporal), chosen on synthetic seeds 41-50 and measured on unseen ones
# (docs/temporal.md)
TEMPORAL_WEIGHT, TEMPORAL_TOLERANCE, TEMPORAL_SCALE_WEIGHT = 0.9, 0.3, 0.5

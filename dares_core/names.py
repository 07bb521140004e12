"""Choice lists the command line shows before anything heavy is imported (no torch), so `dares --help` and
argument errors answer at once; the modules that act on them import them from here."""

EXPORT_FORMATS = ("onnx", "pt2", "safetensors")

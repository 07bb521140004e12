"""`dares eval`: SCARED depth metrics by the official protocol, of saved disparities or of a model on a data folder;
or pose ATE and RE."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import DaresError
from .options import FORCE_INTO_FOLDER, add_network_options, add_weights_options, backend_options, progress_bar

NAME = "eval"
HELP = "SCARED depth metrics (official protocol) or pose ATE"
DESCRIPTION = "Evaluate official-format disparity arrays, a model on a data folder, or poses."


def add_arguments(p) -> None:
    p.add_argument("--pred-disps", type=Path, default=None,
                   help="(N,H,W) disparities (official --save_pred_disps .npy)")
    p.add_argument("--gt-depths", type=Path, default=None, help="gt_depths.npz (official export_gt_depth.py)")
    p.add_argument("--pred-confidence", type=Path, default=None,
                   help="with --pred-disps: (N,H,W) per-pixel confidences in [0,1] of the same frames (.npy, e.g. "
                        "the stacked NAME_confidence.npy of dares infer --save-confidence): their AUSE is reported. "
                        "--weights --data reports the model's own confidence's without it")
    add_weights_options(p, required=False)
    add_network_options(p)
    p.add_argument("--data", type=Path, default=None, help="data root holding datasetN/keyframeM (with --weights)")
    p.add_argument("--split-dir", type=Path, default=None,
                   help="folder with test_files.txt and gt_depths.npz (default DATA/splits/endovis, or the only "
                        "folder under DATA/splits)")
    p.add_argument("--no-median-scaling", action="store_true",
                   help="predictions are metric: no per-frame median scaling")
    p.add_argument("--pred-poses", type=Path, default=None, help="predicted relative poses (.npz 'data', (N,4,4))")
    p.add_argument("--gt-poses", type=Path, default=None, help="ground-truth relative poses (gt_poses_sq*.npz)")
    p.add_argument("--out", type=Path, default=Path("dares_eval"),
                   help="folder for metrics.json and per_frame.csv (default ./dares_eval; an earlier evaluation's "
                        "files there are replaced)")
    p.add_argument("--force", action="store_true", help=FORCE_INTO_FOLDER)


def run(args: argparse.Namespace) -> None:
    from ..evaluate import (
        evaluate_confidence,
        evaluate_depth,
        evaluate_pose,
        load_array,
        load_npz_data,
        write_depth_report,
    )
    from ..files import EVAL_ENTRIES, check_output_folder

    if args.pred_poses or args.gt_poses:
        if args.pred_confidence is not None:
            raise DaresError("--pred-confidence scores depth: give it with --pred-disps, not with pose evaluation")
        if not (args.pred_poses and args.gt_poses):
            raise DaresError("pose evaluation needs both --pred-poses and --gt-poses")
        poses = [load_npz_data(path, what, "(N,4,4) relative poses") for path, what in
                 ((args.pred_poses, "predicted poses"), (args.gt_poses, "ground-truth poses"))]
        result = evaluate_pose(*poses)
        print(f"ATE {result['ate_mean']:.4f} (std {result['ate_std']:.4f}), RE {result['re_mean']:.4f} (std "
              f"{result['re_std']:.4f})")
        return
    check_output_folder(args.out, args.force, ours=EVAL_ENTRIES)  # an earlier evaluation's files are replaced
    temporal = {}  # TAE, where the split's sequences have camera poses (--weights with --data)
    if args.pred_disps is not None:
        if not args.pred_disps.is_file():
            raise DaresError(f"predicted disparities {args.pred_disps} not found")
        if args.gt_depths is None:
            raise DaresError("--pred-disps needs --gt-depths (the gt_depths.npz of the same split)")
        disps = load_array(args.pred_disps, "predicted disparities", "(N,H,W) disparities")
        gt = load_npz_data(args.gt_depths, "ground-truth depths", "(N,H,W) depths in mm")
        source = {"pred_disps": str(args.pred_disps)}
        confidences = None if args.pred_confidence is None else load_array(args.pred_confidence, "confidences",
                                                                            "(N,H,W) confidences")
    elif args.pred_confidence is not None:
        raise DaresError("--pred-confidence goes with --pred-disps; with --weights the model's own confidence is "
                         "scored")
    else:
        disps, gt, source, temporal, confidences = _predict_split(args)
    evaluation = evaluate_depth(disps, gt, median_scaling=not args.no_median_scaling)
    print(evaluation.table())
    scores = None
    if confidences is not None:
        scores = evaluate_confidence(disps, confidences, gt, median_scaling=not args.no_median_scaling)
        scores.pop("per_frame")
        print(f"confidence: AUSE {scores['ause']:.4f}, random's {scores['ause_random']:.4f}: "
              f"{scores['ause_ratio']:.2f} of random (1 is chance, 0 the oracle)")
    if temporal:
        print(f"TAE {temporal['tae']:.4f}" + (f" (tissue {temporal['tae_tissue']:.4f})" if "tae_tissue" in temporal
                                               else "")
              + f"; the ground truth's own, the floor: {temporal['tae_floor']:.4f}"
              + (f" (tissue {temporal['tae_floor_tissue']:.4f})" if "tae_floor_tissue" in temporal else "")
              + f"; over {temporal['sequences']} sequence(s), each scaled once")
    write_depth_report(evaluation, args.out, {**source, "median_scaling": not args.no_median_scaling}, temporal,
                       scores)
    print(f"wrote {args.out / 'metrics.json'} and {args.out / 'per_frame.csv'}")


def _predict_split(args: argparse.Namespace):
    """(disparities, ground truth, source, TAE, confidences) of --weights over the test split of --data."""
    from ..data.scared import default_split_dir
    from ..evaluate import load_npz_data, predict_split_disparities, split_temporal_errors
    from ..inference import DepthPredictor
    from ..model.weights import load_depth_net

    if args.weights is None or args.data is None:
        raise DaresError("evaluate either --pred-disps with --gt-depths, or --weights with --data")
    split_dir = args.split_dir or default_split_dir(args.data)
    predictor = DepthPredictor(load_depth_net(args.weights, base_weights=args.base_weights),
                               (args.height, args.width), args.device, args.precision, compile=args.compile,
                               **backend_options(args))
    gt = load_npz_data(args.gt_depths or split_dir / "gt_depths.npz", "ground-truth depths", "(N,H,W) depths in mm")
    confidences = []
    with progress_bar(len(gt), "predict") as bar:
        disps = predict_split_disparities(predictor, args.data, split_dir / "test_files.txt", progress=bar.update,
                                          confidences=confidences)
    source = {"weights": str(args.weights), "data": str(args.data), "split": str(split_dir),
              "input_size": list(predictor.size)}
    return (disps, gt, source, split_temporal_errors(args.data, split_dir / "test_files.txt", disps, gt),
            confidences)

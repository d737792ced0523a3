"""Train (again) only the second look of a finished model: add_verifier on its detector, as `train`
runs it after the detector, with a time budget or for the verifier's own epochs.

    python -m bench.verifier MODEL_DIR DATASET [--seconds S]

MODEL_DIR's verifier.pth, config.json and metrics.json are replaced; its detector stays. Then
`python -m bench.field --model MODEL_DIR [--one-stage]` scores both stages on the field set.
"""

import argparse
import json
from pathlib import Path

from stampcheck.device import pick_device
from stampcheck.train.data import stamp_dataloaders
from stampcheck.train.learner import TrainConfig, add_verifier


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--seconds", type=float, default=None, help="the verifier's budget (default: its EPOCHS)")
    args = ap.parse_args()
    config = json.loads((args.model / "config.json").read_text())
    cfg = TrainConfig(**{k: v for k, v in config["train"].items() if k in TrainConfig.__dataclass_fields__})
    device = pick_device(cfg.device)
    dls, classes = stamp_dataloaders(args.dataset, cfg.size, cfg.bs, 0, device, False, None, print, cfg.valid_images)
    metrics = add_verifier(args.model, args.dataset, dls, classes, device, args.seconds, cfg, print)
    print(json.dumps({"one_stage": metrics.get("one_stage"), "two_stages": metrics.get("final")}, indent=1))


if __name__ == "__main__":
    main()

"""Write the StereoSet splits of the recorded refinement run: a training slice and a validation slice.

The training slice is drawn from the 320 training rows the distilled ruleset was extracted
from; the validation slice from the other rows of train.jsonl, so that no row of dev.jsonl is
used. Usage: python scripts/refine_splits.py DATA_DIR OUT_DIR
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

TRAIN_ROWS = 32
VALIDATION_ROWS = 96
SEED = 20261204


def main() -> None:
    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    rows = (data / "stereoset" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    numbers = Path("rulesets/teacher/stereoset/sampled_line_numbers.json").read_text(encoding="utf-8")
    extracted = sorted(json.loads(numbers))
    others = [number for number in range(1, len(rows) + 1) if number not in set(extracted)]
    generator = random.Random(SEED)
    train = sorted(generator.sample(extracted, TRAIN_ROWS))
    validation = sorted(generator.sample(others, VALIDATION_ROWS))
    out.mkdir(parents=True, exist_ok=True)
    for name, chosen in (("train_slice.jsonl", train), ("validation_slice.jsonl", validation)):
        (out / name).write_text("".join(rows[number - 1] + "\n" for number in chosen), encoding="utf-8")


if __name__ == "__main__":
    main()

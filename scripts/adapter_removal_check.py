"""Score a validation set with the base model, with an adapter applied, and after removing it.

The base must come back bit-identical (same state-dict fingerprint, same scores). Used for the
"does fine-tuning wreck the original task" check in docs/finetune.md::

    python scripts/adapter_removal_check.py --model zeus-default \
        --adapter runs/finetune/coelho-1shot/adapter --dataset visn-val --scale 0.5
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="zeus-default")
    p.add_argument("--adapter", required=True)
    p.add_argument("--dataset", default="visn-val")
    p.add_argument("--scale", type=float, default=0.5)
    p.add_argument("--data-root", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("-o", "--out", default=None, help="write the result JSON here too")
    args = p.parse_args(argv)

    import torch

    from zeusseg.adapters import base_fingerprint, load_adapter, remove_adapter
    from zeusseg.inference.zeus_segmenter import load_zeus
    from zeusseg.modeling.text_embedder import PromptEmbedder
    from zeusseg.training.validate import validate
    from zeusseg.training.validation_set import ValidationSet

    torch.set_num_threads(args.threads)
    base = load_zeus(args.model)
    base.zeus_model_id = args.model
    items = ValidationSet({"validation": {args.dataset: {"scale": args.scale}},
                           "data_root": args.data_root})
    embedder = PromptEmbedder(base.zeus_cfg.text_cfg.encoder)
    result = {"model": args.model, "adapter": args.adapter, "dataset": args.dataset,
              "images": len(items)}
    t = time.time()
    digest = base_fingerprint(base)
    result["before"] = validate(base, items, embedder)
    peft_model = load_adapter(base, args.adapter)
    result["with_adapter"] = validate(peft_model, items, embedder)
    restored = remove_adapter(peft_model)
    result["after_removal"] = validate(restored, items, embedder)
    result["fingerprint_identical"] = base_fingerprint(restored) == digest
    result["scores_identical"] = result["after_removal"] == result["before"]
    result["seconds"] = round(time.time() - t, 1)
    text = json.dumps(result, indent=2)
    sys.stdout.write(text + "\n")
    if args.out:
        from pathlib import Path

        Path(args.out).write_text(text)
    return 0 if result["fingerprint_identical"] and result["scores_identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m zeusseg.finetune`` / ``accelerate launch -m zeusseg.finetune --config ...``."""

from zeusseg.training.finetune import main

if __name__ == "__main__":
    raise SystemExit(main())

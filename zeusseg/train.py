"""``python -m zeusseg.train`` / ``accelerate launch -m zeusseg.train --config ...``."""

from zeusseg.training.train import main

if __name__ == "__main__":
    raise SystemExit(main())

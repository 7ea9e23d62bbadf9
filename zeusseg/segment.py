"""``python -m zeusseg.segment`` / ``accelerate launch -m zeusseg.segment IMG_DIR -p PROMPT``."""

from zeusseg.inference.folder_run import main

if __name__ == "__main__":
    raise SystemExit(main())

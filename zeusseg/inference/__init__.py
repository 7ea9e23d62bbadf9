"""Inference: the Zeus pipeline and everything a ``zeusseg segment`` run does with its output.

- ``zeus_segmenter``: image -> instruction -> model -> instances (``segment_image``, ``load_zeus``);
- ``instance_segmentation``: seeded-watershed decoding of the dense heads;
- ``class_assignment``: one class per instance from the prompts (or the class head);
- ``prompt_decoding``: point and box prompts;
- ``interactive``: editing one image's instances (napari, notebooks);
- ``image_loader``: images of a folder run, read ahead in a worker;
- ``folder_outputs``: what a folder run takes and writes (methods, formats, report, output
  folder);
- ``folder_loop``: the per-process loop: segment the images in order, write their outputs;
- ``folder_run``: ``segment_paths`` / ``run_segment``, one process;
- ``parallel_run``: the same split over the processes of ``accelerate launch``.

``zeusseg.predictor`` (the image-embedding cache) stays at the top, as in segment-anything.
Nothing here imports ``zeusseg.training``.
"""

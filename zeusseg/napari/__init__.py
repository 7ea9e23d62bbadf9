"""napari plugin: type a prompt, get a Labels layer, refine with clicks, export, fine-tune.

Declared the npe2 way: ``napari.yaml`` in this folder, found through the ``napari.manifest``
entry point (``pip install zeusseg[napari]``). Modules: ``widget`` (the dock widget),
``refine`` (click/box editing), ``session`` (model, segmentation, export; no Qt), ``adapt``
(one-image LoRA run), ``layers`` (layer <-> zeusseg data), ``reader`` (label TIFF reader).
Importing this package imports neither napari nor Qt; it orders triton before the OpenGL
driver (``llvm_guard``).
"""

from zeusseg.napari.llvm_guard import guard_triton

guard_triton()

"""The data steps: synthesize, downscale-images, compute-stats.

Torch-free, so these stages start fast and stay small. Modules, in pipeline order:

* ``synthetic``  the embedded stand-in for EyePACS (synthesize)
* ``layout``     the lab's folder layout: image names and grades from four CSVs
* ``sources``    ``data.source``: synthetic, lab or kaggle folder -> splits
* ``splits``     patients, patient-level splits, leakage
* ``checks``     bad input: problems found, ``data.on_bad_input`` stop | skip
* ``photos``     reading any photo upright, cropping the eye, pad, resize
* ``downscale``  the downscaled set: checked splits + uint8 arrays (downscale-images)
* ``arrays``     the ``.npy`` image arrays: streamed writing and reading
* ``stats``      exact mean/std, class counts and weights (compute-stats)
"""

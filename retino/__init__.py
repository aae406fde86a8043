"""retino: grade diabetic retinopathy (0-4) from fundus photographs with ResNet-18/50.

The pipeline stages in ``stages/`` only orchestrate; everything they do lives here,
split by concern: ``params`` (typed, validated settings), ``layout`` (the lab's CSV
folder layout), ``synthetic`` (the embedded stand-in dataset), ``preprocess``
(crop/pad/resize), ``stats``, ``dataset``, ``models``, ``training``, ``evaluation``,
``plotting`` and ``atomic`` (crash-safe file writes).
"""

GRADES = ("none", "mild", "moderate", "severe", "proliferative")
NUM_CLASS = len(GRADES)

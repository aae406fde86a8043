"""The report step: evaluate@<arch>-<init> and compare.

* ``evaluation``  test-set predictions and every metric of one model
* ``figures``     matplotlib figures: confusion heatmap, Result Comparison
* ``comparison``  the summary over all models that compare writes and prints
"""

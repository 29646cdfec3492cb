"""Scoring: COCO OKS AP through pycocotools with each keypoint set's sigmas, PCK and PCKh, and the validation loop
that runs an estimator over a ground truth."""

"""Labels for free: keypoints a dataset lacks filled in by a model that predicts them (pseudo-labels, and the measured
protocol that hides known keypoints to score the fill), and mappings between keypoint sets learnt from people
labelled in both (translation). Built on inference and evaluation; nothing here imports the training side."""

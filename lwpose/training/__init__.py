"""Training: the loop behind train.py (losses, AMP, DistributedDataParallel, checkpoints, validation), what a run
starts from (networks, optimiser groups, schedules, processes), and growing a model into a larger keypoint set."""

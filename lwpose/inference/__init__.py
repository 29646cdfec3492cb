"""Image in, people out: the estimator, the grouping kernels, the engines (PyTorch, ONNX Runtime, OpenVINO), video
reading and writing, tracking, smoothing and drawing. Torch is imported only by the PyTorch engine and by reading a
checkpoint, so running an ONNX export or an OpenVINO IR needs neither torch nor the training side."""

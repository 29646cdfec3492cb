"""Models in and out: lwpose checkpoints, ONNX export, OpenVINO IR reading, and importers of the reference's and
Open Model Zoo's weights."""

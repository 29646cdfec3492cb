"""Facts of the network that every part shares, with no dependency at all (inference without torch reads them).

The network sees a BGR image normalised as `(pixel - PIXEL_MEAN) * PIXEL_SCALE` and predicts maps at 1/STRIDE of
its input size (lwpose/codec.py holds how a map cell lines up with input pixels).
"""

STRIDE = 8
PIXEL_MEAN = 128.0
PIXEL_SCALE = 1.0 / 256.0

"""Read the weights of an OpenVINO IR (v10/v11 `.xml` + `.bin`) with numpy and the standard library.

Only constant sub-graphs are evaluated: a convolution's weights may be stored as f32/f16, or as integers behind
Convert -> (Subtract) -> Multiply, or behind FakeQuantize (Intel's INT8 models). Activations' FakeQuantize
layers are not weights and are left alone, so what comes out is a float network.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import numpy as np

from lwpose.errors import LwposeError

_ELEMENT_TYPES = {
    "f32": np.float32, "f16": np.float16, "f64": np.float64,
    "i8": np.int8, "u8": np.uint8, "i16": np.int16, "u16": np.uint16,
    "i32": np.int32, "u32": np.uint32, "i64": np.int64, "u64": np.uint64, "boolean": np.bool_,
}


class IRError(LwposeError, ValueError):
    """An IR that cannot be read; the message names the file and the layer."""


@dataclass
class Layer:
    id: str
    name: str
    type: str
    data: dict
    inputs: list[str] = field(default_factory=list)  # producer layer ids, by input port
    output_shapes: list[tuple[int, ...]] = field(default_factory=list)


@dataclass
class ConvolutionWeights:
    name: str  # the layer name without OpenVINO's '/WithoutBiases' suffix
    type: str  # Convolution or GroupConvolution
    weight: np.ndarray  # float32, (out, in/groups, kh, kw)
    bias: np.ndarray | None
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]
    input_layer: str  # producer of the data input (for tracing the graph)


class OpenVinoIR:
    def __init__(self, xml_path: str, bin_path: str | None = None):
        self.xml_path = xml_path
        self.bin_path = bin_path or os.path.splitext(xml_path)[0] + ".bin"
        try:
            root = ET.parse(xml_path).getroot()
        except (ET.ParseError, OSError) as e:
            raise IRError(f"{xml_path}: cannot read the IR's XML ({e})") from None
        if root.tag != "net" or root.find("layers") is None or root.find("edges") is None:
            raise IRError(f"{xml_path}: not an OpenVINO IR (expected <net> with <layers> and <edges>)")
        try:
            self._weights = np.fromfile(self.bin_path, dtype=np.uint8)
        except OSError as e:
            raise IRError(f"{xml_path}: cannot read the weights file {self.bin_path} ({e})") from None
        self.layers: dict[str, Layer] = {}
        for element in root.find("layers"):
            data_element = element.find("data")
            output_shapes = []
            output = element.find("output")
            if output is not None:
                for port in output:
                    output_shapes.append(tuple(int(d.text) for d in port.findall("dim")))
            self.layers[element.get("id")] = Layer(
                id=element.get("id"), name=element.get("name", ""), type=element.get("type", ""),
                data=dict(data_element.attrib) if data_element is not None else {},
                output_shapes=output_shapes)
        inputs: dict[str, list[tuple[int, str]]] = {}
        for edge in root.find("edges"):
            inputs.setdefault(edge.get("to-layer"), []).append((int(edge.get("to-port")), edge.get("from-layer")))
        for layer_id, ports in inputs.items():
            if layer_id not in self.layers:
                raise IRError(f"{xml_path}: an edge points to unknown layer id {layer_id}")
            self.layers[layer_id].inputs = [src for _, src in sorted(ports)]
        self._constants: dict[str, np.ndarray | None] = {}
        self.consumers: dict[str, list[str]] = {}
        for layer in self.layers.values():
            for src in layer.inputs:
                self.consumers.setdefault(src, []).append(layer.id)

    # --------------------------------------------------------------- constants
    def _fail(self, layer: Layer, message: str) -> IRError:
        return IRError(f"{self.xml_path}: layer {layer.id} '{layer.name}' ({layer.type}): {message}")

    def _read_const(self, layer: Layer) -> np.ndarray:
        element_type = layer.data.get("element_type")
        if element_type not in _ELEMENT_TYPES:
            raise self._fail(layer, f"unsupported element type {element_type!r}")
        offset, size = int(layer.data["offset"]), int(layer.data["size"])
        if offset < 0 or offset + size > self._weights.size:
            raise self._fail(layer, f"bytes {offset}..{offset + size} lie outside {self.bin_path} "
                                    f"({self._weights.size} bytes)")
        shape_text = layer.data.get("shape", "")
        shape = tuple(int(s) for s in shape_text.split(",") if s.strip() != "")
        array = self._weights[offset:offset + size].view(_ELEMENT_TYPES[element_type])
        if array.size != int(np.prod(shape)):
            raise self._fail(layer, f"{array.size} values do not fill shape {shape}")
        return array.reshape(shape)

    def constant(self, layer_id: str) -> np.ndarray | None:
        """The value of a layer whose inputs are all constant (None if it depends on the network input)."""
        if layer_id in self._constants:
            return self._constants[layer_id]
        layer = self.layers[layer_id]
        value = None
        if layer.type == "Const":
            value = self._read_const(layer)
        else:
            args = [self.constant(src) for src in layer.inputs]
            if args and all(a is not None for a in args):
                value = self._fold(layer, args)
        self._constants[layer_id] = value
        return value

    def _fold(self, layer: Layer, args: list[np.ndarray]) -> np.ndarray | None:
        t = layer.type
        if t == "Convert":
            target = _ELEMENT_TYPES.get(layer.data.get("destination_type"))
            if target is None:
                raise self._fail(layer, f"unsupported destination type {layer.data.get('destination_type')!r}")
            # Keep float arithmetic in float32: f16 conversions of weights are storage, not precision.
            return args[0].astype(np.float32 if np.issubdtype(target, np.floating) else target)
        if t == "FakeQuantize":
            x, in_lo, in_hi, out_lo, out_hi = (a.astype(np.float64) for a in args)
            levels = int(layer.data["levels"])
            clipped = np.clip(x, in_lo, in_hi)
            span = np.where(in_hi - in_lo == 0, 1.0, in_hi - in_lo)
            q = np.round((clipped - in_lo) / span * (levels - 1))
            return (q / (levels - 1) * (out_hi - out_lo) + out_lo).astype(np.float32)
        if t == "Reshape":
            shape = [int(s) for s in args[1].reshape(-1)]
            special_zero = layer.data.get("special_zero", "false").lower() == "true"
            if special_zero:
                shape = [args[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
            return args[0].reshape(shape)
        if t in ("Multiply", "Add", "Subtract", "Divide"):
            a, b = (np.asarray(v, dtype=np.float32) if np.issubdtype(np.asarray(v).dtype, np.floating)
                    else v for v in args)
            return {"Multiply": np.multiply, "Add": np.add, "Subtract": np.subtract,
                    "Divide": np.divide}[t](a, b)
        if t == "Transpose":
            return np.transpose(args[0], [int(i) for i in args[1].reshape(-1)])
        if t == "Squeeze":
            return np.squeeze(args[0], axis=tuple(int(i) for i in args[1].reshape(-1))) if len(args) > 1 \
                else np.squeeze(args[0])
        if t == "Unsqueeze":
            out = args[0]
            for axis in sorted(int(i) for i in args[1].reshape(-1)):
                out = np.expand_dims(out, axis)
            return out
        raise self._fail(layer, "constant folding of this layer type is not supported")

    # ------------------------------------------------------------ convolutions
    def convolutions(self) -> list[ConvolutionWeights]:
        """Every (Group)Convolution with its float weights and the bias of the Add that follows it."""
        result = []
        for layer in self.layers.values():
            if layer.type not in ("Convolution", "GroupConvolution"):
                continue
            if len(layer.inputs) != 2:
                raise self._fail(layer, "expected a data input and a weights input")
            weight = self.constant(layer.inputs[1])
            if weight is None:
                raise self._fail(layer, "weights are not constant")
            weight = np.asarray(weight, dtype=np.float32)
            if layer.type == "GroupConvolution":  # (groups, out/groups, in/groups, kh, kw) -> torch layout
                groups, per_group_out = weight.shape[:2]
                weight = weight.reshape(groups * per_group_out, *weight.shape[2:])
            bias = None
            consumers = self.consumers.get(layer.id, [])
            if len(consumers) == 1 and self.layers[consumers[0]].type == "Add":
                add = self.layers[consumers[0]]
                other = [src for src in add.inputs if src != layer.id]
                value = self.constant(other[0]) if other else None
                if value is not None:
                    bias = np.asarray(value, dtype=np.float32).reshape(-1)
            pads = tuple(int(p) for p in layer.data.get("pads_begin", "0,0").split(","))
            result.append(ConvolutionWeights(
                name=layer.name[: -len("/WithoutBiases")] if layer.name.endswith("/WithoutBiases") else layer.name,
                type=layer.type, weight=np.ascontiguousarray(weight), bias=bias,
                strides=tuple(int(s) for s in layer.data.get("strides", "1,1").split(",")),
                dilations=tuple(int(s) for s in layer.data.get("dilations", "1,1").split(",")),
                pads=pads, input_layer=layer.inputs[0]))
        return result

    def input_affine(self, parameter_name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scale, shift) per input channel of the Multiply/Add chain between the Parameter and the first
        convolution, so that the network sees `pixel * scale + shift`; (1, 0) when there is none."""
        parameters = [l for l in self.layers.values() if l.type == "Parameter"]
        if len(parameters) != 1:
            raise IRError(f"{self.xml_path}: expected one input Parameter, found {len(parameters)}")
        channels = parameters[0].output_shapes[0][1]
        scale = np.ones(channels, dtype=np.float64)
        shift = np.zeros(channels, dtype=np.float64)
        current = parameters[0].id
        while True:
            consumers = self.consumers.get(current, [])
            if len(consumers) != 1:
                break
            layer = self.layers[consumers[0]]
            if layer.type not in ("Multiply", "Add", "Subtract"):
                break
            other = [src for src in layer.inputs if src != current]
            value = self.constant(other[0]) if other else None
            if value is None:
                break
            value = np.broadcast_to(np.asarray(value, dtype=np.float64).reshape(-1), (channels,))
            if layer.type == "Multiply":
                scale, shift = scale * value, shift * value
            elif layer.type == "Add":
                shift = shift + value
            else:
                shift = shift - value
            current = layer.id
        return scale, shift

"""Triton's binary tensor extension to the v2 protocol, for BYTES inputs and FP32 outputs.

Standard v2 clients (``tritonclient``) send tensors as binary by default: the body is a JSON
header of ``Inference-Header-Content-Length`` bytes followed by raw tensor bytes, each input
declaring its size in ``parameters.binary_data_size``. A BYTES tensor is, per element, a
4-byte little-endian length then that many bytes. Supporting it means the stock client works
against a device unchanged. Outputs are sent binary (little-endian float32) when the request
asks for it per output (``parameters.binary_data``) or globally (``binary_data_output``).
"""

from __future__ import annotations

import struct
from typing import Any

from fedgrpo.edge.protocol import ProtocolError

HEADER_LENGTH = "Inference-Header-Content-Length"


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON part, binary part) of a request body."""
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise ProtocolError(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
    if not 0 <= length <= len(body):
        raise ProtocolError(f"{HEADER_LENGTH} is {length} but the body has {len(body)} bytes", 400)
    return body[:length], body[length:]


def decode_bytes_elements(raw: bytes, name: str) -> list[str]:
    """Decode a binary BYTES tensor into UTF-8 strings."""
    values: list[str] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise ProtocolError(f"input {name!r}: truncated binary element length")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise ProtocolError(f"input {name!r}: binary element of {size} bytes is truncated")
        try:
            values.append(raw[offset : offset + size].decode("utf-8"))
        except UnicodeDecodeError:
            raise ProtocolError(
                f"input {name!r}: element {len(values)} is not valid UTF-8", 400
            ) from None
        offset += size
    return values


def inline_binary_inputs(body: dict[str, Any], binary: bytes) -> None:
    """Replace each input's binary payload by a JSON ``data`` list, in place.

    After this the request looks like a plain JSON v2 request and goes through the one
    validator in :func:`edge.protocol.parse_request`.
    """
    inputs = body.get("inputs")
    offset = 0
    if isinstance(inputs, list):
        for tensor in inputs:
            if not isinstance(tensor, dict):
                continue
            params = tensor.get("parameters")
            size = params.get("binary_data_size") if isinstance(params, dict) else None
            if size is None:
                continue
            name = str(tensor.get("name"))
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise ProtocolError(
                    f"input {name!r}: binary_data_size must be a non-negative integer"
                )
            if tensor.get("datatype") != "BYTES":
                raise ProtocolError(
                    f"input {name!r} must have datatype 'BYTES', got {tensor.get('datatype')!r}",
                    422,
                )
            if "data" in tensor:
                raise ProtocolError(f"input {name!r} has both JSON data and binary_data_size")
            if offset + size > len(binary):
                raise ProtocolError(
                    f"input {name!r} declares {size} binary bytes but only "
                    f"{len(binary) - offset} remain in the body"
                )
            tensor["data"] = decode_bytes_elements(binary[offset : offset + size], name)
            offset += size
    if offset != len(binary):
        raise ProtocolError(f"{len(binary) - offset} binary bytes in the body belong to no input")


def wants_binary_output(body: dict[str, Any], output_name: str) -> bool:
    """Whether the client asked for ``output_name`` as binary data."""
    outputs = body.get("outputs")
    if isinstance(outputs, list):
        for out in outputs:
            if isinstance(out, dict) and out.get("name") == output_name:
                params = out.get("parameters")
                if isinstance(params, dict) and "binary_data" in params:
                    return params.get("binary_data") is True
    params = body.get("parameters")
    return isinstance(params, dict) and params.get("binary_data_output") is True


def encode_fp32(values: tuple[float, ...] | list[float]) -> bytes:
    """Little-endian float32, as Triton's FP32 binary output."""
    return struct.pack(f"<{len(values)}f", *values)

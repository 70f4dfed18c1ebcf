"""A tool: a typed Python function plus everything the model and the runtime need to call it.

The parameters Struct is derived from the function's signature, and both the JSON Schema offered to the
model (`msgspec.json.schema`) and the decoder that checks the model's arguments are built from that one
type, so what we promise the model and what we accept cannot drift apart.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from sluice.subjects import tool_name

from .errors import ToolArgumentError

__all__ = ["DEFAULT_MAX_OUTPUT_BYTES", "DEFAULT_TIMEOUT_S", "Tool"]

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_OUTPUT_BYTES = 16 * 1024

_encoder = msgspec.json.Encoder()
_ACCEPTED_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


@dataclass(frozen=True, eq=False)
class Tool:
    """One callable tool. `timeout_s` and `max_output_bytes` are limits the runtime enforces, not `invoke`."""

    name: str
    description: str
    fn: Callable[..., Any]
    parameters: type[msgspec.Struct]
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    _decoder: msgspec.json.Decoder[Any] = field(init=False, repr=False)
    _schema: dict[str, Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        tool_name(self.name)  # the name becomes a NATS subject token; the shared builder validates it
        if not self.timeout_s > 0 or self.max_output_bytes <= 0:
            raise ValueError(f"tool {self.name}: timeout_s and max_output_bytes must be positive")
        # Built once per tool (msgspec's advice), not per call.
        object.__setattr__(self, "_decoder", msgspec.json.Decoder(self.parameters))
        object.__setattr__(self, "_schema", _object_schema(self.parameters))

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        parameters: type[msgspec.Struct] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    ) -> Tool:
        """Describe `fn` as a tool: its name, the first paragraph of its docstring, its typed parameters.

        Later docstring paragraphs are for maintainers and are not sent to the model. Parameter
        constraints and descriptions belong in `Annotated[..., msgspec.Meta(...)]`, which reach both
        the schema and the decoder.
        """
        name = name or fn.__name__
        description = (inspect.getdoc(fn) or "").split("\n\n", 1)[0].replace("\n", " ").strip()
        if not description:
            raise ValueError(f"tool {name} needs a docstring: its first paragraph is what the model reads")
        params = parameters or _parameters_from_signature(fn, name)
        # Fail at registration, not at the first call, if the Struct's fields do not fit the function.
        inspect.signature(fn).bind(**dict.fromkeys(params.__struct_fields__))
        return cls(name, description, fn, params, timeout_s, max_output_bytes)

    def openai_spec(self) -> dict[str, Any]:
        """The entry for the OpenAI `tools` list; a fresh copy, so callers may add to it."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": copy.deepcopy(self._schema),
            },
        }

    @property
    def input_schema(self) -> dict[str, Any]:
        """The JSON Schema of the arguments (a fresh copy), as the catalog advertises it."""
        return copy.deepcopy(self._schema)

    def decode_arguments(self, arguments_json: str) -> msgspec.Struct:
        """Strictly decode the model's arguments: no coercion, no unknown fields, missing fields named.

        An empty string counts as `{}` because some models send it for a call whose parameters all
        have defaults.
        """
        try:
            return self._decoder.decode(arguments_json.strip() or "{}")
        except msgspec.ValidationError as exc:  # wrong type, missing or unknown field: msgspec names it
            raise ToolArgumentError(f"invalid arguments for {self.name}: {exc}") from exc
        except (msgspec.DecodeError, UnicodeEncodeError) as exc:  # the latter: a lone surrogate
            raise ToolArgumentError(f"invalid arguments for {self.name}: not valid JSON ({exc})") from exc

    async def invoke(self, arguments_json: str) -> str:
        """Decode the arguments, run the tool (sync tools in a worker thread) and return its result as text.

        A string result is returned as is; anything else is JSON-encoded. `ToolError` from the tool
        propagates with its message for the model.
        """
        kwargs = msgspec.structs.asdict(self.decode_arguments(arguments_json))
        if inspect.iscoroutinefunction(self.fn):
            result = await self.fn(**kwargs)
        else:
            result = await asyncio.to_thread(self.fn, **kwargs)
        return result if isinstance(result, str) else _encoder.encode(result).decode()


def _parameters_from_signature(fn: Callable[..., Any], name: str) -> type[msgspec.Struct]:
    """A Struct with one field per keyword parameter of `fn`: its annotation, and its default if any."""
    hints = typing.get_type_hints(fn, include_extras=True)  # include_extras keeps Annotated[..., Meta]
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for param in inspect.signature(fn).parameters.values():
        if param.kind not in _ACCEPTED_KINDS or param.name not in hints:
            raise TypeError(f"tool {name}: parameter {param.name!r} must be a typed keyword parameter")
        if param.default is inspect.Parameter.empty:
            fields.append((param.name, hints[param.name]))
        else:
            fields.append((param.name, hints[param.name], param.default))
    return msgspec.defstruct(
        f"{name}_arguments", fields, kw_only=True, forbid_unknown_fields=True, module=fn.__module__
    )


def _object_schema(params: type[msgspec.Struct]) -> dict[str, Any]:
    """msgspec's JSON Schema for `params` with every `$ref` inlined: a plain object schema for the model."""
    raw = msgspec.json.schema(params)
    defs = raw.pop("$defs", {})
    schema = _inline(raw, defs, ())
    schema.pop("title", None)  # the generated Struct name tells the model nothing
    if schema.get("type") != "object":
        raise TypeError(f"parameters {params.__name__} must be an object schema, got {schema!r}")
    return schema


def _inline(node: Any, defs: dict[str, Any], seen: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        key = ref.removeprefix("#/$defs/")
        if key in seen:
            raise TypeError(f"recursive type {key} cannot be inlined into a tool schema")
        rest = {k: v for k, v in node.items() if k != "$ref"}
        return _inline({**defs[key], **rest}, defs, (*seen, key))
    return {k: _inline(v, defs, seen) for k, v in node.items()}

"""Prompt validation with v0.3.64's error shapes (docs/comfyui-protocol.md §1).

Follows `execution.validate_prompt` / `validate_inputs`: the class_type check on every node
first, then per output node a depth-first validation whose results are shared between outputs.
A prompt is accepted if any output is valid; literals are converted in place (the stored graph
keeps the converted values).
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any

from standins.comfyui.nodes import ANY, NODES, Folders, NodeSpec, input_info

_Result = tuple[bool, list[dict[str, Any]], str]


@dataclass
class Validation:
    """The outcome: `ok`, the top-level `error` (when not ok), good outputs and node_errors."""

    ok: bool
    error: dict[str, Any] | None
    outputs: list[str] = field(default_factory=list)
    node_errors: dict[str, Any] = field(default_factory=dict)


def _error(type_: str, message: str, details: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {"type": type_, "message": message, "details": details, "extra_info": extra}


def full_type_name(cls: type) -> str:
    """`RuntimeError` for builtins, `module.Name` otherwise (ComfyUI's full_type_name)."""
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _types_match(received: Any, wanted: Any) -> bool:
    if received == wanted or ANY in (received, wanted):
        return True
    if not isinstance(received, str) or not isinstance(wanted, str):
        return False
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in wanted.split(",")}
    return bool(got & want)


def _custom_validate(spec: NodeSpec, name: str, value: Any, folders: Folders) -> str | None:
    """A node's own VALIDATE_INPUTS; returns the reason text when the value is refused."""
    if (
        spec.class_type == "LoadImage"
        and name == "image"
        and (not isinstance(value, str) or not value or not folders.annotated(value).is_file())
    ):
        return f"Invalid image file: {value}"
    return None


def _validate_inputs(
    prompt: dict[str, Any], unique_id: str, validated: dict[str, _Result], folders: Folders
) -> _Result:
    if unique_id in validated:
        return validated[unique_id]
    node = prompt[unique_id]
    inputs = node["inputs"]
    spec = NODES[node["class_type"]]
    errors: list[dict[str, Any]] = []
    valid = True
    custom: list[str] = []
    for category, ispec in spec.inputs():
        x = ispec.name
        input_type, extra = input_info(spec, ispec, folders)
        info = [input_type, extra]
        if x not in inputs:
            if category == "required":
                errors.append(
                    _error(
                        "required_input_missing",
                        "Required input is missing",
                        x,
                        {"input_name": x},
                    )
                )
            continue
        val = inputs[x]
        if isinstance(val, list):
            if len(val) != 2:
                errors.append(
                    _error(
                        "bad_linked_input",
                        "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                        x,
                        {"input_name": x, "input_config": info, "received_value": val},
                    )
                )
                continue
            o_id = val[0]
            # KeyError / IndexError / TypeError escape to the caller, as in ComfyUI.
            o_class = prompt[o_id]["class_type"]
            received_type = NODES[o_class].outputs[val[1]]
            if not _types_match(received_type, input_type):
                errors.append(
                    _error(
                        "return_type_mismatch",
                        "Return type mismatch between linked nodes",
                        f"{x}, received_type({received_type}) mismatch input_type({input_type})",
                        {
                            "input_name": x,
                            "input_config": info,
                            "received_type": received_type,
                            "linked_node": val,
                        },
                    )
                )
                continue
            try:
                r = _validate_inputs(prompt, o_id, validated, folders)
                if r[0] is False:
                    valid = False
                    continue
            except Exception as ex:
                valid = False
                validated[o_id] = (
                    False,
                    [
                        _error(
                            "exception_during_inner_validation",
                            "Exception when validating inner node",
                            str(ex),
                            {
                                "input_name": x,
                                "input_config": info,
                                "exception_message": str(ex),
                                "exception_type": full_type_name(type(ex)),
                                "traceback": traceback.format_tb(ex.__traceback__),
                                "linked_node": val,
                            },
                        )
                    ],
                    o_id,
                )
                continue
        else:
            try:
                if isinstance(val, dict) and "__value__" in val:
                    val = val["__value__"]
                    inputs[x] = val
                if input_type == "INT":
                    val = int(val)
                elif input_type == "FLOAT":
                    val = float(val)
                elif input_type == "STRING":
                    val = str(val)
                elif input_type == "BOOLEAN":
                    val = bool(val)
                inputs[x] = val
            except Exception as ex:
                errors.append(
                    _error(
                        "invalid_input_type",
                        f"Failed to convert an input value to a {input_type} value",
                        f"{x}, {val}, {ex}",
                        {
                            "input_name": x,
                            "input_config": info,
                            "received_value": val,
                            "exception_message": str(ex),
                        },
                    )
                )
                continue
            if x in spec.custom_validated:
                custom.append(x)
                continue
            if "min" in extra and val < extra["min"]:
                errors.append(
                    _error(
                        "value_smaller_than_min",
                        f"Value {val} smaller than min of {extra['min']}",
                        x,
                        {"input_name": x, "input_config": info, "received_value": val},
                    )
                )
                continue
            if "max" in extra and val > extra["max"]:
                errors.append(
                    _error(
                        "value_bigger_than_max",
                        f"Value {val} bigger than max of {extra['max']}",
                        x,
                        {"input_name": x, "input_config": info, "received_value": val},
                    )
                )
                continue
            if isinstance(input_type, list) or input_type == "COMBO":
                options = extra.get("options", []) if input_type == "COMBO" else input_type
                if val not in options:
                    config: Any = info
                    if len(options) > 20:
                        list_info = f"(list of length {len(options)})"
                        config = None
                    else:
                        list_info = str(options)
                    errors.append(
                        _error(
                            "value_not_in_list",
                            "Value not in list",
                            f"{x}: '{val}' not in {list_info}",
                            {"input_name": x, "input_config": config, "received_value": val},
                        )
                    )
                    continue
    for x in custom:
        reason = _custom_validate(spec, x, inputs[x], folders)
        if reason is not None:
            errors.append(
                _error(
                    "custom_validation_failed",
                    "Custom validation failed for node",
                    f"{x} - {reason}",
                    {"input_name": x},
                )
            )
    ret: _Result = (False, errors, unique_id) if errors or not valid else (True, [], unique_id)
    validated[unique_id] = ret
    return ret


def validate_prompt(prompt: Any, partial_targets: list[Any] | None, folders: Folders) -> Validation:
    """Validate an API-format graph as v0.3.64 does. Malformed shapes raise (→ HTTP 500)."""
    outputs: list[str] = []
    for x in prompt:
        if "class_type" not in prompt[x]:
            return Validation(
                False,
                _error(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    f"Node ID '#{x}'",
                    {},
                ),
            )
        class_type = prompt[x]["class_type"]
        spec = NODES.get(class_type) if isinstance(class_type, str) else None
        if spec is None:
            return Validation(
                False,
                _error(
                    "invalid_prompt",
                    f"Cannot execute because node {class_type} does not exist.",
                    f"Node ID '#{x}'",
                    {},
                ),
            )
        if spec.output_node and (partial_targets is None or x in partial_targets):
            outputs.append(x)
    if not outputs:
        return Validation(False, _error("prompt_no_outputs", "Prompt has no outputs", "", {}))
    good: list[str] = []
    failed: list[tuple[str, list[dict[str, Any]]]] = []
    node_errors: dict[str, Any] = {}
    validated: dict[str, _Result] = {}
    for o in outputs:
        try:
            ok, reasons, _ = _validate_inputs(prompt, o, validated, folders)
        except Exception as ex:
            ok = False
            reasons = [
                _error(
                    "exception_during_validation",
                    "Exception when validating node",
                    str(ex),
                    {
                        "exception_type": full_type_name(type(ex)),
                        "traceback": traceback.format_tb(ex.__traceback__),
                    },
                )
            ]
            validated[o] = (False, reasons, o)
        if ok:
            good.append(o)
            continue
        if reasons:
            failed.append((o, reasons))
        for node_id, result in validated.items():
            if result[0] is not True and result[1]:
                if node_id not in node_errors:
                    node_errors[node_id] = {
                        "errors": result[1],
                        "dependent_outputs": [],
                        "class_type": prompt[node_id]["class_type"],
                    }
                node_errors[node_id]["dependent_outputs"].append(o)
    if not good:
        details = "\n".join(f"{e['message']}: {e['details']}" for _, errs in failed for e in errs)
        return Validation(
            False,
            _error(
                "prompt_outputs_failed_validation", "Prompt outputs failed validation", details, {}
            ),
            [],
            node_errors,
        )
    return Validation(True, None, good, node_errors)

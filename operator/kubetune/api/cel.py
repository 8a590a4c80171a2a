"""CEL rules, declared once beside what they guard and checked in two places with the same message.

A `Rule` is a CEL expression over `self` (the node as it is on the wire: camelCase keys, unset fields
absent) and the message shown when it is false. It is declared either on a model class
(`cel_rules = (Rule(...),)`: `self` is that object) or on a field (`Annotated[str, Rule(...)]`: `self` is
the field's value). The CRD generator finds them in the models' JSON Schema (`x-kubernetes-validations`),
so the API server refuses a bad resource at `kubectl apply`; and every model validation evaluates the
same expressions with a CEL interpreter (`cel`, the Python binding of cel-rust), so `kubetune validate`
and the operator refuse the same input with the same message.

Only the CEL that both the API server and the interpreter know is used: the standard macros and functions
(`has`, `all`, `in`, `size`, `matches`, `startsWith`); tests/unit/test_cel.py compiles every rule.
Transition rules (those that read `oldSelf`) need the stored object: only the API server checks them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import cel
from pydantic import GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

VALIDATIONS = "x-kubernetes-validations"
CEL_ERROR = "cel_rule"  # the pydantic error type of a broken rule; its context has the rule's field_path


@dataclass(frozen=True)
class Rule:
    """A CEL rule: `rule` must hold for the node, else the resource is refused with `message`."""

    rule: str
    message: str
    field_path: str | None = None  # where the API server points the refusal, relative to the node
    # A CEL string expression for a message that names the culprit; `message` when it cannot be evaluated.
    message_expression: str | None = None

    @cached_property
    def program(self) -> Any:
        return cel.compile(self.rule)

    @cached_property
    def transition(self) -> bool:
        """Whether the rule compares with the stored object (`oldSelf`): checked on updates, by the API
        server only."""
        return "oldSelf" in self.program.variables()

    @cached_property
    def fields(self) -> frozenset[str] | None:
        """The fields of `self` the rule and its message read (`self.resources.nodes`: `resources`), or None
        when they read `self` whole: the node handed to the interpreter holds only these (it converts every
        value it is given, and `config` can be large)."""
        text = self.rule + " " + (self.message_expression or "")
        uses = [m.group(1) for m in re.finditer(r"\bself\b(?:\.([A-Za-z_][A-Za-z0-9_]*))?", text)]
        return None if None in uses else frozenset(uses)

    def holds(self, node: Any) -> bool:
        """The rule evaluated for `node` as the API server would (a transition rule holds offline). An
        evaluation error refuses, as it does in the API server."""
        if self.transition:
            return True
        try:
            return self.program.execute({"self": node}) is True
        except Exception:  # the binding raises KeyError, TypeError, ValueError, ... for evaluation errors
            return False

    def message_for(self, node: Any) -> str:
        """What the API server says when the rule does not hold for `node`."""
        if self.message_expression:
            try:
                said = cel.evaluate(self.message_expression, {"self": node})
            except Exception:  # as the API server does, fall back to the static message
                said = None
            if isinstance(said, str) and said.strip():
                return said
        return self.message

    def schema(self) -> dict[str, str]:
        """The rule as an entry of the CRD's `x-kubernetes-validations`."""
        out = {"rule": self.rule, "message": self.message}
        if self.message_expression:
            out["messageExpression"] = self.message_expression
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out

    # Declared on a field (`Annotated[..., Rule(...)]`), the rule goes into that field's schema.
    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return with_rules(handler(core_schema), (self,))


def with_rules(schema: JsonSchemaValue, rules: tuple[Rule, ...]) -> JsonSchemaValue:
    if rules:
        schema[VALIDATIONS] = [*schema.get(VALIDATIONS, []), *(rule.schema() for rule in rules)]
    return schema

"""gridtap rules: safe, fast, per-rule-fault-tolerant expressions in two dialects.

* `flukso`: FluksoToPvoutput ``CUSTOM_RULES`` (Python syntax, allow-listed AST).
* `cfos`: cFos Charging Manager formulas (own tokenizer and parser).

Use `load_text` for files, `flukso.compile_rules` / `cfos.compile_rules` for
mappings, and `RuleSet.evaluate` to run them. See docs/rules.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gridtap.rules.core import (
        BUILTIN_NAMES,
        Evaluation,
        RuleError,
        RuleSet,
        RuleSetError,
        RuleSyntaxError,
        Step,
    )
    from gridtap.rules.loader import (
        DIALECTS,
        FORMATS,
        RuleFileError,
        compile_mapping,
        detect_format,
        load_text,
        parse_config,
    )

# Loaded on first use (PEP 562): `gridtap.rules.core` alone (a name check the PVOutput settings use)
# must not bring in the two compilers.
_FROM = {
    **dict.fromkeys(("BUILTIN_NAMES", "Evaluation", "RuleError", "RuleSet", "RuleSetError", "RuleSyntaxError",
                     "Step"), "gridtap.rules.core"),
    **dict.fromkeys(("DIALECTS", "FORMATS", "RuleFileError", "compile_mapping", "detect_format", "load_text",
                     "parse_config"), "gridtap.rules.loader"),
}


def __getattr__(name: str) -> Any:
    module = _FROM.get(name)
    if module is None:
        raise AttributeError(f"module 'gridtap.rules' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

__all__ = [
    "BUILTIN_NAMES", "DIALECTS", "FORMATS", "Evaluation", "RuleError", "RuleFileError", "RuleSet",
    "RuleSetError", "RuleSyntaxError", "Step", "compile_mapping", "detect_format", "load_text",
    "parse_config",
]

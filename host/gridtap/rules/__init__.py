"""gridtap rules: safe, fast, per-rule-fault-tolerant expressions in two dialects.

* `flukso`: FluksoToPvoutput ``CUSTOM_RULES`` (Python syntax, allow-listed AST).
* `cfos`: cFos Charging Manager formulas (own tokenizer and parser).

Use `load_text` for files, `flukso.compile_rules` / `cfos.compile_rules` for
mappings, and `RuleSet.evaluate` to run them. See docs/rules.md.
"""

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

__all__ = [
    "BUILTIN_NAMES", "DIALECTS", "FORMATS", "Evaluation", "RuleError", "RuleFileError", "RuleSet",
    "RuleSetError", "RuleSyntaxError", "Step", "compile_mapping", "detect_format", "load_text",
    "parse_config",
]

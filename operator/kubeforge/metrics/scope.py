"""Confining a PromQL expression to one namespace, so a tenant's fleet reads only its own series.

Every query a fleet causes (the built-in metrics, `autoscaling.query`, `scaleToZero.activationQuery`,
the analysis queries) goes through `confine()` before it reaches Prometheus. In PromQL only vector
selectors (`name{...}`, also inside a range `name{...}[5m]`) read series; everything else (functions,
aggregations, `or`, subqueries, `label_replace`) computes on what selectors returned. So an expression is
confined when every selector carries the matcher `namespace="<ns>"`: `confine()` parses the expression,
adds that matcher to every selector (ANDed with whatever the user wrote: `namespace="other"` then
matches nothing, `namespace=~".+"` matches only the fleet's namespace), prints it back, and checks the
printed text by parsing it again.

It refuses (raises `QueryRefusedError`, which the fleet's status and Events report) what it cannot vouch for:

- text that does not parse;
- string values with a double quote, a backslash or a control character: the parser unescapes them
  and prints them back raw, so the printed query could mean something else to Prometheus;
- `{a="x" or b="y"}` matcher alternatives (Prometheus 3): each alternative would need its own matcher;
- `info()`, which reads `target_info` series without a selector;
- a namespace that is not a Kubernetes namespace name;
- an expression nested deeper than `MAX_DEPTH` or with more than `MAX_OPERATIONS` operators, calls and
  brackets: the parser library's tree walks cost far more than linear in nesting (a 900-character chain
  `up+up+...` took over a minute), and they run on the operator's event loop, so one fleet could stall
  every tenant's reconciles. This is checked on the text, before anything is parsed;
- any printed result that does not parse back to itself, or in which a selector lacks the matcher.
"""

from __future__ import annotations

import re

import promql_parser as pp

NAMESPACE_LABEL = "namespace"
_NAMESPACE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_UNSAFE_TEXT = re.compile(r'["\\\x00-\x1f\x7f]')
REFUSED_FUNCTIONS = frozenset({"info"})
"""Functions that read series no selector names."""
MAX_DEPTH = 16
"""Brackets (`(`, `[`) open at once, at most."""
MAX_OPERATIONS = 48
"""Binary and unary operators, set operators and opening brackets together, at most (the largest built-in
query has 22)."""
_LEXEME = re.compile(
    r'"(?:[^"\\\n]|\\.)*"?|\'(?:[^\'\\\n]|\\.)*\'?|`[^`]*`?|#[^\n]*'
    r"|[a-zA-Z_:][a-zA-Z0-9_:]*|[-+*/%^<>=!~]+|\S"
)
_WORD_OPERATORS = frozenset({"and", "or", "unless", "atan2"})


class QueryRefusedError(ValueError):
    """A query that cannot be confined to its namespace; the message says why."""


def confine(query: str, namespace: str, *, label: str = NAMESPACE_LABEL) -> str:
    """`query` with `label="<namespace>"` ANDed into every selector; raises QueryRefusedError."""
    if not _NAMESPACE_NAME.fullmatch(namespace):
        raise QueryRefusedError(f"{namespace!r} is not a namespace name")
    _check_size(query)
    expr = _parse(query)
    _check_safe(expr)

    def add_matcher(node: pp.Expr) -> pp.Expr | None:
        if not isinstance(node, pp.VectorSelector) or _selector_confined(node, namespace, label):
            return None
        matchers = [*node.matchers.matchers, pp.Matcher(pp.MatchOp.Equal, label, namespace)]
        node.matchers = pp.Matchers(matchers)
        # transform() keeps a node only when given a new one: parse the selector's own printed text.
        return pp.parse(str(node))

    pretty = pp.transform(expr, None, add_matcher).prettify()
    text = _compact(pretty)
    _verify(text, pretty, namespace, label)
    return text


def is_confined(query: str, namespace: str, *, label: str = NAMESPACE_LABEL) -> bool:
    """True when every selector of `query` carries `label="<namespace>"` (and it parses)."""
    try:
        expr = pp.parse(query)
    except Exception:
        return False
    return all(_selector_confined(s, namespace, label) for s in selectors(expr))


def selectors(expr: pp.Expr) -> list[pp.VectorSelector]:
    """Every vector selector of an expression, those inside range selectors included."""
    found: list[pp.VectorSelector] = []

    def visit(node: pp.Expr) -> bool:
        if isinstance(node, pp.VectorSelector):
            found.append(node)
        return True

    pp.walk(expr, visit)
    return found


def _check_size(query: str) -> None:
    """Refuse, from the text alone, an expression too deep or too large to parse and walk cheaply.
    Strings and comments are skipped whole (lexed as the parser lexes them, so no bracket hides in
    one), and so are the `=`, `!=`, `=~`, `!~` of `{...}` matchers; a sign in a number or an offset
    counts as an operator, which only errs towards refusing."""
    depth = deepest = operations = 0
    in_matchers = False
    for lexeme in _LEXEME.findall(query):
        if lexeme in ("{", "}"):
            in_matchers = lexeme == "{"
        elif in_matchers:
            continue
        elif lexeme in ("(", "["):
            depth += 1
            deepest = max(deepest, depth)
            operations += 1
        elif lexeme in (")", "]"):
            depth = max(depth - 1, 0)
        elif lexeme[0] in "-+*/%^<>=!~":
            operations += len(lexeme)  # `--x` is two operators; `!=` counted twice errs towards refusing
        elif lexeme in _WORD_OPERATORS:
            operations += 1
    if deepest > MAX_DEPTH:
        raise QueryRefusedError(f"the query nests {deepest} brackets deep; at most {MAX_DEPTH}")
    if operations > MAX_OPERATIONS:
        raise QueryRefusedError(
            f"the query has {operations} operators and brackets; at most {MAX_OPERATIONS}"
        )


def _parse(query: str) -> pp.Expr:
    try:
        return pp.parse(query)
    except Exception as error:  # the parser raises ValueError, its Rust side may raise others
        raise QueryRefusedError(f"the query does not parse: {_short(str(error))}") from error


def _check_safe(expr: pp.Expr) -> None:
    problems: list[str] = []

    def visit(node: pp.Expr) -> bool:
        if isinstance(node, pp.VectorSelector):
            if node.matchers.or_matchers:
                problems.append("matcher alternatives ({a=... or b=...}) cannot be confined")
            for matcher in node.matchers.matchers:
                if _UNSAFE_TEXT.search(matcher.value) or _UNSAFE_TEXT.search(matcher.name):
                    problems.append(
                        f"label value of {matcher.name} has a quote, backslash or control character"
                    )
        elif isinstance(node, pp.StringLiteral) and _UNSAFE_TEXT.search(node.val):
            problems.append("a string argument has a quote, backslash or control character")
        elif isinstance(node, pp.Call) and node.func.name in REFUSED_FUNCTIONS:
            problems.append(f"{node.func.name}() reads series without a selector")
        return True

    pp.walk(expr, visit)
    if problems:
        raise QueryRefusedError("; ".join(dict.fromkeys(problems)))


def _compact(pretty: str) -> str:
    """The printed query on one line: whitespace outside string literals collapsed (the printer
    indents long queries over many lines). String literals hold no quote or backslash (refused)."""
    out: list[str] = []
    parts = pretty.split('"')
    for index, part in enumerate(parts):
        if index % 2:  # inside a string literal
            out.append(part)
            continue
        part = " ".join(part.split())
        part = part.replace("( ", "(").replace(" )", ")")
        out.append(part)
    return '"'.join(out).strip()


def _verify(text: str, pretty: str, namespace: str, label: str) -> None:
    """Parse the query as Prometheus will and check it, rather than trust the printer."""
    expr = _parse(text)
    if expr.prettify() != pretty:
        raise QueryRefusedError("the query does not print back to itself")
    _check_safe(expr)
    for selector in selectors(expr):
        if not _selector_confined(selector, namespace, label):
            raise QueryRefusedError(f"selector {_short(str(selector))} could not be confined")


def _selector_confined(selector: pp.VectorSelector, namespace: str, label: str) -> bool:
    if selector.matchers.or_matchers:
        return False
    return any(
        m.name == label and m.op == pp.MatchOp.Equal and m.value == namespace
        for m in selector.matchers.matchers
    )


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."

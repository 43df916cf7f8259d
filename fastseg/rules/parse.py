"""Parser of the segment rule language: a tokenizer and a recursive-descent parser.

Rules are untrusted text. They are only ever tokenized and parsed into the frozen dataclasses
of :mod:`fastseg.rules.ast`; nothing is evaluated, imported or looked up by name. Nesting depth
and rule length are bounded so a hostile rule cannot exhaust the stack.

Grammar (keywords and function names are case-insensitive; field names are case-sensitive)::

    rule      := or_expr EOF
    or_expr   := and_expr ("OR" and_expr)*
    and_expr  := not_expr ("AND" not_expr)*
    not_expr  := "NOT" not_expr | primary
    primary   := "(" or_expr ")" | "TRUE" | "FALSE" | "segment" "(" NAME ")"
               | term [tail]
    tail      := CMP (value | term)
               | ["NOT"] "BETWEEN" value "AND" value
               | ["NOT"] "IN" "(" value ("," value)* ")"
               | ["NOT"] "CONTAINS" value
               | "IS" ["NOT"] "NULL"
    term      := factor (("+" | "-") factor)*
    factor    := unary (("*" | "/") unary)*
    unary     := "-" unary | atom
    atom      := NUMBER | NAME | `quoted name` | aggregate | "anniversary" "(" NAME ")"
               | "(" term ")"
    aggregate := ("orders" | "revenue" | "units") "(" [arg ("," arg)*] ")"
               | "distinct" "(" NAME ("," arg)* ")"
               | "events" "(" STRING ("," arg)* ")"
    arg       := ("since" | "until") ":" date
               | NAME ":" (value | "(" value ("," value)* ")" | "[" value ("," value)* "]")
    value     := NUMBER | STRING | "TRUE" | "FALSE" | DATE | RELDATE | "TODAY" | "YESTERDAY"
    CMP       := "=" | "==" | "!=" | "<>" | ">" | ">=" | "<" | "<="

A "(" that starts a condition may also start a term: the parser tries the term first and keeps
it when a comparison follows (``(a + b) > 2``), else reads a condition (``(a > 1 OR b)``).
An operand without a tail is a Boolean test (``email_opt_in``). ``#`` starts a comment that
runs to the end of the line.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import lru_cache

from fastseg.errors import RuleSyntaxError
from fastseg.rules.ast import (
    KEYWORDS,
    Aggregate,
    And,
    Anniversary,
    Arith,
    Between,
    Bool,
    Compare,
    Const,
    Contains,
    DateLit,
    Expr,
    Field,
    In,
    IsNull,
    IsTrue,
    Neg,
    Not,
    Number,
    Operand,
    Or,
    RelDate,
    SegmentRef,
    String,
    Today,
    Value,
)

__all__ = ["AGGREGATE_FUNCTIONS", "KEYWORDS", "MAX_DEPTH", "MAX_RULE_LENGTH", "parse_rule"]

AGGREGATE_FUNCTIONS = ("orders", "revenue", "units", "distinct", "events")
#: functions of a term (besides the aggregates)
TERM_FUNCTIONS = ("anniversary",)
MAX_DEPTH = 100
#: the most levels of the syntax tree a rule may have, counting each AND, OR, NOT and operator
#: of a chain (the compiler walks the tree recursively)
MAX_HEIGHT = 250
MAX_RULE_LENGTH = 100_000

# Source columns an aggregate filter may not name: they are the window itself or the key.
_RESERVED_FILTERS = {
    "customer_id": "customers are the groups",
    "order_date": "use since: to set the window",
    "event_date": "use since: to set the window",
    "event": "give the event type as the first argument of events()",
    "amount": "revenue() sums it; filter on other columns",
    "_order": "it is internal",
}

# Columns distinct() may not count.
_RESERVED_DISTINCT = {
    "customer_id": "customers are the groups",
    "order_date": "count days with another column, or use orders()",
    "amount": "it is money, not a label",
    "_order": "it is internal",
}

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+|\#[^\n]*)
  | (?P<date>\d{4}-\d{2}-\d{2})(?![A-Za-z0-9_])
  | (?P<reldate>[+-]?\d+[dwmyDWMY])(?![A-Za-z0-9_.])
  | (?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<qident>`[^`\n]*`)
  | (?P<string>'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")
  | (?P<op>>=|<=|!=|<>|==|=|<|>)
  | (?P<arith>[-+*/])
  | (?P<punct>[(),:\[\]])
    """,
    re.VERBOSE,
)

_VALUE_HINT = (
    "a value (a number, a 'string', true, false, a date such as 2026-01-31, -30d or today)"
)
_OPERATOR_HINT = "an operator (=, !=, >, >=, <, <=, BETWEEN, IN, CONTAINS, IS NULL)"
_CONDITION_HINT = (
    "a condition (a field name, orders(...), revenue(...), events(...), segment(...), "
    "NOT, '(', true or false)"
)


@dataclass(frozen=True)
class _Token:
    kind: str  # ident keyword qident string number date reldate op punct eof
    text: str
    pos: int
    value: object = None

    def describe(self) -> str:
        if self.kind == "eof":
            return "end of rule"
        return f"'{self.text}'"


def _position(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, column


#: characters of the rule shown on each side of a syntax error's position
CONTEXT = 30


def _error(text: str, pos: int, message: str) -> RuleSyntaxError:
    """A RuleSyntaxError in one line: position, what was expected, and the rule's text around
    the position (never the whole rule: rules can be long), split where the error is."""
    line, column = _position(text, pos)
    lines = text.split("\n")
    source = lines[line - 1] if line - 1 < len(lines) else ""
    before, after = source[: column - 1], source[column - 1 :]
    if len(before) > CONTEXT:
        before = "…" + before[-CONTEXT:]
    if len(after) > CONTEXT:
        after = after[:CONTEXT] + "…"
    where = f"{before!r} ^ {after!r}" if after else f"{before!r} ^ (end of rule)"
    full = f"syntax error at line {line}, column {column}: {message}; at {where}"
    return RuleSyntaxError(full, line=line, column=column, rule=text)


_ESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_ESCAPES = {"n": "\n", "t": "\t"}


def _unescape(body: str) -> str:
    return _ESCAPE_RE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), body)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    n = len(text)
    while pos < n:
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            ch = text[pos]
            if ch in "'\"":
                raise _error(text, pos, f"unterminated string: add the closing {ch}")
            if ch == "`":
                raise _error(text, pos, "unterminated `quoted name`: add the closing `")
            raise _error(text, pos, f"unexpected character {ch!r}")
        kind = m.lastgroup
        assert kind is not None
        raw = m.group(kind)
        if kind == "ws":
            pos = m.end()
            continue
        value: object = None
        if kind == "ident":
            if raw.upper() in KEYWORDS:
                kind, value = "keyword", raw.upper()
        elif kind == "qident":
            value = raw[1:-1]
            if not value:
                raise _error(text, pos, "empty `quoted name`")
        elif kind == "string":
            value = _unescape(raw[1:-1])
        elif kind == "date":
            try:
                value = dt.date.fromisoformat(raw)
            except ValueError:
                raise _error(
                    text, pos, f"invalid date {raw}: write a real date as YYYY-MM-DD"
                ) from None
        elif kind == "reldate":
            if raw[0] not in "+-":
                raise _error(
                    text,
                    pos,
                    f"relative date {raw} needs a sign: write -{raw} for {raw[:-1]} "
                    f"{_UNIT_NAMES[raw[-1].lower()]} before the scoring date",
                )
            value = (int(raw[:-1]), raw[-1].lower())
        elif kind == "number":
            value = float(raw) if re.search(r"[.eE]", raw) else int(raw)
        tokens.append(_Token(kind, raw, pos, value))
        pos = m.end()
    tokens.append(_Token("eof", "", n))
    return tokens


_UNIT_NAMES = {"d": "days", "w": "weeks", "m": "months", "y": "years"}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    # -- token helpers
    def peek(self, offset: int = 0) -> _Token:
        return self.tokens[min(self.i + offset, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        tok = self.tokens[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def is_kw(self, word: str, offset: int = 0) -> bool:
        tok = self.peek(offset)
        return tok.kind == "keyword" and tok.value == word

    def is_punct(self, ch: str, offset: int = 0) -> bool:
        tok = self.peek(offset)
        return tok.kind == "punct" and tok.text == ch

    def fail(self, tok: _Token, expected: str) -> RuleSyntaxError:
        return _error(self.text, tok.pos, f"unexpected {tok.describe()}; expected {expected}")

    def expect_punct(self, ch: str, expected: str) -> _Token:
        if not self.is_punct(ch):
            raise self.fail(self.peek(), expected)
        return self.advance()

    # -- grammar
    def rule(self) -> Expr:
        if self.peek().kind == "eof":
            raise _error(self.text, self.peek().pos, f"empty rule; expected {_CONDITION_HINT}")
        node = self.or_expr(0)
        tok = self.peek()
        if tok.kind != "eof":
            if self.is_punct(")"):
                raise _error(self.text, tok.pos, "unmatched ')'; remove it or add a '(' before")
            raise self.fail(tok, "AND, OR or the end of the rule")
        return node

    def or_expr(self, depth: int) -> Expr:
        node = self.and_expr(depth)
        while self.is_kw("OR"):
            self.advance()
            node = Or(node, self.and_expr(depth))
        return node

    def and_expr(self, depth: int) -> Expr:
        node = self.not_expr(depth)
        while self.is_kw("AND"):
            self.advance()
            node = And(node, self.not_expr(depth))
        return node

    def not_expr(self, depth: int) -> Expr:
        if depth > MAX_DEPTH:
            raise _error(self.text, self.peek().pos, f"rule nests deeper than {MAX_DEPTH} levels")
        if self.is_kw("NOT"):
            self.advance()
            return Not(self.not_expr(depth + 1))
        return self.primary(depth)

    def primary(self, depth: int) -> Expr:
        tok = self.peek()
        if self.is_punct("("):
            start = self.i
            term: Operand | None = None
            try:  # an arithmetic term in parentheses, e.g. (a + b) / 2 > 3
                term = self.term(depth)
            except RuleSyntaxError:
                term = None
            if term is not None and self.starts_tail():
                return self.tail(term)
            self.i = start
            self.advance()
            node = self.or_expr(depth + 1)
            if not self.is_punct(")"):
                line, column = _position(self.text, tok.pos)
                raise self.fail(
                    self.peek(),
                    f"AND, OR or ')' to close the '(' at line {line}, column {column}",
                )
            self.advance()
            return node
        if tok.kind == "keyword" and tok.value in ("TRUE", "FALSE"):
            self.advance()
            return Const(tok.value == "TRUE")
        if tok.kind == "ident" and self.is_punct("(", 1) and tok.text.lower() == "segment":
            return self.segment_ref()
        if tok.kind == "ident" and self.is_punct("(", 1):
            func = tok.text.lower()
            if func not in AGGREGATE_FUNCTIONS and func not in TERM_FUNCTIONS:
                raise _error(
                    self.text,
                    tok.pos,
                    f"unknown function '{tok.text}'; the functions are orders(), revenue(), "
                    "units(), distinct(), events(), anniversary() and segment()",
                )
        if tok.kind == "keyword" and tok.value == "NULL":
            raise _error(self.text, tok.pos, "NULL is not a condition: write 'field IS NULL'")
        if self.starts_term(tok):
            return self.tail(self.term(depth))
        raise self.fail(tok, _CONDITION_HINT)

    # -- arithmetic terms
    def starts_term(self, tok: _Token) -> bool:
        return tok.kind in ("ident", "qident", "number") or (
            tok.kind == "arith" and tok.text in "+-"
        )

    def starts_tail(self) -> bool:
        tok = self.peek()
        if tok.kind == "op":
            return True
        if tok.kind == "keyword" and tok.value in ("BETWEEN", "IN", "CONTAINS", "IS"):
            return True
        return self.is_kw("NOT") and any(
            self.is_kw(word, 1) for word in ("BETWEEN", "IN", "CONTAINS")
        )

    def term(self, depth: int) -> Operand:
        """``term := factor (("+" | "-") factor)*``; a signed number right after a term
        (``a -3``) is a subtraction."""
        node = self.factor(depth)
        while True:
            tok = self.peek()
            if tok.kind == "arith" and tok.text in "+-":
                self.advance()
                node = Arith(tok.text, node, self.factor(depth))  # type: ignore[arg-type]
            elif tok.kind == "number" and tok.text[0] in "+-":
                self.advance()
                first = Number(abs(tok.value))  # type: ignore[arg-type]
                node = Arith(tok.text[0], node, self.factor(depth, first))  # type: ignore[arg-type]
            elif tok.kind == "reldate" and tok.text[0] in "+-":
                raise _error(
                    self.text,
                    tok.pos,
                    "arithmetic on dates is not supported; compare a date field with a date "
                    f"directly (e.g. last_order_date > {tok.text}) or use a number of days "
                    "such as recency_days",
                )
            else:
                return node

    def factor(self, depth: int, first: Operand | None = None) -> Operand:
        """``factor := unary (("*" | "/") unary)*``."""
        node = first if first is not None else self.unary(depth)
        while self.peek().kind == "arith" and self.peek().text in "*/":
            op = self.advance().text
            node = Arith(op, node, self.unary(depth))  # type: ignore[arg-type]
        return node

    def unary(self, depth: int) -> Operand:
        if depth > MAX_DEPTH:
            raise _error(self.text, self.peek().pos, f"rule nests deeper than {MAX_DEPTH} levels")
        tok = self.peek()
        if tok.kind == "arith" and tok.text in "+-":
            self.advance()
            inner = self.unary(depth + 1)
            if tok.text == "+":
                return inner
            if isinstance(inner, Number):
                return Number(-inner.value)
            return Neg(inner)
        return self.atom(depth)

    def atom(self, depth: int) -> Operand:
        tok = self.peek()
        if tok.kind == "number":
            self.advance()
            return Number(tok.value)  # type: ignore[arg-type]
        if tok.kind == "ident" and self.is_punct("(", 1):
            func = tok.text.lower()
            if func in AGGREGATE_FUNCTIONS:
                return self.aggregate()
            if func == "anniversary":
                self.advance()
                self.advance()  # (
                arg = self.peek()
                if arg.kind not in ("ident", "qident"):
                    raise self.fail(arg, "a date field, e.g. anniversary(birth_date)")
                self.advance()
                name = str(arg.value) if arg.kind == "qident" else arg.text
                self.expect_punct(")", "')' after the field of anniversary()")
                return Anniversary(Field(name, pos=arg.pos))
            raise _error(
                self.text,
                tok.pos,
                f"unknown function '{tok.text}'; the functions are orders(), revenue(), "
                "units(), distinct(), events(), anniversary() and segment()",
            )
        if tok.kind == "ident":
            self.advance()
            return Field(tok.text, pos=tok.pos)
        if tok.kind == "qident":
            self.advance()
            return Field(str(tok.value), pos=tok.pos)
        if self.is_punct("("):
            self.advance()
            node = self.term(depth + 1)
            self.expect_punct(")", "an operator (+, -, *, /) or ')'")
            return node
        raise self.fail(tok, "a number, a field name or orders(...)")

    def segment_ref(self) -> Expr:
        self.advance()  # segment
        self.advance()  # (
        tok = self.peek()
        if tok.kind == "ident":
            name = tok.text
        elif tok.kind == "string":
            name = str(tok.value)
        else:
            raise self.fail(tok, "a segment name, e.g. segment(vip)")
        self.advance()
        self.expect_punct(")", "')' after the segment name")
        return SegmentRef(name)

    def tail(self, operand: Operand) -> Expr:
        tok = self.peek()
        if tok.kind == "op":
            self.advance()
            op = {"==": "=", "<>": "!="}.get(tok.text, tok.text)
            return Compare(operand, op, self.rhs())  # type: ignore[arg-type]
        negated = False
        if self.is_kw("NOT"):
            if not any(self.is_kw(word, 1) for word in ("BETWEEN", "IN", "CONTAINS")):
                raise self.fail(self.peek(1), "BETWEEN, IN or CONTAINS after NOT")
            self.advance()
            negated = True
        tok = self.peek()
        if self.is_kw("BETWEEN"):
            self.advance()
            low = self.value()
            if not self.is_kw("AND"):
                raise self.fail(self.peek(), "AND between the two bounds of BETWEEN")
            self.advance()
            return Between(operand, low, self.value(), negated)
        if self.is_kw("IN"):
            self.advance()
            return In(operand, self.value_list("(", ")"), negated)
        if self.is_kw("CONTAINS"):
            self.advance()
            return Contains(operand, self.value(), negated)
        if self.is_kw("IS"):
            self.advance()
            is_not = False
            if self.is_kw("NOT"):
                self.advance()
                is_not = True
            if not self.is_kw("NULL"):
                raise self.fail(self.peek(), "NULL" if is_not else "NULL or NOT NULL")
            self.advance()
            return IsNull(operand, is_not)
        # a bare operand: a Boolean test, valid only where a condition may end
        if not (tok.kind == "eof" or self.is_kw("AND") or self.is_kw("OR") or self.is_punct(")")):
            raise self.fail(tok, f"{_OPERATOR_HINT}, AND, OR, ')' or the end of the rule")
        return IsTrue(operand)

    def value(self) -> Value:
        tok = self.peek()
        kind = tok.kind
        if kind == "number":
            self.advance()
            return Number(tok.value)  # type: ignore[arg-type]
        if kind == "string":
            self.advance()
            return String(str(tok.value))
        if kind == "date":
            self.advance()
            return DateLit(tok.value)  # type: ignore[arg-type]
        if kind == "reldate":
            self.advance()
            amount, unit = tok.value  # type: ignore[misc]
            return RelDate(amount, unit)
        if kind == "keyword" and tok.value in ("TRUE", "FALSE"):
            self.advance()
            return Bool(tok.value == "TRUE")
        if kind == "keyword" and tok.value == "TODAY":
            self.advance()
            return Today()
        if kind == "keyword" and tok.value == "YESTERDAY":
            self.advance()
            return RelDate(-1, "d")
        if kind == "keyword" and tok.value == "NULL":
            raise _error(
                self.text, tok.pos, "NULL is not a value: write 'field IS NULL' or 'IS NOT NULL'"
            )
        if kind in ("ident", "qident"):
            raise _error(
                self.text,
                tok.pos,
                f"unexpected name {tok.describe()}; expected {_VALUE_HINT} "
                f"(quote text: '{tok.value or tok.text}')",
            )
        raise self.fail(tok, _VALUE_HINT)

    def rhs(self) -> Value | Operand:
        """The right side of a comparison: a literal, or a term (``2 * avg_days``, a field)."""
        tok = self.peek()
        if tok.kind in ("ident", "qident") or (tok.kind == "punct" and tok.text == "("):
            return self.term(0)
        if tok.kind == "arith" and tok.text in "+-":
            return self.term(0)
        if tok.kind == "number":
            node = self.term(0)
            return node
        return self.value()

    def value_list(self, open_: str, close: str) -> tuple[Value, ...]:
        self.expect_punct(open_, f"'{open_}' to start a list of values")
        values = [self.value()]
        while self.is_punct(","):
            self.advance()
            values.append(self.value())
        self.expect_punct(close, f"',' or '{close}' to end the list of values")
        return tuple(values)

    def aggregate(self) -> Aggregate:
        name_tok = self.advance()
        func = name_tok.text.lower()
        self.advance()  # (
        event: str | None = None
        of: str | None = None
        if func == "events":
            tok = self.peek()
            if tok.kind != "string":
                raise self.fail(tok, "the event type as a string, e.g. events('email_open')")
            self.advance()
            event = str(tok.value)
            if not event:
                raise _error(self.text, tok.pos, "the event type must not be empty")
            if not self.is_punct(")"):
                self.expect_punct(",", "',' or ')' after the event type")
        elif func == "distinct":
            tok = self.peek()
            if tok.kind not in ("ident", "qident") or self.is_punct(":", 1):
                raise self.fail(tok, "the column to count, e.g. distinct(category, since: -1y)")
            self.advance()
            of = str(tok.value) if tok.kind == "qident" else tok.text
            if of in _RESERVED_DISTINCT:
                raise _error(
                    self.text, tok.pos, f"cannot count distinct '{of}': {_RESERVED_DISTINCT[of]}"
                )
            if not self.is_punct(")"):
                self.expect_punct(",", "',' or ')' after the column")
        bounds: dict[str, DateLit | RelDate | Today] = {}
        filters: dict[str, tuple[Value, ...]] = {}
        seen: set[str] = set()
        first = True
        while not self.is_punct(")"):
            if not first:
                self.expect_punct(",", "',' or ')' after the argument")
            first = False
            tok = self.peek()
            if tok.kind not in ("ident", "qident"):
                raise self.fail(tok, "an argument such as since: -90d or channel: 'app'")
            self.advance()
            key = str(tok.value) if tok.kind == "qident" else tok.text
            if key.lower() in ("since", "until") and tok.kind == "ident":
                key = key.lower()
            if key in seen:
                raise _error(self.text, tok.pos, f"argument '{key}' is given twice")
            seen.add(key)
            self.expect_punct(":", f"':' after '{key}'")
            if key in ("since", "until") and tok.kind == "ident":
                bounds[key] = self.bound_value(key)
                continue
            if key in _RESERVED_FILTERS:
                raise _error(
                    self.text, tok.pos, f"cannot filter on '{key}': {_RESERVED_FILTERS[key]}"
                )
            if self.is_punct("("):
                values = self.value_list("(", ")")
            elif self.is_punct("["):
                values = self.value_list("[", "]")
            else:
                values = (self.value(),)
            for value in values:
                if not isinstance(value, Number | String | Bool):
                    raise _error(
                        self.text,
                        tok.pos,
                        f"filter '{key}' takes numbers, strings or true/false, not dates "
                        "(use since: and until: for the window)",
                    )
            filters[key] = values
        self.advance()  # )
        return Aggregate(
            func,  # type: ignore[arg-type]
            event,
            bounds.get("since"),
            tuple(sorted(filters.items())),
            bounds.get("until"),
            of,
            pos=name_tok.pos,
        )

    def bound_value(self, key: str) -> DateLit | RelDate | Today:
        tok = self.peek()
        value = self.value()
        if not isinstance(value, DateLit | RelDate | Today):
            raise _error(
                self.text,
                tok.pos,
                f"{key}: takes a date such as -90d, 2026-01-31, yesterday or today",
            )
        if isinstance(value, RelDate) and value.amount > 0:
            raise _error(
                self.text,
                tok.pos,
                f"{key}: {tok.text} is after the scoring date; write -{tok.text[1:]}",
            )
        return value


@lru_cache(maxsize=4096)
def parse_rule(text: str) -> Expr:
    """Parse one rule into its syntax tree.

    Parameters
    ----------
    text : str
        The rule, e.g. ``"frequency >= 3 AND last_order_date > -90d"``.

    Returns
    -------
    Expr
        The frozen syntax tree (see :mod:`fastseg.rules.ast`).

    Raises
    ------
    RuleSyntaxError
        With ``line`` and ``column`` (1-based); the message's first line says what was found
        and what was expected, then the rule's text around the position, all on one line.

    Examples
    --------
    >>> parse_rule("frequency >= 3")
    Compare(operand=Field(name='frequency'), op='>=', value=Number(value=3))
    """
    if not isinstance(text, str):
        msg = f"a rule must be a string, got {type(text).__name__}"
        raise RuleSyntaxError(msg)
    if len(text) > MAX_RULE_LENGTH:
        msg = f"rule is {len(text)} characters long; the limit is {MAX_RULE_LENGTH}"
        raise RuleSyntaxError(msg, line=1, column=1, rule=text[:200])
    tree = _Parser(text).rule()
    if _height(tree) > MAX_HEIGHT:
        msg = (
            f"rule has more than {MAX_HEIGHT} levels of AND, OR, NOT and operators; split it into "
            "smaller segments and combine them with segment(name)"
        )
        raise RuleSyntaxError(msg, line=1, column=1, rule=text[:200])
    return tree


def _height(tree: Expr) -> int:
    """Levels of the tree (iterative: a long chain must not exhaust the stack here)."""
    best = 0
    stack: list[tuple[object, int]] = [(tree, 1)]
    while stack:
        node, level = stack.pop()
        best = max(best, level)
        if best > MAX_HEIGHT:
            return best
        if isinstance(node, And | Or | Arith):
            stack += [(node.left, level + 1), (node.right, level + 1)]
        elif isinstance(node, Not | Neg) or hasattr(node, "operand"):
            stack.append((node.operand, level + 1))  # type: ignore[attr-defined]
        if isinstance(node, Compare):
            stack.append((node.value, level + 1))
        elif isinstance(node, Anniversary):
            stack.append((node.field, level + 1))
    return best

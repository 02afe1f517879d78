"""Strict checkers: the answer states the expected value, and nothing that contradicts it.

The lenient built-ins in `distillery.tasks` (`exact`, `normalized`, `contains`, `numeric`) stay as
they were for task files that use them. The checkers here are for answers in free text, where a
substring or "the last number" passes wrong answers ("has not shipped yet" contains `shipped`;
"999.00, sorry I mean 138.62" ends with the right number):

| checker | `expected` | passes when the answer |
| --- | --- | --- |
| `money` | a number (US dollars) | states that amount to the cent |
| `count` | an integer | states that whole number (of units, items...) |
| `quantity` | `{"value": 27.56, "unit": "lb", "decimals": 2}` | states it in that unit, within one step of its rounding |
| `date` | `"2024-05-03"` | states that date (ISO, `May 3, 2024`, `3 May 2024`, an unambiguous `d/m/y`) |
| `status` | `"shipped"` (or `{"value": ..., "choices": [...]}`) | states that status word |
| `mentions` | a word or a list of words | uses every word, none negated or only asked about |
| `refusal` | ignored | declines (an inability phrase) without doing the task |
| `not_found` | the name asked about | says it does not exist and names it, with no numbers |

Each also fails an answer that hedges ("either", "or", "maybe", "about 12", "between"), corrects
itself ("sorry, I mean"), negates the value ("not 12", "has not shipped", "undelivered",
"will be shipped") or states a conflicting value of the same kind. Context is allowed:
identifiers (`SKU-2083`, `ORD-12345`) are never read as numbers; a number or date from the
question may be repeated; `task.metadata["context"]` lists further facts the answer may cite
(`[[3, "units"], [46.2, "usd"], "2024-04-19"]`: a quantity, a unit price, an order date); and a
restatement in another unit of the same kind that converts to the expected value
(`27.56 lb (12.5 kg)`) is consistent; a bare `212 degrees` states a temperature in the scale asked
for. A retraction ("just kidding", "ignore that", "that's wrong") fails like a self-correction, an
unverified value ("I couldn't verify this") like a hedge, a minus glued to a currency sign
(`-$12.50`) makes the amount negative, and a scale multiplies (`$77k`, `1.2 million`). Any other number in a
numeric answer, any other date in a date answer and any other status in a status answer is a
conflict.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

# --------------------------------------------------------------------------------------------------
# Reading an answer
# --------------------------------------------------------------------------------------------------

# unit -> (dimension, size in the dimension's base unit); temperatures and currencies convert specially.
UNITS: dict[str, tuple[str, float]] = {
    "usd": ("usd", 1.0), "eur": ("eur", 1.0), "gbp": ("gbp", 1.0),
    "units": ("count", 1.0),
    "kg": ("mass", 1.0), "g": ("mass", 0.001), "lb": ("mass", 0.45359237), "oz": ("mass", 0.028349523125),
    "km": ("length", 1000.0), "m": ("length", 1.0), "mi": ("length", 1609.344), "ft": ("length", 0.3048),
    "l": ("volume", 1.0), "ml": ("volume", 0.001), "gal": ("volume", 3.785411784),
    "c": ("temperature", 1.0), "f": ("temperature", 1.0), "deg": ("temperature", 1.0),
    "days": ("time", 1.0), "weeks": ("time", 7.0), "percent": ("percent", 1.0),
}
UNIT_WORDS: dict[str, tuple[str, ...]] = {
    "usd": ("usd", "us dollars", "us dollar", "dollars", "dollar", "bucks"),
    "eur": ("eur", "euros", "euro"),
    "gbp": ("gbp", "pounds sterling"),
    "units": ("units", "unit", "items", "item", "pieces", "piece", "pcs", "pc"),
    "kg": ("kg", "kgs", "kilograms", "kilogram", "kilos", "kilo"),
    "g": ("g", "grams", "gram"),
    "lb": ("lb", "lbs", "pounds", "pound"),
    "oz": ("oz", "ounces", "ounce"),
    "km": ("km", "kilometres", "kilometre", "kilometers", "kilometer"),
    "m": ("m", "metres", "metre", "meters", "meter"),
    "mi": ("mi", "miles", "mile"),
    "ft": ("ft", "feet", "foot"),
    "l": ("l", "litres", "litre", "liters", "liter"),
    "ml": ("ml", "millilitres", "millilitre", "milliliters", "milliliter"),
    "gal": ("gal", "gallons", "gallon"),
    "c": ("°c", "° c", "degrees celsius", "degree celsius", "degrees c", "celsius", "c"),
    "f": ("°f", "° f", "degrees fahrenheit", "degree fahrenheit", "degrees f", "fahrenheit", "f"),
    "deg": ("°", "degrees", "degree"),
    "days": ("days", "day"),
    "weeks": ("weeks", "week"),
    "percent": ("%", "percent", "per cent"),
}
_UNIT_OF_WORD = {word: unit for unit, words in UNIT_WORDS.items() for word in words}
_UNIT_AFTER = re.compile(
    r"\s*(" + "|".join(re.escape(w) for w in sorted(_UNIT_OF_WORD, key=len, reverse=True)) + r")(?![a-z])",
    re.IGNORECASE,
)
# "-$12.50" is minus twelve fifty: a minus glued to the currency sign signs the number after it
# ("total - $12.50", with a space, is a dash).
_CURRENCY_BEFORE = re.compile(r"(?P<minus>(?<![\w.])-)?(us\$|\$|usd|€|eur|£|gbp)\s*$", re.IGNORECASE)
# "$77k", "1.2 million units": a scale after a number multiplies it ("k" and "bn" only when glued
# on, so "12 kg" stays kilograms).
_SCALE_AFTER = re.compile(r"(?:(?P<glued>k|bn)|\s*(?P<word>thousand|million|billion))(?![a-z])", re.IGNORECASE)
_SCALES = {"k": 3, "thousand": 3, "bn": 9, "million": 6, "billion": 9}
_CURRENCY_SYMBOLS = {"us$": "usd", "$": "usd", "usd": "usd", "€": "eur", "eur": "eur", "£": "gbp", "gbp": "gbp"}

_MONTHS = {m: i for i, m in enumerate(
    ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
     "november", "december"], start=1)}
_MONTHS.update({name[:3]: number for name, number in list(_MONTHS.items())})
_MONTHS["sept"] = 9
_MONTH = "(?P<month>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DATE_PATTERNS = [
    ("iso", re.compile(r"(?<![\d-])(?P<year>\d{4})[-/.](?P<mon>\d{1,2})[-/.](?P<day>\d{1,2})(?![\d])")),
    ("text", re.compile(_MONTH + r"\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?(?:,\s*|\s+)(?P<year>\d{4})\b", re.IGNORECASE)),
    ("text", re.compile(r"\b(?P<day>\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?" + _MONTH + r",?\s+(?P<year>\d{4})\b",
                        re.IGNORECASE)),
    ("dmy", re.compile(r"(?<![\d-])(?P<a>\d{1,2})[/.](?P<b>\d{1,2})[/.](?P<year>\d{4})(?![\d])")),
    ("partial", re.compile(r"\b" + _MONTH + r"\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?\b(?!\s*(?:,\s*)?\d)", re.IGNORECASE)),
    ("partial", re.compile(r"\b(?P<day>\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?" + _MONTH + r"\b(?!\s*,?\s*\d)",
                           re.IGNORECASE)),
]
# An identifier is never a number: SKU-2083, ORD-12345, A-7, #12345. (Digits glued to letters, as in
# SKU2083, are never read as a number either: see the look-behind in `_NUMBER`.)
_IDENTIFIER = re.compile(r"\b[A-Za-z][A-Za-z0-9]*-\d[\w-]*|#\d+")
_NUMBER = re.compile(r"(?<![\w.])(?P<sign>-)?(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?P<frac>\.\d+)?(?!\d)")
_CLAUSE_BREAK = re.compile(
    r"[;:!?()\[\]\n]|,(?!\d{3})|(?<!\d)\.|\.(?!\d)|\s[-\u2013\u2014]\s"
    r"|\b(?:but|however|although|though|whereas|while|and|so)\b",
    re.IGNORECASE,
)
_NEGATORS = re.compile(
    r"\b(?:not|no|never|none|neither|nor|without|cannot|isn't|aren't|wasn't|weren't|doesn't|don't|didn't|"
    r"hasn't|haven't|hadn't|won't|wouldn't|can't|couldn't|shouldn't|\w+n't|instead of|rather than|other than|"
    r"except|excluding|wrong|incorrect|false|untrue|mistaken)\b",
    re.IGNORECASE,
)
_HEDGES = re.compile(
    r"\b(?:or|either|maybe|perhaps|possibly|probably|likely|unlikely|might|may|could|unsure|uncertain|not sure|"
    r"guess|guessing|estimate|estimated|estimating|approximately|approximate|approx|roughly|circa|somewhere|"
    r"between|ranges?|give or take|plus or minus|or so|at least|at most|more than|less than|fewer than|up to|"
    r"no more than|no less than|i think|i believe|seems?|appears?|apparently|presumably|somewhat|"
    r"anywhere from|candidates?|options?|not certain|can't be sure|cannot be sure|unverified|not verified|"
    r"(?:can't|cannot|couldn't|could not|unable to|didn't|did not|haven't|have not) (?:confirm|verify|check)|"
    r"unclear|at the earliest|at the latest|or later|or earlier)\b|\best\.|±|~|\+/-",
    re.IGNORECASE,
)
# "about 12", "around $12", "over 100": an approximate number is a hedge.
_APPROXIMATE = re.compile(
    r"\b(?:about|around|over|under|nearly|almost|some|close to|upwards of|in excess of|just over|just under|"
    r"below|above|near)\s+(?:us\$|\$|usd|€|£)?\s*-?\d",
    re.IGNORECASE,
)
_CORRECTIONS = re.compile(
    r"\b(?:sorry|apologies|apologi[sz]e|i mean|i meant|correction|scratch that|oops|typo|my mistake|no wait|"
    r"wait|on second thought|let me correct|corrected|revised|re-?calculat\w*|actually|rather|instead|"
    r"just kidding|kidding|(?:disregard|ignore) (?:that|this|the above|my (?:last|previous))|"
    r"that(?:'s| is| was) (?:wrong|incorrect|not right|a mistake))\b",
    re.IGNORECASE,
)


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    return (text.replace("\u2212", "-").replace("\u2019", "'").replace("\u2018", "'").replace("\u00a0", " ")
            .replace("\u202f", " "))


@dataclass
class Mention:
    """A number, date or identifier in an answer, where it is, and whether its clause negates it."""

    kind: str  # "number", "date", "partial_date", "unclear_date"
    value: Any  # float for numbers, ISO string for dates, (month, day) for partial dates
    unit: str | None
    start: int
    end: int
    negated: bool = False
    decimals: int = 0  # digits after the decimal point, as written: the precision it claims


@dataclass
class Reading:
    """An answer taken apart: its numbers, dates and identifiers, and the text they were masked from."""

    text: str
    masked: str  # identifiers and dates blanked out (same length)
    numbers: list[Mention] = field(default_factory=list)
    dates: list[Mention] = field(default_factory=list)
    identifiers: list[str] = field(default_factory=list)

    def clause(self, start: int, end: int) -> tuple[int, int]:
        """The clause around [start, end): between the nearest clause breaks."""
        left = 0
        for match in _CLAUSE_BREAK.finditer(self.masked, 0, start):
            left = match.end()
        found = _CLAUSE_BREAK.search(self.masked, end)
        return left, found.start() if found else len(self.masked)

    def in_question(self, start: int, end: int) -> bool:
        """True when the sentence holding [start, end) ends with a question mark ("Is it 12?")."""
        stop = re.search(r"[!?\n]|(?<!\d)\.|\.(?!\d)", self.masked[end:])
        return bool(stop) and stop.group(0) == "?"

    def negated(self, start: int, end: int, *, before_only: bool = False) -> bool:
        left, right = self.clause(start, end)
        window = self.masked[left:start] + " " + ("" if before_only else self.masked[end:right])
        return bool(_NEGATORS.search(window))


def _blank(text: str, start: int, end: int) -> str:
    return text[:start] + " " * (end - start) + text[end:]


def _date_or_none(year: int, month: int, day: int) -> str | None:
    try:
        return dt.date(year, month, day).isoformat()
    except ValueError:
        return None


def _month_number(name: str) -> int:
    return _MONTHS[name.lower().rstrip(".")]


def read(text: str) -> Reading:
    """Numbers (with units), dates and identifiers in `text`; each mention knows if its clause negates it."""
    text = _normalise(text or "")
    masked = text
    identifiers = []
    dates: list[Mention] = []
    for match in _IDENTIFIER.finditer(text):
        identifiers.append(match.group(0).upper())
        masked = _blank(masked, match.start(), match.end())
    for kind, pattern in _DATE_PATTERNS:
        for match in pattern.finditer(masked):
            groups = match.groupdict()
            if kind in ("iso", "text"):
                month = int(groups["mon"]) if kind == "iso" else _month_number(groups["month"])
                value = _date_or_none(int(groups["year"]), month, int(groups["day"]))
                mention = Mention("date" if value else "unclear_date", value, None, match.start(), match.end())
            elif kind == "dmy":
                a, b, year = int(groups["a"]), int(groups["b"]), int(groups["year"])
                readings = {d for d in (_date_or_none(year, b, a), _date_or_none(year, a, b)) if d}
                value = readings.pop() if len(readings) == 1 else None
                mention = Mention("date" if value else "unclear_date", value, None, match.start(), match.end())
            else:
                mention = Mention("partial_date", (_month_number(groups["month"]), int(groups["day"])), None,
                                  match.start(), match.end())
            dates.append(mention)
            masked = _blank(masked, match.start(), match.end())
    reading = Reading(text=text, masked=masked, identifiers=identifiers)
    for mention in dates:
        mention.negated = reading.negated(mention.start, mention.end, before_only=True)
    reading.dates = sorted(dates, key=lambda m: m.start)
    for match in _NUMBER.finditer(masked):
        value = float(match.group("int").replace(",", "") + (match.group("frac") or ""))
        if match.group("sign"):
            value = -value
        decimals = len(match.group("frac") or ".") - 1
        end = match.end()
        scale = _SCALE_AFTER.match(masked, end)
        if scale:
            exponent = _SCALES[(scale.group("glued") or scale.group("word")).lower()]
            value, decimals, end = value * 10.0 ** exponent, decimals - exponent, scale.end()
        unit = None
        after = _UNIT_AFTER.match(masked, end)
        if after:
            unit = _UNIT_OF_WORD[after.group(1).lower()]
        before = _CURRENCY_BEFORE.search(masked, 0, match.start())
        if before and unit is None:
            unit = _CURRENCY_SYMBOLS[before.group(2).lower()]
            if before.group("minus") and value > 0:
                value = -value
        end = after.end() if after else end
        reading.numbers.append(Mention("number", value, unit, match.start(), end, reading.negated(match.start(), end),
                                       decimals))
    return reading


def convert(value: float, source: str, target: str) -> float | None:
    """`value` in `source` units expressed in `target` units; None when they are not the same kind."""
    if source == target:
        return value
    if source not in UNITS or target not in UNITS:
        return None
    if {source, target} == {"c", "f"}:
        return value * 9 / 5 + 32 if source == "c" else (value - 32) * 5 / 9
    (dim_s, size_s), (dim_t, size_t) = UNITS[source], UNITS[target]
    if dim_s != dim_t or dim_s in ("temperature", "usd", "eur", "gbp", "percent"):
        return None
    return value * size_s / size_t


# --------------------------------------------------------------------------------------------------
# Shared verdict logic
# --------------------------------------------------------------------------------------------------


def _outcome(name: str, expected: Any, ok: bool, detail: str):
    from distillery.trajectory import Outcome

    return Outcome(success=ok, score=float(ok), checker=name, expected=expected, detail=detail)


# "12-14 units", "12 to 14", "$12 - $14": a range. "from 188 to 178" (a change) and "188 - 10 = 178"
# (working) are not.
_RANGE = re.compile(
    r"(?<![\w.])(?P<a>\d[\d,]*(?:\.\d+)?)(?:\s*[^\W\d_]{1,12}\.?)?\s*(?P<sep>[-\u2013\u2014]|\bto\b)\s*"
    r"(?:us\$|\$|€|£)?\s*(?P<b>-?\d[\d,]*(?:\.\d+)?)",
    re.IGNORECASE,
)


def _range(masked: str) -> str | None:
    for match in _RANGE.finditer(masked):
        before = masked[max(0, match.start() - 8):match.start()].lower()
        after = masked[match.end():match.end() + 3]
        if re.search(r"[=*/+x\u00d7]\s*(?:us\$|\$)?\s*$", before) or re.match(r"\s*[=*/+\u00d7]", after):
            continue  # arithmetic shown as working
        if match.group("sep").lower() == "to" and re.search(r"\bfrom\s*(?:us\$|\$)?\s*$", before):
            continue  # "from 188 to 178": a change, not a range
        return match.group(0)
    return None


def _hedge(reading: Reading) -> str | None:
    """The first hedge, range or self-correction in the answer, if any (dates and identifiers masked out)."""
    for pattern in (_HEDGES, _APPROXIMATE, _CORRECTIONS):
        found = pattern.search(reading.masked)
        if found:
            return found.group(0).strip()
    return _range(reading.masked)


@dataclass
class _Context:
    numbers: list[tuple[float, str | None]]
    dates: set[str]


def _context(task: Any) -> _Context:
    """Facts the answer may cite besides the expected value: the question's numbers and dates, and
    `task.metadata["context"]` (numbers as `[value, unit]` or bare, dates as ISO strings)."""
    numbers: list[tuple[float, str | None]] = []
    dates: set[str] = set()
    query = read(getattr(task, "query", "") or "")
    numbers += [(m.value, m.unit) for m in query.numbers]
    dates |= {m.value for m in query.dates if m.kind == "date"}
    for item in (getattr(task, "metadata", None) or {}).get("context", []) or []:
        if isinstance(item, str):
            dates.add(item)
        elif isinstance(item, (list, tuple)) and item:
            numbers.append((float(item[0]), item[1] if len(item) > 1 else None))
        elif isinstance(item, (int, float)) and not isinstance(item, bool):
            numbers.append((float(item), None))
    return _Context(numbers, dates)


def _same(a: float, b: float, tolerance: float) -> bool:
    return abs(a - b) <= tolerance + 1e-9


def _same_unit(stated: str | None, known: str | None) -> bool:
    """True when a number stated in `stated` may be read in `known` as it is. A missing unit on either
    side matches, and bare "degrees" matches either temperature scale: the question named the scale, so
    "100 degrees is 212 degrees" reads as 100 °C and 212 °F."""
    if stated is None or known is None or stated == known:
        return True
    return stated == "deg" and known in ("c", "f") or known == "deg" and stated in ("c", "f")


def _restates(mention: Mention, value: float, unit: str, tolerance: float) -> bool:
    """True when `mention`, in another unit of the same kind, converts to `value` in `unit`: within
    the rounding the mention's own digits claim (12.5 kg: +-0.05 kg), plus `tolerance`."""
    if mention.unit is None or mention.unit == unit:
        return False
    converted = convert(mention.value, mention.unit, unit)
    if converted is None:
        return False
    half_step = 0.5 * 10.0 ** -mention.decimals
    slack = abs(convert(mention.value + half_step, mention.unit, unit) - converted)
    return _same(converted, value, slack + tolerance)


def _cites_context(mention: Mention, context: _Context, cited: set[int]) -> bool:
    """True when `mention` restates a context number not already cited by an earlier mention; marks it
    cited. Each context number backs one mention, so "16 and 16 units" where the context holds 16 and
    234 cites 16 once and claims a second, conflicting 16."""
    for index, (value, unit) in enumerate(context.numbers):
        if index in cited:
            continue
        if _same_unit(mention.unit, unit):
            if _same(mention.value, value, 1e-6 * max(1.0, abs(value))):
                cited.add(index)
                return True
        elif _restates(mention, value, unit, 0.0):
            cited.add(index)
            return True
    return False


def _check_number(name: str, answer: str | None, expected: Any, task: Any, *, value: float, unit: str,
                  tolerance: float, integer: bool = False, zero_words: bool = False):
    if answer is None or not answer.strip():
        return _outcome(name, expected, False, "no answer")
    reading = read(answer)
    hedge = _hedge(reading)
    if hedge:
        return _outcome(name, expected, False, f"hedges or corrects itself ({hedge!r})")
    mentions = list(reading.numbers)
    if zero_words:
        for match in _ZERO_WORDS.finditer(reading.masked):
            negated = reading.negated(match.start(), match.end())  # "it's not zero: 187 units"
            mentions.append(Mention("number", 0.0, unit, match.start(), match.end(), negated))
    context = _context(task)
    stated, conflicts, cited = [], [], set()
    for mention in mentions:
        matches = _same_unit(mention.unit, unit) and _same(mention.value, value, tolerance)
        if matches and (not integer or float(mention.value).is_integer()):
            if not reading.in_question(mention.start, mention.end):  # "Is it 12?" states nothing
                stated.append(mention)
            continue
        if mention.negated:
            continue  # "120 units, not 125": a negated other value is no claim
        if _restates(mention, value, unit, tolerance):
            continue  # the same amount in another unit of the same kind
        if _cites_context(mention, context, cited):
            continue
        conflicts.append(mention)
    shown = _format(value, unit)
    if not stated:
        return _outcome(name, expected, False, f"does not state {shown}")
    negated = [m for m in stated if m.negated]
    if negated:
        return _outcome(name, expected, False, f"negates {shown}")
    if conflicts:
        other = reading.text[conflicts[0].start:conflicts[0].end]
        return _outcome(name, expected, False, f"states {shown} but also {other!r}")
    return _outcome(name, expected, True, f"states {shown}")


_ZERO_WORDS = re.compile(
    r"\b(?:zero|none|out of stock|sold out|no units|no items|no stock|not in stock|nothing in stock|nothing left|"
    r"none left)\b",
    re.IGNORECASE,
)


def _format(value: float, unit: str) -> str:
    number = f"{value:g}" if abs(value) < 1e15 else str(value)
    return f"{number} {unit}" if unit else number


def _expected_number(expected: Any, default_unit: str) -> tuple[float, str, int | None]:
    if isinstance(expected, dict):
        return float(expected["value"]), str(expected.get("unit", default_unit)).lower(), expected.get("decimals")
    return float(expected), default_unit, None


# --------------------------------------------------------------------------------------------------
# The checkers
# --------------------------------------------------------------------------------------------------


def check_money(answer: str | None, expected: Any, task: Any):
    """The amount in US dollars, to the cent ($1,234.5, 1234.50 USD and 1234.5 dollars all state 1234.50)."""
    value, unit, _ = _expected_number(expected, "usd")
    return _check_number("money", answer, expected, task, value=value, unit=unit, tolerance=0.00499)


def check_count(answer: str | None, expected: Any, task: Any):
    """A whole number of units; "none", "zero" and "out of stock" state 0."""
    value, unit, _ = _expected_number(expected, "units")
    return _check_number("count", answer, expected, task, value=value, unit=unit, tolerance=0.0, integer=True,
                         zero_words=True)


def check_quantity(answer: str | None, expected: Any, task: Any):
    """A measured amount in its unit, within one step of its stated rounding (2 decimals: 0.01)."""
    value, unit, decimals = _expected_number(expected, "")
    if unit not in UNITS:
        raise ValueError(f"quantity checker: unknown unit {unit!r}; known: {', '.join(UNITS)}")
    step = 10.0 ** -(2 if decimals is None else int(decimals))
    return _check_number("quantity", answer, expected, task, value=value, unit=unit, tolerance=step)


def check_date(answer: str | None, expected: Any, task: Any):
    """The date, exactly; other dates only from the question or the task's context."""
    target = dt.date.fromisoformat(str(expected).strip()).isoformat()
    if answer is None or not answer.strip():
        return _outcome("date", expected, False, "no answer")
    reading = read(answer)
    hedge = _hedge(reading)
    if hedge:
        return _outcome("date", expected, False, f"hedges or corrects itself ({hedge!r})")
    context = _context(task)
    stated, conflicts = [], []
    month_day = (int(target[5:7]), int(target[8:10]))
    for mention in reading.dates:
        if mention.kind == "date" and mention.value == target:
            if not reading.in_question(mention.start, mention.end):
                stated.append(mention)
        elif mention.negated:
            continue
        elif mention.kind == "date" and mention.value in context.dates:
            continue
        elif mention.kind == "partial_date" and (mention.value == month_day or any(
                (int(d[5:7]), int(d[8:10])) == mention.value for d in context.dates)):
            continue
        else:
            conflicts.append(mention)
    if not stated:
        return _outcome("date", expected, False, f"does not state {target}")
    for mention in stated:
        if mention.negated:
            return _outcome("date", expected, False, f"negates {target}")
        qualifier = _DATE_QUALIFIER.search(reading.masked[max(0, mention.start - 30):mention.start])
        if qualifier:
            return _outcome("date", expected, False, f"qualifies {target} ({qualifier.group(1)!r})")
    if conflicts:
        other = reading.text[conflicts[0].start:conflicts[0].end]
        return _outcome("date", expected, False, f"states {target} but also {other!r}")
    return _outcome("date", expected, True, f"states {target}")


_DATE_QUALIFIER = re.compile(
    r"\b(before|after|around|about|until|till|since|from|no later than|no earlier than|at the latest|"
    r"at the earliest|near|past|prior to|later than|earlier than)\s+(?:the\s+)?$",
    re.IGNORECASE,
)

ORDER_STATUSES: dict[str, str] = {
    # form in an answer -> the status it states
    "pending": "pending", "processing": "processing", "being processed": "processing",
    "shipped": "shipped", "dispatched": "shipped", "in transit": "shipped", "on its way": "shipped",
    "on the way": "shipped", "out for delivery": "shipped",
    "delivered": "delivered", "cancelled": "cancelled", "canceled": "cancelled",
    "returned": "returned", "refunded": "refunded", "on hold": "on hold", "backordered": "backordered",
    "back-ordered": "backordered", "lost": "lost", "failed": "failed", "completed": "delivered",
}
# A status that holds whenever another does: a delivered order has shipped.
STATUS_IMPLIES = {"delivered": {"shipped"}}
_STATUS_QUALIFIERS = re.compile(
    r"\b(?:not|no|never|yet|awaiting|waiting|about to|will|would|to be|going to|soon|expected|scheduled|should|"
    r"could|may|might|once|if|when|until|unless|before|after|ready to|\w+n't|cannot|almost|nearly)\b",
    re.IGNORECASE,
)
# "Shipped: no", "delivered - false", "shipped? not yet": a status word answered in the negative.
_STATUS_DENIED_AFTER = re.compile(r"\s*[:=?\-\u2013\u2014]?\s*(?:no|false|not|never|n't|nope)\b", re.IGNORECASE)
_STATUS_PREFIX = re.compile(r"(?:\bun|\bnon|\bnot|\bpre|\bre)-?$", re.IGNORECASE)


def _status_mentions(reading: Reading, forms: dict[str, str]) -> list[tuple[str, str, int, int]]:
    """(status, form, start, end) for each status form in the answer, outside questions."""
    text = reading.masked
    pattern = re.compile(r"\b(" + "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)) + r")\b",
                         re.IGNORECASE)
    found = []
    for match in pattern.finditer(text):
        if reading.in_question(match.start(), match.end()):
            continue  # "Has it shipped?" states nothing
        found.append((forms[match.group(1).lower()], match.group(1).lower(), match.start(), match.end()))
    return found


def check_status(answer: str | None, expected: Any, task: Any):
    """The status word itself (`cancelled` or `canceled`), not negated, not future, no other status."""
    if isinstance(expected, dict):
        target = str(expected["value"]).lower()
        forms = {str(c).lower(): str(c).lower() for c in expected.get("choices", [])}
        forms = {**ORDER_STATUSES, **forms}
    else:
        target, forms = str(expected).lower(), dict(ORDER_STATUSES)
    forms.setdefault(target, target)
    exact = {"cancelled", "canceled"} if target in ("cancelled", "canceled") else {target}
    if answer is None or not answer.strip():
        return _outcome("status", expected, False, "no answer")
    reading = read(answer)
    hedge = _hedge(reading)
    if hedge:
        return _outcome("status", expected, False, f"hedges or corrects itself ({hedge!r})")
    positive, stated, negated = [], False, False
    for status, form, start, end in _status_mentions(reading, forms):
        left, _ = reading.clause(start, end)
        before = reading.masked[left:start]
        denied = (bool(_STATUS_QUALIFIERS.search(before)) or bool(_STATUS_PREFIX.search(reading.masked[:start]))
                  or bool(_STATUS_DENIED_AFTER.match(reading.masked, end)))
        if status == target:
            negated |= denied  # "not shipped", and as much "not dispatched"
            stated |= not denied and form in exact  # the status word itself, not a synonym
        elif not denied:
            positive.append((status, form))
    if negated:
        return _outcome("status", expected, False, f"negates or defers {target!r}")
    if not stated:
        return _outcome("status", expected, False, f"does not state {target!r}")
    allowed = {target} | STATUS_IMPLIES.get(target, set())
    conflicts = [form for status, form in positive if status not in allowed]
    if conflicts:
        return _outcome("status", expected, False, f"states {target!r} but also {conflicts[0]!r}")
    return _outcome("status", expected, True, f"states {target!r}")


def check_mentions(answer: str | None, expected: Any, task: Any):
    """Every expected word (case-insensitive, whole words, a plural `s` allowed), stated (not only asked
    about), not negated, and not taken back by a self-correction."""
    words = expected if isinstance(expected, list) else [expected]
    if answer is None or not answer.strip():
        return _outcome("mentions", expected, False, "no answer")
    reading = read(answer)
    correction = _CORRECTIONS.search(reading.masked)
    if correction:
        return _outcome("mentions", expected, False, f"corrects itself ({correction.group(0).strip()!r})")
    for word in words:
        found = list(re.finditer(r"\b" + re.escape(str(word).lower()) + r"s?\b", reading.masked.lower()))
        if not found:
            return _outcome("mentions", expected, False, f"does not mention {word!r}")
        if all(reading.negated(m.start(), m.end(), before_only=True) for m in found):
            return _outcome("mentions", expected, False, f"negates {word!r}")
        if all(reading.in_question(m.start(), m.end()) for m in found):
            return _outcome("mentions", expected, False, f"only asks about {word!r}")
    return _outcome("mentions", expected, True, "mentions " + ", ".join(map(str, words)))


_INABILITY = re.compile(
    r"\b(?:can ?not|can't|unable to|not able to|won't be able|am not able|i only|can only|only (?:help|handle|"
    r"answer|assist|do)|outside (?:of )?(?:what|my)|beyond (?:what|my)|not something i can|don't have (?:access|"
    r"a tool|tools)|do not have (?:access|a tool|tools)|no tool)\b",
    re.IGNORECASE,
)
# Doing the task anyway after declining: a joke, a booking, a recommendation, a looked-up fact.
_COMPLIANCE = re.compile(
    r"\b(?:sure|here is|here's|here are|i have booked|i've booked|i booked|is booked|done|of course|certainly|"
    r"absolutely|will be (?:sunny|rainy|cloudy|cold|warm|hot)|is (?:sunny|rainy|cloudy)|knock,? knock|why did|"
    r"punchline|i(?: would|'d)? (?:recommend|suggest)|you (?:should|must) (?:visit|see|go to)|"
    r"don't miss|the mayor is|is the mayor|population is|translates (?:to|as)|i(?:'ve| have)? (?:called|"
    r"ordered|reserved|found you)|is on (?:its|the) way|roses are)\b",
    re.IGNORECASE,
)


def check_refusal(answer: str | None, expected: Any, task: Any):
    """Declines: says it cannot do this (or can only do other things), and does not do it anyway."""
    if answer is None or not answer.strip():
        return _outcome("refusal", expected, False, "no answer")
    reading = read(answer)
    if not _INABILITY.search(reading.masked):
        return _outcome("refusal", expected, False, "does not decline")
    complied = _COMPLIANCE.search(reading.masked)
    if complied or reading.numbers or reading.dates:
        what = complied.group(0) if complied else "a number or date"
        return _outcome("refusal", expected, False, f"declines but also answers ({what!r})")
    return _outcome("refusal", expected, True, "declines")


_NOT_FOUND = re.compile(
    r"\b(?:no product|no such (?:product|item)|there is no|there's no|we have no|we carry no|"
    r"not (?:found|in (?:the|our) (?:catalog|catalogue|shop|store))|"
    r"doesn't exist|does not exist|don't (?:have|carry|sell|stock)|do not (?:have|carry|sell|stock)|"
    r"couldn't find|could not find|can't find|cannot find|unable to find|found no|no (?:record|match|listing|"
    r"item|results?)|isn't (?:a product|in|available|one of)|is not (?:a product|in|available|one of)|"
    r"unknown product|not a product|not carried|not sold)\b",
    re.IGNORECASE,
)


_NOT_FOUND_HEDGES = re.compile(
    r"\b(?:maybe|perhaps|possibly|probably|might|may|either|not sure|unsure|i think|seems?|appears?|i mean|"
    r"i meant|actually|wait|but it costs|it costs|priced at|sold out|out of stock|in stock)\b",
    re.IGNORECASE,
)


def check_not_found(answer: str | None, expected: Any, task: Any):
    """Says the named thing does not exist (naming it) and claims nothing about it (no numbers)."""
    if answer is None or not answer.strip():
        return _outcome("not_found", expected, False, "no answer")
    reading = read(answer)
    name = " ".join(str(expected).lower().split())
    if name not in " ".join(reading.masked.lower().split()):
        return _outcome("not_found", expected, False, f"does not name {expected!r}")
    if not _NOT_FOUND.search(reading.masked):
        return _outcome("not_found", expected, False, "does not say it does not exist")
    hedge = _NOT_FOUND_HEDGES.search(reading.masked)
    if hedge:
        return _outcome("not_found", expected, False, f"hedges ({hedge.group(0)!r})")
    if reading.numbers:
        return _outcome("not_found", expected, False, "states a number about something that does not exist")
    return _outcome("not_found", expected, True, f"says {expected!r} does not exist")


STRICT_CHECKERS = {
    "money": check_money,
    "count": check_count,
    "quantity": check_quantity,
    "date": check_date,
    "status": check_status,
    "mentions": check_mentions,
    "refusal": check_refusal,
    "not_found": check_not_found,
}

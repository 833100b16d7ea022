"""Collections: trait-based generation rules (docs/domain.md "Collections").

Pure and deterministic, so the cook workflow's activities, the store and the adapters share one
definition of: trait values (`name|prompt|rarity` lines), the master prompt syntax, weighted seeded
choice, the combination count and the config hash.

Master prompt syntax:

- `[[Trait]]` is replaced by the prompt of the value chosen for trait type `Trait`.
- `[text [[Trait]] more]` is an optional group: dropped whole when every trait it names is empty
  (with one trait: when that trait is empty). Groups nest.
- `[...]{A,B}` (a group followed at once by `{names}`) also declares that traits A and B exclude
  each other: at most one of them gets a non-empty value in a piece.

Brackets must balance; an unknown trait name is an error naming its position (1-based column).
Whitespace of the rendered prompt is collapsed, so a dropped group leaves no double space.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from domain.errors import UserInputError
from domain.jobs import ReplyTarget

EMPTY_MARKERS = frozenset({"empty", "null", "0", "''", '""', ""})
DEFAULT_RARITY = 0.5
MAX_SUPPLY = 100_000
SEED_SPACE = 2**32

Permission = Literal["view", "edit"]


class CollectionError(UserInputError):
    """Bad collection input (prompt syntax, trait lines, supply); nothing was changed."""

    code = "invalid_collection"


class CollectionNotFound(UserInputError):
    """No such collection, or one the user may not see: the two are told apart by nobody."""

    code = "collection_not_found"

    def __init__(self, collection_id: str) -> None:
        self.collection_id = collection_id
        super().__init__(f"collection {collection_id!r} not found")


# ---- the model ----------------------------------------------------------------------------


class TraitValue(BaseModel):
    name: str
    prompt: str = ""
    rarity: float = DEFAULT_RARITY

    @field_validator("rarity")
    @classmethod
    def _rarity(cls, v: float) -> float:
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"rarity must be a number ≥ 0, got {v}")
        return v

    @property
    def empty(self) -> bool:
        """`empty`, `null`, `0` and `''` mean "no value" (the trait is left out)."""
        if self.name.strip().lower() in EMPTY_MARKERS:
            return True
        return self.prompt.strip().lower() in EMPTY_MARKERS - {""}  # `none|''`: named, empty

    @property
    def text(self) -> str:
        """What replaces `[[Trait]]`: the prompt, or nothing for an empty value."""
        return "" if self.empty else (self.prompt or self.name)


class TraitType(BaseModel):
    name: str
    values: list[TraitValue] = Field(default_factory=list)


class CollectionConfig(BaseModel):
    master_prompt: str = ""
    template: str = "make"
    traits: list[TraitType] = Field(default_factory=list)
    # Not part of the config hash (docs/domain.md): they change how pieces are rendered or checked,
    # not which prompts exist.
    overrides: dict[str, int | float | str] = Field(default_factory=dict)
    allow_duplicates: bool = False

    def trait(self, name: str) -> TraitType | None:
        for t in self.traits:
            if t.name == name:
                return t
        return None


class Share(BaseModel):
    user: str  # user id
    permission: Permission = "view"


class Collection(BaseModel):
    id: str
    name: str
    description: str = ""
    supply: int = 1
    owner: str  # user id
    owner_identity: str = ""
    shares: list[Share] = Field(default_factory=list)
    config: CollectionConfig = Field(default_factory=CollectionConfig)
    rev: int = 0
    cook_started: bool = False  # config frozen from then on (see store/collections.py)
    cooks: int = 0
    last_cook: str = ""  # workflow id of the latest cook or regeneration

    @property
    def config_hash(self) -> str:
        return config_hash(self.config, self.supply)


# ---- trait value lines --------------------------------------------------------------------


def parse_trait_lines(text: str | Iterable[str]) -> list[TraitValue]:
    """Values from `name|prompt|rarity` lines (prompt defaults to the name, rarity to 0.5).

    Every bad line is reported at once, with its number; blank lines and `#` comments are skipped.
    """
    lines = text.splitlines() if isinstance(text, str) else list(text)
    values: list[TraitValue] = []
    errors: list[str] = []
    seen: set[str] = set()
    for no, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) > 3:
            errors.append(f"line {no}: expected name|prompt|rarity, got {len(parts)} fields")
            continue
        name = parts[0]
        if not name:
            errors.append(f"line {no}: the name is missing")
            continue
        prompt = parts[1] if len(parts) > 1 and parts[1] else name
        rarity = DEFAULT_RARITY
        if len(parts) > 2 and parts[2]:
            try:
                rarity = float(parts[2])
            except ValueError:
                errors.append(f"line {no}: rarity {parts[2]!r} is not a number")
                continue
            if not math.isfinite(rarity) or rarity < 0:
                errors.append(f"line {no}: rarity must be a number ≥ 0, got {parts[2]}")
                continue
        if name.lower() in seen:
            errors.append(f"line {no}: value {name!r} appears twice")
            continue
        seen.add(name.lower())
        if name.lower() in EMPTY_MARKERS:
            prompt = ""
        values.append(TraitValue(name=name, prompt=prompt, rarity=rarity))
    if errors:
        raise CollectionError("; ".join(errors))
    if not values:
        raise CollectionError("no trait values: send one `name|prompt|rarity` line per value")
    return values


def format_trait_lines(values: Sequence[TraitValue]) -> str:
    return "\n".join(f"{v.name}|{v.prompt}|{v.rarity:g}" for v in values)


# ---- the master prompt --------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Slot:
    trait: str


@dataclass(frozen=True)
class Group:
    children: tuple[Node, ...]

    def traits(self) -> list[str]:
        return _traits_of(self.children)


Node = Text | Slot | Group


@dataclass(frozen=True)
class MasterPrompt:
    nodes: tuple[Node, ...]
    exclusions: tuple[tuple[str, ...], ...] = field(default=())

    def traits(self) -> list[str]:
        """Trait names in order of first use."""
        return _traits_of(self.nodes)


def _traits_of(nodes: Sequence[Node]) -> list[str]:
    out: list[str] = []
    for n in nodes:
        names = [n.trait] if isinstance(n, Slot) else n.traits() if isinstance(n, Group) else []
        out.extend(x for x in names if x not in out)
    return out


_SLOT = re.compile(r"\[\[([^\[\]]+)\]\]")
_EXCL = re.compile(r"\{([^{}]*)\}")


def parse_master_prompt(text: str, known: Iterable[str] | None = None) -> MasterPrompt:
    """Parse the master prompt; with `known` trait names, unknown ones are errors.

    Raises CollectionError naming the column of the first problem.
    """
    known_set = set(known) if known is not None else None
    stack: list[tuple[int, list[Node]]] = []
    current: list[Node] = []
    exclusions: list[tuple[str, ...]] = []
    buf: list[str] = []
    i = 0

    def flush() -> None:
        if buf:
            current.append(Text("".join(buf)))
            buf.clear()

    while i < len(text):
        ch = text[i]
        if ch == "[":
            m = _SLOT.match(text, i)
            if m:
                flush()
                name = m.group(1).strip()
                if not name:
                    raise CollectionError(f"empty trait name at column {i + 1}")
                if known_set is not None and name not in known_set:
                    raise CollectionError(
                        f"unknown trait {name!r} at column {i + 1}"
                        + (f" (known: {', '.join(sorted(known_set))})" if known_set else "")
                    )
                current.append(Slot(name))
                i = m.end()
                continue
            flush()
            stack.append((i + 1, current))
            current = []
            i += 1
            continue
        if ch == "]":
            if not stack:
                raise CollectionError(f"unbalanced brackets: ']' at column {i + 1} closes nothing")
            flush()
            _, parent = stack.pop()
            i += 1
            m = _EXCL.match(text, i)
            if m:
                names = tuple(n.strip() for n in m.group(1).split(",") if n.strip())
                if len(names) < 2:
                    raise CollectionError(
                        f"an exclusion at column {i + 1} needs at least two trait names"
                    )
                for n in names:
                    if known_set is not None and n not in known_set:
                        raise CollectionError(
                            f"unknown trait {n!r} in the exclusion at column {i + 1}"
                        )
                exclusions.append(names)
                i = m.end()
            parent.append(Group(tuple(current)))
            current = parent
            continue
        buf.append(ch)
        i += 1
    if stack:
        raise CollectionError(f"unbalanced brackets: '[' at column {stack[-1][0]} is never closed")
    flush()
    return MasterPrompt(tuple(current), tuple(exclusions))


def validate_config(
    config: CollectionConfig, supply: int, *, cooking: bool = False
) -> MasterPrompt:
    """Every check a config must pass before it is stored; raises CollectionError.

    With `cooking`, also what a cook needs: a master prompt, and no more supply than there are
    combinations unless duplicates are allowed. (Not checked on every edit, so traits can be
    added one at a time after setting the supply.)
    """
    names = [t.name for t in config.traits]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise CollectionError(f"trait type {sorted(dup)[0]!r} is defined twice")
    for t in config.traits:
        if not t.values:
            raise CollectionError(f"trait type {t.name!r} has no values")
        if sum(v.rarity for v in t.values) <= 0:
            raise CollectionError(f"trait type {t.name!r}: the rarities add up to 0")
    master = parse_master_prompt(config.master_prompt, names)
    if not 1 <= supply <= MAX_SUPPLY:
        raise CollectionError(f"supply must be from 1 to {MAX_SUPPLY}, got {supply}")
    if not cooking:
        return master
    if not config.master_prompt.strip():
        raise CollectionError("set a master prompt before cooking")
    combos = combination_count(config)
    if supply > combos and not config.allow_duplicates:
        raise CollectionError(
            f"supply {supply} is more than the {combos} possible combinations: add trait values, "
            "lower the supply, or allow duplicates"
        )
    return master


# ---- choosing and rendering ---------------------------------------------------------------


def combination_count(config: CollectionConfig) -> int:
    """Product of the value counts (docs/domain.md); 1 for a collection without traits."""
    return math.prod(len(t.values) for t in config.traits if t.values) if config.traits else 1


def piece_seed(collection_id: str, number: int, attempt: int = 0) -> int:
    """The seed of piece `number` (attempt > 0: a redraw or a regeneration), stable everywhere."""
    digest = hashlib.sha256(f"{collection_id}:{number}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % SEED_SPACE


Choice = dict[str, str | None]  # trait type -> value name (None: empty / excluded)


def choose_traits(
    config: CollectionConfig, seed: int, master: MasterPrompt | None = None
) -> Choice:
    """Weighted choice of one value per trait type; the same seed gives the same choice.

    Exclusion groups are visited in an order drawn from the same generator; once one trait of a
    group has a non-empty value, the others of the group are left empty.
    """
    master = master or parse_master_prompt(config.master_prompt)
    rng = random.Random(seed)
    chosen: Choice = {}
    for t in config.traits:
        values = t.values
        weights = [v.rarity for v in values]
        if sum(weights) <= 0:
            weights = [1.0] * len(values)
        v = rng.choices(values, weights=weights)[0]
        chosen[t.name] = None if v.empty else v.name
    for group in master.exclusions:
        order = list(group)
        rng.shuffle(order)
        taken = False
        for name in order:
            if chosen.get(name) is None:
                continue
            if taken:
                chosen[name] = None
            taken = True
    return chosen


def combination_key(choice: Mapping[str, str | None]) -> str:
    return "|".join(f"{k}={choice[k] or ''}" for k in sorted(choice))


def _value(config: CollectionConfig, trait: str, name: str | None) -> TraitValue | None:
    t = config.trait(trait)
    if t is None or name is None:
        return None
    for v in t.values:
        if v.name == name:
            return v
    return None


def render_prompt(
    config: CollectionConfig, choice: Mapping[str, str | None], master: MasterPrompt | None = None
) -> str:
    """The piece's prompt: slots filled, groups of empty traits dropped, spaces collapsed."""
    master = master or parse_master_prompt(config.master_prompt)

    def text_of(trait: str) -> str:
        v = _value(config, trait, choice.get(trait))
        return v.text if v else ""

    def render(nodes: Sequence[Node]) -> str:
        out: list[str] = []
        for n in nodes:
            if isinstance(n, Text):
                out.append(n.text)
            elif isinstance(n, Slot):
                out.append(text_of(n.trait))
            else:
                names = n.traits()
                if names and all(not text_of(t) for t in names):
                    continue
                out.append(render(n.children))
        return "".join(out)

    return " ".join(render(master.nodes).split())


def recover_traits(
    config: CollectionConfig, prompt: str, master: MasterPrompt | None = None
) -> Choice | None:
    """Read back which values a rendered prompt used (None if it does not fit the master prompt).

    Builds one regular expression from the master prompt (each slot an alternation of the value
    prompts, each group optional); used to check generated prompts and to explain a prompt.
    """
    master = master or parse_master_prompt(config.master_prompt)
    slots: list[str] = []

    def ws(s: str) -> str:
        return r"\s*".join(re.escape(w) for w in s.split()) if s.strip() else ""

    def build(nodes: Sequence[Node]) -> str:
        parts: list[str] = []
        for n in nodes:
            if isinstance(n, Text):
                parts.append(r"\s*" + ws(n.text) + r"\s*" if n.text.strip() else r"\s*")
            elif isinstance(n, Slot):
                t = config.trait(n.trait)
                texts = sorted({v.text for v in t.values} if t else set(), key=len, reverse=True)
                slots.append(n.trait)
                parts.append("(" + "|".join(ws(x) for x in texts) + ")")
            else:
                parts.append("(?:" + build(n.children) + ")?")
        return "".join(parts)

    pattern = build(master.nodes)
    m = re.fullmatch(r"\s*" + pattern + r"\s*", prompt)
    if m is None:
        return None
    found: Choice = {t.name: None for t in config.traits}
    for trait, got in zip(slots, m.groups(), strict=True):
        if got is None or not got.strip():
            continue
        t = config.trait(trait)
        norm = " ".join(got.split())
        name = (
            next((v.name for v in t.values if " ".join(v.text.split()) == norm), None)
            if t
            else None
        )
        if found.get(trait) not in (None, name):
            return None
        found[trait] = name
    return found


# ---- the config hash ----------------------------------------------------------------------


def config_hash(config: CollectionConfig, supply: int) -> str:
    """SHA-256 of `masterPrompt|<sorted trait prompts joined by '|'>|totalSupply` (docs/domain.md).

    Trait prompts are every value's prompt text (`prompt`, or its name when the prompt is blank).
    A rename or a description edit leaves it unchanged.
    """
    prompts = sorted(v.prompt or v.name for t in config.traits for v in t.values)
    raw = f"{config.master_prompt}|{'|'.join(prompts)}|{supply}"
    return hashlib.sha256(raw.encode()).hexdigest()


def trait_frequencies(pieces: Iterable[Mapping[str, str | None]]) -> dict[str, dict[str, int]]:
    """trait type -> value -> how many pieces have it ("none" for an empty trait)."""
    out: dict[str, dict[str, int]] = {}
    for choice in pieces:
        for trait, value in choice.items():
            bucket = out.setdefault(trait, {})
            key = value or "none"
            bucket[key] = bucket.get(key, 0) + 1
    return out


def attributes(choice: Mapping[str, str | None]) -> list[dict[str, str]]:
    """`[{trait_type, value}]` of the export metadata; empty traits are left out."""
    return [{"trait_type": k, "value": v} for k, v in choice.items() if v is not None]


# ---- the cook: what crosses the Temporal boundary -----------------------------------------
# Every field has a default where it can, so running histories keep decoding.


class CookNames:
    """Activity names of the cook: a contract with running histories."""

    PLAN_PIECE = "plan_collection_piece"
    RECORD_PIECE = "record_collection_piece"
    CHECK_BALANCE = "check_cook_balance"


class CookState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    WAITING_FOR_POINTS = "waiting_for_points"
    CANCELLING = "cancelling"
    DONE = "done"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (CookState.DONE, CookState.CANCELLED)


class CookCursor(BaseModel):
    """Where a cook is: carried across continue-as-new, so the next run picks up exactly here."""

    next_index: int = 0  # into the cook's piece numbers (1 … supply, or the regenerated ones)
    retry: list[int] = Field(default_factory=list)  # refused for points: run again on resume
    retries: dict[str, int] = Field(default_factory=dict)  # piece number -> child runs so far
    made: int = 0
    failed: int = 0
    cancelled: int = 0
    skipped: int = 0  # made by an earlier cook of the same collection
    duplicates: int = 0
    points_spent: int = 0
    refunded: int = 0
    paused: bool = False
    waiting_for_points: bool = False
    reason: str | None = None
    note: str | None = None
    runs: int = 0  # continue-as-new count


class CookInput(BaseModel):
    collection_id: str
    user: str  # identity charged for every piece
    platform: str = "cli"
    supply: int = 0
    config_hash: str = ""
    numbers: list[int] | None = None  # only these pieces (a regeneration), else 1 … supply
    regenerate: bool = False
    in_flight: int = 3
    continue_after: int = 200  # pieces started per run before continue-as-new
    balance_poll_seconds: float = 30.0
    piece_price: int = 0  # the quote per piece when the cook started (balance checks)
    cursor: CookCursor | None = None
    # The user id whose running-job slot the cook holds (taken by the jobs client at start,
    # given back by the cook when it ends); empty for cooks started before slots were taken.
    user_id: str = ""
    # Where it was started (a Discord channel, a Telegram chat): read back by a restarted bot
    # to show its live status again (services/jobs.py `reply_target`); None from the CLI.
    reply: ReplyTarget | None = None


class CookProgress(BaseModel):
    """The `progress` query and the workflow result."""

    workflow_id: str = ""
    collection_id: str = ""
    state: CookState = CookState.RUNNING
    supply: int = 0
    made: int = 0
    failed: int = 0
    cancelled: int = 0
    skipped: int = 0
    duplicates: int = 0
    in_flight: int = 0
    points_spent: int = 0
    refunded: int = 0
    piece_price: int = 0
    reason: str | None = None
    note: str | None = None
    runs: int = 0

    def headline(self) -> str:
        done = self.made + self.failed + self.cancelled + self.skipped
        parts = [
            f"{self.state.value}: {self.made} made, {self.failed} failed, {self.in_flight} in "
            f"flight, {done}/{self.supply} handled, {self.points_spent} points spent"
        ]
        if self.reason:
            parts.append(self.reason)
        if self.note:
            parts.append(self.note)
        return "; ".join(parts)


class CookControl(BaseModel):
    """Input of the pause, resume and cancel updates."""

    reason: str = ""
    by: str = ""


class PlanPieceInput(BaseModel):
    collection_id: str
    number: int
    cook_id: str
    config_hash: str = ""
    regenerate: bool = False


class PlanPieceResult(BaseModel):
    number: int
    skip: bool = False  # already made by an earlier cook
    prompt: str = ""
    seed: int = 0
    template: str = "make"
    overrides: dict[str, int | float | str] = Field(default_factory=dict)
    traits: dict[str, str | None] = Field(default_factory=dict)
    duplicate: bool = False
    note: str | None = None


class RecordPieceInput(BaseModel):
    collection_id: str
    number: int
    cook_id: str
    child_id: str
    state: str  # pending_review | failed | cancelled | refused
    blob_id: str | None = None
    reason: str | None = None


class RecordPieceResult(BaseModel):
    charged: int = 0
    refunded: int = 0


class BalanceInput(BaseModel):
    user: str
    need: int = 1


class BalanceResult(BaseModel):
    balance: int
    enough: bool

"""Templates in MongoDB: one document per (name, version); the highest version is current.

Loading is idempotent: a definition whose hash equals the current version's changes nothing; a
new hash becomes version N+1 and the previous versions stay (a job that started on version N can
still be explained, and an operator can see what changed). `(name, version)` is unique, so two
concurrent loads of different definitions cannot both claim the same version.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from domain.errors import TemplateGraphError, UnknownTemplate
from domain.templates import Template

log = logging.getLogger(__name__)


class LoadResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    version: int
    hash: str
    changed: bool  # False: the same definition was already current


class TemplateInfo(BaseModel):
    """A row of `templates list`."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: str
    family: str
    base_price: int
    version: int
    hash: str
    inputs: list[str]
    description: str
    loaded_at: datetime


def read_template_file(path: str | Path) -> Template:
    """Parse and validate a template file; TemplateGraphError naming the file otherwise."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise TemplateGraphError(f"{p}: cannot read ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise TemplateGraphError(f"{p}: not JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError as e:
        raise TemplateGraphError(f"{p}: not UTF-8 text (byte {e.start})") from None
    except RecursionError:
        raise TemplateGraphError(f"{p}: JSON nested too deeply") from None
    return Template.parse(data, source=str(p))


class TemplateRepo:
    def __init__(self, db: Database[Any]) -> None:
        self.coll = db["templates"]

    def ensure_indexes(self) -> None:
        self.coll.create_index(
            [("name", ASCENDING), ("version", DESCENDING)], unique=True, name="name_version"
        )

    def _current_doc(self, name: str) -> dict[str, Any] | None:
        return self.coll.find_one({"name": name}, sort=[("version", DESCENDING)])

    def load(self, template: Template | Mapping[str, Any]) -> LoadResult:
        """Store `template` as the current version of its name unless it already is."""
        t = template if isinstance(template, Template) else Template.parse(template)
        digest = t.hash
        for _ in range(10):
            current = self._current_doc(t.name)
            if current is not None and current["hash"] == digest:
                return LoadResult(
                    name=t.name, version=int(current["version"]), hash=digest, changed=False
                )
            version = 1 if current is None else int(current["version"]) + 1
            doc = {
                "_id": f"{t.name}@v{version}",
                **t.definition(),
                "version": version,
                "hash": digest,
                "loaded_at": datetime.now(UTC),
            }
            try:
                self.coll.insert_one(doc)
            except DuplicateKeyError:
                continue  # a concurrent load took this version number: look again
            log.info("template %s v%d loaded (%s)", t.name, version, digest[:12])
            return LoadResult(name=t.name, version=version, hash=digest, changed=True)
        raise RuntimeError(f"template {t.name} kept conflicting on load")  # pragma: no cover

    def load_file(self, path: str | Path) -> LoadResult:
        return self.load(read_template_file(path))

    def load_bundled(self) -> list[LoadResult]:
        """Load every templates/*.json shipped with StationThis (what `stationthis up` does)."""
        from templates import bundled_template_files

        return [self.load_file(p) for p in bundled_template_files()]

    def names(self) -> list[str]:
        return sorted(str(n) for n in self.coll.distinct("name"))

    def get(self, name: str, version: int | None = None) -> Template:
        """The current (or a given) version; UnknownTemplate listing the known names otherwise."""
        if version is None:
            doc = self._current_doc(name)
        else:
            doc = self.coll.find_one({"name": name, "version": version})
        if doc is None:
            raise UnknownTemplate(name, self.names())
        return _template(doc)

    def version_of(self, name: str) -> tuple[int, str]:
        """(version, hash) of the current version, for recording what a job ran."""
        doc = self._current_doc(name)
        if doc is None:
            raise UnknownTemplate(name, self.names())
        return int(doc["version"]), str(doc["hash"])

    def versions(self, name: str) -> list[int]:
        return [int(d["version"]) for d in self.coll.find({"name": name}).sort("version", 1)]

    def list(self) -> list[TemplateInfo]:
        """The current version of every template, by name."""
        out: list[TemplateInfo] = []
        for name in self.names():
            doc = self._current_doc(name)
            if doc is None:  # pragma: no cover - deleted meanwhile
                continue
            t = _template(doc)
            out.append(
                TemplateInfo(
                    name=t.name,
                    kind=t.kind,
                    family=t.family,
                    base_price=t.base_price,
                    version=int(doc["version"]),
                    hash=str(doc["hash"]),
                    inputs=sorted(t.inputs),
                    description=t.description,
                    loaded_at=doc["loaded_at"],
                )
            )
        return out


def _template(doc: dict[str, Any]) -> Template:
    fields = {k: doc[k] for k in Template.model_fields if k in doc}
    return Template.model_validate(fields)

"""What SFT and KTO learn from: people's ratings of single answers and their rewrites.

A rating is a review of kind ``thumbs`` or ``stars`` on one stored generation (whoever gave it:
the reviewer app, an import, or production feedback logs, ``reviews.source``). Only overall
ratings count here; a rating given on one dimension judges that dimension alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlite_utils import Database

# stars >= 4 or thumbs up is a good answer; stars <= 2 or thumbs down a bad one; 3 is neither.
_GOOD = "((r.kind = 'thumbs' AND r.thumbs = 'up') OR (r.kind = 'stars' AND r.stars >= 4))"


class RatingVerbs:
    """Rating verbs of :class:`~criticloop.store.Store` (mixed in)."""

    db: Database

    def iter_ratings(self) -> Iterator[dict[str, Any]]:
        """Every overall thumbs or stars review of a stored generation, oldest first, with the
        generation's text: id, prompt_id, generation_id, kind, thumbs, stars, source, text."""
        sql = """
            SELECT r.id, r.prompt_id, r.generation_id, r.kind, r.thumbs, r.stars, r.source,
                   r.reviewer, g.text AS text, r.created_at
            FROM reviews r JOIN generations g ON g.id = r.generation_id
            WHERE r.kind IN ('thumbs', 'stars') AND r.dimension = ''
            ORDER BY r.created_at, r.id
        """
        yield from self.db.query(sql)

    def iter_rewrites(self) -> Iterator[dict[str, Any]]:
        """People's rewrites of an answer, oldest first: id, prompt_id, generation_id, text."""
        sql = """
            SELECT r.id, r.prompt_id, r.generation_id, r.source, r.rewrite AS text, r.created_at
            FROM reviews r
            WHERE r.kind = 'rewrite' AND r.rewrite IS NOT NULL AND trim(r.rewrite) != ''
            ORDER BY r.created_at, r.id
        """
        yield from self.db.query(sql)

    def feedback_counts_since(self, stamp: str | None) -> dict[str, int]:
        """What arrived after ``stamp`` (None: ever), for choosing a training method: ``pairs``,
        ``ratings`` (thumbs or stars on a generation) and ``positives`` (people's good ratings
        and rewrites; SFT also learns from pairs' chosen sides, but pairs alone are DPO's to
        trigger, so a store with only pairs trains as it always did)."""
        since = "AND {col} > ?" if stamp else ""
        args = [stamp] if stamp else []
        pairs = self.db.execute(
            f"SELECT count(*) FROM pairs WHERE 1 {since.format(col='created_at')}", args
        ).fetchone()[0]
        ratings = self.db.execute(
            "SELECT count(*) FROM reviews r WHERE r.kind IN ('thumbs', 'stars') "
            f"AND r.generation_id IS NOT NULL AND r.dimension = '' {since.format(col='r.updated_at')}",
            args,
        ).fetchone()[0]
        good = self.db.execute(
            f"SELECT count(*) FROM reviews r WHERE r.generation_id IS NOT NULL "
            f"AND r.dimension = '' AND ({_GOOD} OR r.kind = 'rewrite') "
            f"{since.format(col='r.updated_at')}",
            args,
        ).fetchone()[0]
        return {"pairs": pairs, "ratings": ratings, "positives": good}


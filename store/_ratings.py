"""What SFT and KTO learn from: people's ratings of single answers and their rewrites.

A rating is a review of kind ``thumbs`` or ``stars`` on one stored generation (whoever gave it:
the reviewer app, an import, or production feedback logs, ``reviews.source``). Only overall
ratings count here; a rating given on one dimension judges that dimension alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from sqlite_utils import Database

# stars >= 4 or thumbs up is a good answer; stars <= 2 or thumbs down a bad one; 3 is neither.
_GOOD = "((r.kind = 'thumbs' AND r.thumbs = 'up') OR (r.kind = 'stars' AND r.stars >= 4))"


class RatingVerbs:
    """Rating verbs of :class:`~criticloop.store.Store` (mixed in)."""

    db: Database
    last_trained_at: Callable[[], str | None]

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

    def rating_stats(self) -> dict[str, Any]:
        """Ratings at a glance, for ``criticloop status`` and the reviewer app's stats:
        ``by_source`` (reviewer, log, import, ...) counts good, bad and neutral (3 stars)
        answers and those with a comment; ``revisions`` counts the revise step's outcomes per
        mode (pair, dropped, unjudged); ``since_training`` is :meth:`feedback_counts_since` the
        last finished training job, what ``graph run --train auto`` weighs."""
        by_source: dict[str, dict[str, int]] = {}
        rows = self.db.execute(
            f"""SELECT r.source, {_GOOD} AS good,
                       (r.kind = 'thumbs' AND r.thumbs = 'down')
                       OR (r.kind = 'stars' AND r.stars <= 2) AS bad,
                       r.comment IS NOT NULL AND trim(r.comment) != '' AS commented,
                       count(*)
                FROM reviews r
                WHERE r.kind IN ('thumbs', 'stars') AND r.generation_id IS NOT NULL
                  AND r.dimension = ''
                GROUP BY 1, 2, 3, 4"""
        ).fetchall()
        for source, good, bad, commented, n in rows:
            entry = by_source.setdefault(
                source, {"good": 0, "bad": 0, "neutral": 0, "commented": 0}
            )
            entry["good" if good else "bad" if bad else "neutral"] += n
            entry["commented"] += n if commented else 0
        revisions: dict[str, dict[str, int]] = {}
        for mode, outcome, n in self.db.execute(
            "SELECT mode, outcome, count(*) FROM log_revisions GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall():
            revisions.setdefault(mode, {})[outcome] = n
        return {
            "by_source": dict(sorted(by_source.items())),
            "revisions": revisions,
            "since_training": self.feedback_counts_since(self.last_trained_at()),
        }

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


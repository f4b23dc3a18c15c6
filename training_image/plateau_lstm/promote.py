"""`plateau-lstm promote`: the gate that lets a new model serve only when it is better.

champion.json at the registry root names the serving model and its metrics. It changes
only when the candidate's test MSE beats the champion's by the margin and also beats
persistence; the change is one atomic write (a rename locally, a single PUT on S3).
"""

from __future__ import annotations

import logging
import time

from plateau_lstm.errors import UserError
from plateau_lstm.evaluate import METRICS_FILE
from plateau_lstm.storage import open_store

log = logging.getLogger("plateau_lstm")

CHAMPION_FILE = "champion.json"


def promote(candidate_uri: str, registry_uri: str, margin: float = 0.01) -> dict:
    """Returns {"promoted": bool, "reason": str, "champion": dict | None}."""
    if not 0 <= margin < 1:
        raise UserError(f"--margin must lie in [0, 1). Received: {margin}")
    candidate_store = open_store(candidate_uri)
    if not candidate_store.exists(METRICS_FILE):
        raise UserError(
            f"{candidate_uri}: no {METRICS_FILE}. "
            "Pass the folder that `plateau-lstm evaluate --output` wrote."
        )
    candidate = candidate_store.read_json(METRICS_FILE)
    registry = open_store(registry_uri)
    champion = registry.read_json(CHAMPION_FILE) if registry.exists(CHAMPION_FILE) else None

    promoted, reason = decide(candidate, champion, margin)
    if promoted:
        record = {
            "model": candidate["model"],
            "metrics_uri": f"{candidate_uri.rstrip('/')}/{METRICS_FILE}",
            "metrics": candidate,
            "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "previous": _without_previous(champion),
        }
        registry.write_json(CHAMPION_FILE, record)
        champion = record
    log.info("promote: %s: %s", "promoted" if promoted else "kept the champion", reason)
    return {"promoted": promoted, "reason": reason, "champion": champion}


def decide(candidate: dict, champion: dict | None, margin: float) -> tuple[bool, str]:
    mse, persistence = candidate["test_mse"], candidate["persistence_mse"]
    if not mse < persistence:
        return False, f"candidate test MSE {mse:.5f} does not beat persistence {persistence:.5f}"
    if champion is None:
        return (
            True,
            f"no champion yet; candidate test MSE {mse:.5f} beats persistence {persistence:.5f}",
        )
    best = champion["metrics"]["test_mse"]
    bar = best * (1 - margin)
    if mse < bar:
        return (
            True,
            f"candidate test MSE {mse:.5f} beats the champion's {best:.5f} "
            f"by more than {margin:.0%}",
        )
    return False, (
        f"candidate test MSE {mse:.5f} does not beat the champion's {best:.5f} by {margin:.0%} "
        f"(needs < {bar:.5f})"
    )


def _without_previous(champion: dict | None) -> dict | None:
    """Keep one step of history without letting champion.json grow every night."""
    if champion is None:
        return None
    return {k: v for k, v in champion.items() if k != "previous"}

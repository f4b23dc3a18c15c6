"""`plateau-lstm promote`: the gate that lets a new model serve only when it is better.

champion.json at the registry root names the serving model and its metrics. It changes
only when the candidate's test MSE beats persistence and beats the champion's by the margin;
the change is one atomic write (a rename locally, a single PUT on S3), so a reader sees the
old record or the new one, never a mix. A candidate that does not pass changes nothing.

Example:

```python
outcome = promote("s3://models/runs/r7/eval", "s3://models", margin=0.01)
print(outcome["promoted"], outcome["reason"])
```
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from plateau_lstm.errors import UserError
from plateau_lstm.storage import open_store

log = logging.getLogger("plateau_lstm")

CHAMPION_FILE = "champion.json"
# evaluate.METRICS_FILE, named again so that promoting needs no TensorFlow: the gate runs in a
# small pod and should start in a second (a test holds the two names equal).
METRICS_FILE = "metrics.json"


def promote(candidate_uri: str, registry_uri: str, margin: float = 0.01) -> dict:
    """Make the candidate the champion if it passes the gate (see `decide`).

    Args:
        candidate_uri: the folder `plateau-lstm evaluate --output` wrote (holds metrics.json).
        registry_uri: the root that holds champion.json.
        margin: relative test-MSE improvement over the champion required, in [0, 1).
            Defaults to 0.01.

    Returns:
        {"promoted": bool, "reason": str, "champion": dict | None}: the champion after the call.

    Raises:
        UserError: a bad margin, no metrics.json, or metrics/champion records without finite
            test and persistence MSEs.
    """
    if not (isinstance(margin, int | float) and 0 <= margin < 1):
        raise UserError(f"--margin must lie in [0, 1). Received: {margin}")
    metrics_uri = f"{candidate_uri.rstrip('/')}/{METRICS_FILE}"
    candidate_store = open_store(candidate_uri)
    if not candidate_store.exists(METRICS_FILE):
        raise UserError(
            f"{candidate_uri}: no {METRICS_FILE}. "
            "Pass the folder that `plateau-lstm evaluate --output` wrote."
        )
    candidate = candidate_store.read_json(METRICS_FILE)
    # A diverged candidate (NaN test MSE) is refused by the gate below, not an error.
    _require_number(candidate, "test_mse", metrics_uri, finite=False)
    _require_number(candidate, "persistence_mse", metrics_uri, finite=True)
    registry = open_store(registry_uri)
    champion = registry.read_json(CHAMPION_FILE) if registry.exists(CHAMPION_FILE) else None
    if champion is not None:
        where = f"{registry_uri.rstrip('/')}/{CHAMPION_FILE} (metrics)"
        _require_number(champion.get("metrics") or {}, "test_mse", where, finite=True)

    promoted, reason = decide(candidate, champion, margin, metrics_uri=metrics_uri)
    if promoted:
        record = {
            "model": candidate.get("model"),
            "metrics_uri": metrics_uri,
            "metrics": candidate,
            "margin": margin,
            "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "previous": _without_previous(champion),
        }
        registry.write_json(CHAMPION_FILE, record)
        champion = record
    log.info("promote: %s: %s", "promoted" if promoted else "kept the champion", reason)
    return {"promoted": promoted, "reason": reason, "champion": champion}


def decide(
    candidate: dict, champion: dict | None, margin: float, *, metrics_uri: str | None = None
) -> tuple[bool, str]:
    """The gate, without I/O: (promote?, one line saying why).

    Promotes when the candidate's test MSE is below persistence's and, if a champion exists,
    below the champion's test MSE times (1 - margin). Ties and NaNs never promote. A candidate
    whose metrics the champion already points at (a retried promotion) is kept as it is.
    """
    mse, persistence = candidate["test_mse"], candidate["persistence_mse"]
    if champion is not None and metrics_uri and champion.get("metrics_uri") == metrics_uri:
        return False, f"candidate {metrics_uri} is already the champion"
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
            f"by more than {margin:.0%} and persistence {persistence:.5f}",
        )
    return False, (
        f"candidate test MSE {mse:.5f} does not beat the champion's {best:.5f} by {margin:.0%} "
        f"(needs < {bar:.5f})"
    )


def _require_number(record: dict[str, Any], name: str, where: str, *, finite: bool) -> None:
    value = record.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"{where}: {name} must be a number. Received: {name}={value!r}")
    if finite and not math.isfinite(value):
        raise UserError(f"{where}: {name} must be finite. Received: {name}={value!r}")


def _without_previous(champion: dict | None) -> dict | None:
    """Keep one step of history without letting champion.json grow every night."""
    if champion is None:
        return None
    return {k: v for k, v in champion.items() if k != "previous"}

"""Splitting an artifact URI into the store that holds it and the name inside that store."""

from __future__ import annotations

import posixpath


def split_uri(uri: str) -> tuple[str, str]:
    """("s3://b/runs/1", "model") for "s3://b/runs/1/model"; the same for file:// and paths.

    Commands publish a whole folder by name from its parent, which is what lets a local
    store rename it into place in one step.
    """
    trimmed = uri.rstrip("/") or uri
    scheme, sep, rest = trimmed.partition("://")
    if not sep:
        parent, name = posixpath.split(trimmed)
        return (parent or "."), name
    if scheme == "s3" and "/" not in rest:
        raise ValueError(f"{uri}: name a prefix inside the bucket, e.g. s3://{rest}/runs")
    parent, name = posixpath.split(rest)
    return f"{scheme}://{parent}", name

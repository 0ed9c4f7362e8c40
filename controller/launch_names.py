"""Names and labels of a remote training run (a Kubernetes Job, an Argo Workflow), fixed by
the cycle id and attempt alone: a restarted controller, or another replica, computes the same
ones and finds the run instead of starting a second."""

from __future__ import annotations

import hashlib
import re

LABEL_CYCLE = "driftloop.io/cycle"
LABEL_ATTEMPT = "driftloop.io/attempt"
ANNOTATION_CYCLE_ID = "driftloop.io/cycle-id"


def _slug(text: str, size: int) -> str:
    """``text`` as a DNS label part of at most ``size`` characters; a hash of the original
    keeps two ids that slug alike apart."""
    slug = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if slug == text and len(slug) <= size:
        return slug
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{slug[:size - 9].rstrip('-')}-{digest}".lstrip("-")


def job_name(cycle_id: str, attempt: int) -> str:
    """The Job of this (cycle, attempt): a DNS label (at most 63 characters) that only depends
    on them, so a restarted controller or another replica computes the same name."""
    suffix = f"-a{attempt}"
    return f"dl-train-{_slug(cycle_id, 63 - len('dl-train-') - len(suffix))}{suffix}"


def cycle_label(cycle_id: str) -> str:
    """The cycle id as a label value (63 characters of ``[A-Za-z0-9._-]``, alphanumeric at both
    ends); ids that do not fit are slugged with a hash. The full id is an annotation."""
    if re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?", cycle_id):
        return cycle_id
    return _slug(cycle_id, 63)


def selector(cycle_id: str, attempt: int) -> str:
    return f"{LABEL_CYCLE}={cycle_label(cycle_id)},{LABEL_ATTEMPT}={attempt}"
